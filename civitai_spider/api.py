"""Civitai images API: query building and page parsing. Plain functions, no Scrapy.

See ``docs/civitai-api.md`` for how the API behaves; in short: cursor pages,
``withMeta=true&flatMeta=true`` on every page, the end of a chain is a page
without ``metadata.nextCursor`` (an empty page is not the end), ``meta`` may be
null, nested or free-form, any stat may be missing, and a filter the API does
not honour is dropped silently (``ItemFilter`` tells its items apart).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

#: The API item fields copied onto the item as given (``meta`` is normalised).
API_FIELDS = (
    "id",
    "url",
    "hash",
    "width",
    "height",
    "nsfwLevel",
    "nsfw",
    "browsingLevel",
    "type",
    "createdAt",
    "postId",
    "username",
    "baseModel",
    "baseModelType",
    "modelVersionIds",
    "stats",
    "meta",
)

SORTS = ("Most Reactions", "Most Comments", "Most Collected", "Newest", "Oldest", "Random")
PERIODS = ("AllTime", "Year", "Month", "Week", "Day")
NSFW_VALUES = ("None", "Soft", "Mature", "X", "true", "false")
TYPES = ("image", "video", "audio")
BROWSING_LEVELS = {"PG": 1, "PG13": 2, "R": 4, "X": 8, "XXX": 16}
#: The browsing-level mask each ``nsfw`` value stands for (Civitai's
#: ``nsfwLevelMapDeprecated``; ``true`` is R + X + XXX + Blocked: it leaves out PG and PG-13).
NSFW_MASKS = {"None": 1, "Soft": 3, "Mature": 7, "X": 31, "true": 4 | 8 | 16 | 32, "false": 1}
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


#: The counters (short names, summed) each sort orders pages by, highest first. Civitai's
#: search index sorts "Most Reactions" by ``reactionCount``, the sum of the Like, Heart,
#: Laugh and Cry reactions (not dislikes), and "Most Comments" by ``commentCount``
#: (``image.service.ts``, ``images.search-index.ts``).
SORT_COUNTERS = {"Most Reactions": ("likes", "hearts", "laughs", "cries"), "Most Comments": ("comments",)}


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
    """The URL of one page: the query's parameters, ``limit``, ``withMeta`` and ``flatMeta``, the cursor.

    The cursor is opaque: it is sent back exactly as the API gave it, URL-encoded.
    """
    query: dict[str, str] = {"limit": str(limit), "withMeta": "true", "flatMeta": "true", **params}
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


def database_path(params: Mapping[str, str]) -> str | None:
    """Why Civitai answers this query from its old database path, or None if the search index does.

    There, "Most Reactions", "Most Comments" and "Most Collected" are silently
    newest-by-id (``image-search.service.ts``: a known limitation), so no early stop
    can rely on the order. A ``modelVersionId`` routes a ``modelId`` query to the index.
    """
    if "imageId" in params:
        return "an imageId query"
    if "modelId" in params and "modelVersionId" not in params:
        return "a modelId query without modelVersionId"
    return None


def has_prompt(meta: Mapping[str, Any] | None) -> bool:
    prompt = meta.get("prompt") if meta else None
    return isinstance(prompt, str) and bool(prompt.strip())


def as_count(value: Any) -> int:
    """A count (a reaction, a width...) as the API may send it: an int, a float, a string of a
    number; anything else (a bool, null, garbage), and anything negative, counts as 0. The
    spider's filter and the gallery read counts with this one function."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and value == value and abs(value) != float("inf"):  # not NaN, not infinite
        return max(int(value), 0)
    if isinstance(value, str):
        try:
            return as_count(float(value.strip()))
        except ValueError:
            return 0
    return 0


def reaction_counts(stats: Any) -> dict[str, int]:
    """Every reaction counter by short name; a missing or unreadable counter counts as 0."""
    stats = stats if isinstance(stats, dict) else {}
    return {short: as_count(stats.get(key)) for short, key in REACTIONS.items()}


def sort_value(stats: Any, sort: str) -> int:
    """The number ``sort`` orders by, read from an item's ``stats`` (see ``SORT_COUNTERS``)."""
    counts = reaction_counts(stats)
    return sum(counts[name] for name in SORT_COUNTERS[sort])


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


@dataclass(frozen=True)
class ItemFilter:
    """What a query asked for, checked on each item that carries the field.

    Civitai drops a parameter it does not support without a word and answers with
    the global feed (``imageId`` and ``modelId`` were ignored for weeks in 2026; a
    deleted user's query returned other people's images). An item contradicting
    its query is foreign: the spider does not store it. Fields checked:
    ``username`` (ignoring case), ``postId``, ``modelVersionIds`` (must hold the
    asked ``modelVersionId``), ``browsingLevel`` (a bit of the asked mask, from
    ``browsingLevel`` or ``nsfw``), ``type`` and ``baseModel`` (one of
    ``baseModels``). ``modelId`` cannot be checked: items do not carry it.
    """

    username: str | None = None
    post_id: int | None = None
    model_version_id: int | None = None
    mask: int | None = None
    mask_param: str = "browsingLevel"
    type: str | None = None
    base_models: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> ItemFilter:
        mask_param = "browsingLevel" if "browsingLevel" in params else "nsfw"
        mask = _as_int(params["browsingLevel"]) if "browsingLevel" in params else NSFW_MASKS.get(params.get("nsfw", ""))
        return cls(
            username=params["username"].casefold() if "username" in params else None,
            post_id=_as_int(params.get("postId")),
            model_version_id=_as_int(params.get("modelVersionId")),
            mask=mask,
            mask_param=mask_param,
            type=params.get("type"),
            base_models=frozenset(m.strip().casefold() for m in params.get("baseModels", "").split(",") if m.strip()),
        )

    @property
    def checked(self) -> tuple[str, ...]:
        """The query parameters this filter checks, by their API names."""
        names = {"username": self.username, "postId": self.post_id, "modelVersionId": self.model_version_id,
                 self.mask_param: self.mask, "type": self.type, "baseModels": self.base_models or None}
        return tuple(name for name, value in names.items() if value is not None)

    def mismatches(self, raw: Mapping[str, Any]) -> list[str]:
        """The query parameters (API names) that ``raw`` contradicts; a field the item lacks is not held against it."""
        found = []
        username = raw.get("username")
        if self.username is not None and isinstance(username, str) and username.casefold() != self.username:
            found.append("username")
        post_id = _as_int(raw.get("postId"))
        if self.post_id is not None and post_id is not None and post_id != self.post_id:
            found.append("postId")
        versions = raw.get("modelVersionIds")
        if self.model_version_id is not None and isinstance(versions, list) and self.model_version_id not in [
            _as_int(v) for v in versions
        ]:
            found.append("modelVersionId")
        level = _as_int(raw.get("browsingLevel"))
        if self.mask is not None and level and not level & self.mask:
            found.append(self.mask_param)
        kind = raw.get("type")
        if self.type is not None and isinstance(kind, str) and kind != self.type:
            found.append("type")
        base_model = raw.get("baseModel")
        if self.base_models and isinstance(base_model, str) and base_model.strip().casefold() not in self.base_models:
            found.append("baseModels")
        return found


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
