"""One stored image as an export sample: its row of columns, its caption, its bytes.

The row is the same in every format (Parquet columns, a WebDataset sample's
``.json``, an image folder's ``metadata.jsonl`` line): flat, one type per
column, ``meta`` as JSON text (its keys and types differ from image to image,
which no column store and no ``datasets`` schema can hold as a struct).
Everything comes from the image's record ``N.json``; an image stored before
records existed gets what its ``N_meta.json`` and the image itself tell
(reactions, user, date: null), and is counted. Whenever an image's bytes are read,
they are checked against its record's md5: a file cut or replaced since the crawl is
``image_changed``, not exported. Values are as the record has them: a counter missing
or not a number is null (never 0), an integer that does not fit 64 bits is null.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, UnidentifiedImageError

from civitai_spider.api import REACTIONS, as_count
from civitai_spider.arguments import Thresholds
from civitai_spider.export.resize import RESIZABLE, Resize, resize_image
from civitai_spider.export.source import VIDEO_EXTS, Entry, FileUnreadable, StoreSource
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


INT64 = range(-(2**63), 2**63)


def _int(value: Any) -> int | None:
    """An integer column's value: an int (or a string of one) that fits in 64 bits, else null."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value in INT64 else None


def _count(stats: Any, key: str) -> int | None:
    """A reaction column: the counter as the spider's filter reads it (``as_count``), null when absent."""
    value = stats.get(key) if isinstance(stats, dict) else None
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return None
    return as_count(value)


def _valid_text(row: dict[str, Any]) -> None:
    """Text that cannot be written as UTF-8 (a lone surrogate from a ``\\ud83d`` escape in the
    API's JSON) gets U+FFFD in its place, as any UTF-8 decoder shows it."""
    for name, value in row.items():
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                row[name] = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


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
    try:
        return _load_sample(source, entry, options)
    except FileUnreadable as exc:
        raise Skipped("file_unreadable", str(exc)) from None


def _load_sample(source: StoreSource, entry: Entry, options: SampleOptions) -> Sample:
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
    raw_meta = record.get("meta")
    meta = raw_meta if isinstance(raw_meta, dict) else None
    prompt = _text(meta.get("prompt")) if meta else None
    row: dict[str, Any] = {
        "id": entry.id,
        "file": name,
        "caption": caption_for(prompt, options.caption),
        "prompt": prompt,
        "negative_prompt": _text(meta.get("negativePrompt")) if meta else None,
        "meta": json.dumps(raw_meta, ensure_ascii=False) if raw_meta is not None else None,
        **{short: _count(stats, key) for short, key in REACTIONS.items()},
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
        elif row["md5"] and hashlib.md5(data).hexdigest() != row["md5"]:
            raise Skipped("image_changed", f"{name}: not the file that was stored (its md5 differs from its record's)")
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
    _valid_text(row)
    return sample


def _header_size(data: bytes) -> tuple[int | None, int | None]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # noqa: BLE001 - a size we cannot read is unknown
        return None, None
