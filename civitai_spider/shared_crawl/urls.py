"""The shared crawl's Redis URL, as logs show it (no Redis import here)."""

from __future__ import annotations

def redacted(url: str) -> str:
    """The URL without its password, for logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
