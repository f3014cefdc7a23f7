"""The shared crawl's Redis URL: where it comes from, and how it is shown (no Redis import here)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

REDIS_SCHEMES = ("redis", "rediss", "unix")


def redis_url(settings: BaseSettings) -> str:
    """``CIVITAI_REDIS_URL`` from the settings, else from the environment ('' when neither)."""
    return str(settings.get("CIVITAI_REDIS_URL") or os.environ.get("CIVITAI_REDIS_URL", "")).strip()


def redacted(url: str) -> str:
    """The URL without its password, for logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
