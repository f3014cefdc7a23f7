"""One stored image as an export sample: its row of columns, its caption, its bytes.

The row is the same in every format (Parquet columns, a WebDataset sample's
``.json``, an image folder's ``metadata.jsonl`` line): flat, one type per
column, ``meta`` as JSON text (its keys and types differ from image to image,
which no column store and no ``datasets`` schema can hold as a struct).
Everything comes from the image's record ``N.json``; an image stored before
records existed gets what its ``N_meta.json`` and the image itself tell
(reactions, user, date: null), and is counted.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, UnidentifiedImageError

from civitai_spider.api import REACTIONS, as_count, reaction_counts
from civitai_spider.arguments import Thresholds
from civitai_spider.export.resize import RESIZABLE, Resize, resize_image
from civitai_spider.export.source import VIDEO_EXTS, Entry, StoreSource
from civitai_spider.storage import layout
from civitai_spider.storage.metadata_files import caption as clean_caption

CAPTIONS = ("clean", "prompt", "none")

#: Every row's columns, in order, with their Arrow type names (``parquet`` builds its schema from these).
COLUMNS = {
    "id": "int64",
    "file": "string",
    "caption": "string",
    "prompt": "string",
    "negative_prompt": "string",
    "meta": "string",
    **{name: "int64" for name in REACTIONS},
    "width": "int64",
    "height": "int64",
    "format": "string",
    "base_model": "string",
    "username": "string",
    "created_at": "string",
    "browsing_level": "int64",
    "nsfw_level": "string",
    "post_id": "int64",
    "type": "string",
    "url": "string",
    "md5": "string",
    "bytes": "int64",
    "has_record": "bool",
}


@dataclass(frozen=True)
class SampleOptions:
    caption: str = "clean"  # clean: the prompt without <lora:...> tags; prompt: as given; none
    thresholds: Thresholds = field(default_factory=Thresholds)
    videos: bool = False  # include N.mp4 / N.webm
    with_bytes: bool = True  # read the image (webdataset, copies, embedded images)
    resize: Resize | None = None


@dataclass
class Sample:
    id: int
    name: str  # the file's name as exported (its extension is what it is)
    row: dict[str, Any]
    data: bytes | None = None  # the image's bytes (resized when asked), when with_bytes


class Skipped(Exception):
    """This image is not exported; ``reason`` counts it (``filtered/min_hearts``, ``video``, ``image_missing``...)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def caption_for(prompt: str | None, mode: str) -> str | None:
    if mode == "none" or prompt is None:
        return None
    return clean_caption(prompt) if mode == "clean" else prompt


def _read_record(source: StoreSource, entry: Entry) -> dict[str, Any] | None:
    if not entry.has_record:
        return None
    data = source.read(layout.record_file(str(entry.id)))
    if data is None:
        return None
    try:
        record = json.loads(data)
    except ValueError as exc:
        raise Skipped("record_unreadable", f"{layout.record_file(str(entry.id))}: {exc}") from None
    if not isinstance(record, dict):
        raise Skipped("record_unreadable", f"{layout.record_file(str(entry.id))}: not an object")
    return record


def _fallback_record(source: StoreSource, entry: Entry) -> dict[str, Any]:
    """What a store without ``N.json`` says of an image: its ``N_meta.json``, else its prompt files."""
    stem = str(entry.id)
    meta: Any = None
    data = source.read(layout.meta_file(stem))
    if data is not None:
        try:
            meta = json.loads(data)
        except ValueError:
            meta = None
    if not isinstance(meta, dict):
        prompt = source.read(layout.pos_prompt_file(stem))
        negative = source.read(layout.neg_prompt_file(stem))
        meta = {k: v.decode("utf-8", "replace") for k, v in (("prompt", prompt), ("negativePrompt", negative)) if v}
        meta = meta or None
    return {"id": entry.id, "meta": meta}


def load_sample(source: StoreSource, entry: Entry, options: SampleOptions) -> Sample:
    """The sample of one stored image, or ``Skipped`` (filtered, a video, its file gone...)."""
    record = _read_record(source, entry)
    has_record = record is not None
    if record is None:
        record = _fallback_record(source, entry)
    stored = record.get("stored") if isinstance(record.get("stored"), dict) else {}
    name = stored.get("file") if stored.get("file") in entry.files else entry.files[0]
    ext = name.rpartition(".")[2].lower()
    if ext in VIDEO_EXTS and not options.videos:
        raise Skipped("video")
    stats = record.get("stats")
    if options.thresholds.minimum or options.thresholds.maximum:
        if not isinstance(stats, dict):
            raise Skipped("filtered/reactions_unknown")  # no record: a threshold cannot be checked
        failed = options.thresholds.failures(stats)
        if failed:
            raise Skipped(f"filtered/{failed[0]}")
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else None
    prompt = _text(meta.get("prompt")) if meta else None
    counts = reaction_counts(stats) if isinstance(stats, dict) else None
    row: dict[str, Any] = {
        "id": entry.id,
        "file": name,
        "caption": caption_for(prompt, options.caption),
        "prompt": prompt,
        "negative_prompt": _text(meta.get("negativePrompt")) if meta else None,
        "meta": json.dumps(meta, ensure_ascii=False) if meta is not None else None,
        **{short: (counts[short] if counts is not None else None) for short in REACTIONS},
        "width": _int(stored.get("width")) or as_count(record.get("width")) or None,
        "height": _int(stored.get("height")) or as_count(record.get("height")) or None,
        "format": ext,
        "base_model": _text(record.get("baseModel")),
        "username": _text(record.get("username")),
        "created_at": _text(record.get("createdAt")),
        "browsing_level": _int(record.get("browsingLevel")),
        "nsfw_level": str(record["nsfwLevel"]) if record.get("nsfwLevel") is not None else None,
        "post_id": _int(record.get("postId")),
        "type": _text(record.get("type")),
        "url": _text(record.get("url")),
        "md5": _text(stored.get("md5")),
        "bytes": _int(stored.get("bytes")),
        "has_record": has_record,
    }
    sample = Sample(entry.id, name, row)
    if options.with_bytes or options.resize is not None or row["width"] is None:
        data = source.read(name)
        if data is None:
            raise Skipped("image_missing", name)
        if row["bytes"] is None:
            row["bytes"] = len(data)
        if options.resize is not None and ext in RESIZABLE:
            try:
                data, width, height = resize_image(data, ext, options.resize)
            except UnidentifiedImageError:
                raise Skipped("image_unreadable", f"{name}: not a picture Pillow can open (cut or damaged?)") from None
            except Exception as exc:  # noqa: BLE001 - whatever Pillow raises on a file it cannot read
                raise Skipped("image_unreadable", f"{name}: {exc.__class__.__name__}: {exc}") from None
            row["width"], row["height"] = width, height
        elif row["width"] is None and ext not in VIDEO_EXTS:
            row["width"], row["height"] = _header_size(data)
        sample.data = data if options.with_bytes or options.resize is not None else None
    return sample


def _header_size(data: bytes) -> tuple[int | None, int | None]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # noqa: BLE001 - a size we cannot read is unknown
        return None, None
