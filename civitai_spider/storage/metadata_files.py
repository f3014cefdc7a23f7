"""An image's metadata files, built from its ``meta``: plain functions, no Scrapy.

Used by the metadata pipeline, and by the store processes that build and write
these files for a local store (``civitai_spider.storage.worker``).
"""

from __future__ import annotations

import json
import re
from typing import Any

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


def metadata_files(stem: str, meta: Any, captions: bool) -> dict[str, tuple[bytes, str]]:
    """File name -> (bytes, content type) for one image's metadata."""
    files: dict[str, tuple[bytes, str]] = {}
    if not isinstance(meta, dict):
        return files
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
    stem: str, meta: Any, captions: bool, max_bytes: int
) -> tuple[dict[str, tuple[bytes, str]], int]:
    """``metadata_files`` and their total size; ``MetadataTooLarge`` over ``max_bytes``."""
    files = metadata_files(stem, meta, captions)
    size = sum(len(data) for data, _ in files.values())
    if size > max_bytes:
        raise MetadataTooLarge(size)
    return files, size
