"""Civitai images API: query building and page parsing. Plain functions, no Scrapy.

See ``shared/civitai-api.md`` for how the API behaves; in short: cursor pages,
``withMeta=true`` on every page, the end of a chain is a page without
``metadata.nextCursor`` (an empty page is not the end), ``meta`` may be null,
nested or free-form, and any stat may be missing.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

SORTS = ("Most Reactions", "Most Comments", "Most Collected", "Newest", "Oldest", "Random")
PERIODS = ("AllTime", "Year", "Month", "Week", "Day")
NSFW_VALUES = ("None", "Soft", "Mature", "X", "true", "false")
TYPES = ("image", "video", "audio")
BROWSING_LEVELS = {"PG": 1, "PG13": 2, "R": 4, "X": 8, "XXX": 16}
MAX_LIMIT = 200

#: Reaction counters of ``item["stats"]``, by the short name the spider arguments use.
REACTIONS = {
    "hearts": "heartCount",
    "likes": "likeCount",
    "laughs": "laughCount",
    "cries": "cryCount",
    "comments": "commentCount",
    "dislikes": "dislikeCount",
}


class PageError(ValueError):
    """An API answer that is not a page of images (not JSON, or not the expected shape)."""


class InvalidItem(ValueError):
    """An API item that cannot become an image item; ``reason`` is a short stat-friendly word."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_cursor: str | None


def page_url(api_url: str, params: Mapping[str, str], cursor: str | None, limit: int) -> str:
    """The URL of one page: the query's parameters, ``limit``, ``withMeta=true``, the cursor.

    The cursor is opaque: it is sent back exactly as the API gave it, URL-encoded.
    """
    query: dict[str, str] = {"limit": str(limit), "withMeta": "true", **params}
    if cursor is not None:
        query["cursor"] = cursor
    return f"{api_url}?{urlencode(query)}"


def parse_page(body: bytes) -> Page:
    """Parse one API answer into its raw items and the next cursor (None at the end)."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PageError(f"not JSON ({exc.__class__.__name__})") from None
    except RecursionError:
        raise PageError("JSON nested too deeply to parse") from None
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise PageError("JSON without an 'items' list")
    metadata = data.get("metadata")
    cursor = metadata.get("nextCursor") if isinstance(metadata, dict) else None
    if cursor is not None and not isinstance(cursor, str):
        cursor = str(cursor)  # old numeric cursors: still opaque, send back as text
    return Page(items=data["items"], next_cursor=cursor or None)


def normalise_meta(meta: Any) -> dict[str, Any] | None:
    """The flat generation-data dict, whether the API nested it as {"id":.., "meta":{..}} or not."""
    if not isinstance(meta, dict):
        return None
    inner = meta.get("meta")
    if "id" in meta and (isinstance(inner, dict) or inner is None) and "prompt" not in meta:
        return inner
    return meta


def has_prompt(meta: Mapping[str, Any] | None) -> bool:
    prompt = meta.get("prompt") if meta else None
    return isinstance(prompt, str) and bool(prompt.strip())


def _as_count(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value == value:  # not NaN
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value.strip()))
        except ValueError:
            return 0
    return 0


def reaction_counts(stats: Any) -> dict[str, int]:
    """Every reaction counter by short name; a missing or unreadable counter counts as 0."""
    stats = stats if isinstance(stats, dict) else {}
    return {short: _as_count(stats.get(key)) for short, key in REACTIONS.items()}


def image_id(raw: Mapping[str, Any]) -> int:
    """The item's numeric id: a positive int (or a string of digits). Anything else is invalid."""
    value = raw.get("id")
    if isinstance(value, bool):
        raise InvalidItem("bad_id", repr(value))
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or value <= 0:
        raise InvalidItem("bad_id" if "id" in raw else "missing_id", repr(value)[:80])
    return value


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """Whether an image may be fetched from ``host``.

    ``allowed`` lists host names; each also allows its subdomains ("civitai.com"
    allows "image.civitai.com"). An empty list allows any host, except IP literals
    in private, loopback, link-local or reserved ranges, which are only allowed
    when listed as they are.
    """
    host = host.lower().rstrip(".")
    if any(host == name or host.endswith("." + name) for name in allowed):
        return True
    if allowed:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host != "localhost"
    return address.is_global


def image_url(raw: Mapping[str, Any], allowed_hosts: Sequence[str] = ()) -> str:
    """The item's image URL: absolute http(s) on an allowed host; never ``file:``, ``data:`` or the like."""
    url = raw.get("url")
    if not isinstance(url, str) or not url:
        raise InvalidItem("bad_url", repr(url)[:80])
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise InvalidItem("bad_url", url[:80]) from None
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidItem("bad_url", url[:80])
    if not host_allowed(host, allowed_hosts):
        raise InvalidItem("url_host_not_allowed", url[:80])
    return url


def nesting_depth(value: Any, limit: int) -> int:
    """How deeply dicts and lists nest in ``value``, counted up to ``limit + 1`` (no recursion)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return deepest
