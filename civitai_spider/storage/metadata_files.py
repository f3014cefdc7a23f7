"""An image's metadata files, built from its ``meta``: plain functions, no Scrapy.

Used by the metadata pipeline, and by the store processes that build and write
these files for a local store (``civitai_spider.storage.worker``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from civitai_spider.api import API_FIELDS
from civitai_spider.storage import layout


class MetadataTooLarge(ValueError):
    """Metadata files over ``CIVITAI_META_MAX_BYTES``: none of them is written."""

    def __init__(self, size: int) -> None:
        super().__init__(f"{size} bytes")
        self.size = size


TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
EXTRA_NETWORK_TAG = re.compile(r"<\s*(?:lora|lyco|hypernet|embedding)\s*:[^>]*>", re.IGNORECASE)


def caption(prompt: str) -> str:
    """The prompt without ``<lora:name:weight>``-style tags, with the separators they leave tidied."""
    text = EXTRA_NETWORK_TAG.sub("", prompt)
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r"\s*,(\s*,)+", ",", text)
    text = re.sub(r" *\n *", "\n", text)
    return text.strip().strip(",").strip()


def image_record(fields: Mapping[str, Any], stored: Mapping[str, Any], stored_at: str) -> dict[str, Any]:
    """An image's record (``N.json``): every API field as the API gave it (``meta`` flat),
    those this version does not know (``extra``) too, the chain that found it
    (``query``), and what was stored (``stored``: the file, its format, kept byte for
    byte or converted from what, md5, bytes, pixel size, when)."""
    record = {name: fields[name] for name in API_FIELDS if name in fields}
    extra = fields.get("extra")
    if isinstance(extra, Mapping):
        record.update((k, v) for k, v in extra.items() if k not in record)
    if fields.get("query") is not None:
        record["query"] = fields["query"]
    record["stored"] = {
        "file": stored.get("path"),
        "format": stored.get("format"),
        "kept": stored.get("kept"),
        "source_format": stored.get("source_format"),
        "md5": stored.get("checksum"),
        "bytes": stored.get("size"),
        "width": stored.get("width"),
        "height": stored.get("height"),
        "at": stored_at,
    }
    return record


def metadata_files(
    stem: str, meta: Any, captions: bool, record: dict[str, Any] | None = None
) -> dict[str, tuple[bytes, str]]:
    """File name -> (bytes, content type) for one image's metadata, in the order they are
    written: the record (``N.json``, when given) last, so that it is there only once the
    image and every other file of it are."""
    files: dict[str, tuple[bytes, str]] = {}
    if isinstance(meta, dict):
        files.update(_meta_files(stem, meta, captions))
    if record is not None:
        files[layout.record_file(stem)] = (json.dumps(record, ensure_ascii=False, indent=2).encode("utf-8"), JSON)
    return files


def _meta_files(stem: str, meta: dict[str, Any], captions: bool) -> dict[str, tuple[bytes, str]]:
    files: dict[str, tuple[bytes, str]] = {}
    prompt = meta.get("prompt")
    negative = meta.get("negativePrompt")
    if isinstance(prompt, str) and prompt:
        files[layout.pos_prompt_file(stem)] = (prompt.encode("utf-8"), TEXT)
        if captions:
            files[layout.caption_file(stem)] = (caption(prompt).encode("utf-8"), TEXT)
    if isinstance(negative, str) and negative:
        files[layout.neg_prompt_file(stem)] = (negative.encode("utf-8"), TEXT)
    files[layout.meta_file(stem)] = (json.dumps(meta, ensure_ascii=False, indent=2).encode("utf-8"), JSON)
    return files


def sized_metadata_files(
    stem: str, meta: Any, captions: bool, max_bytes: int, record: dict[str, Any] | None = None
) -> tuple[dict[str, tuple[bytes, str]], int]:
    """``metadata_files`` and their total size; ``MetadataTooLarge`` over ``max_bytes``."""
    files = metadata_files(stem, meta, captions, record)
    size = sum(len(data) for data, _ in files.values())
    if size > max_bytes:
        raise MetadataTooLarge(size)
    return files, size
