"""A local stand-in for Civitai's ``/api/v1/images`` API and its image CDN.

Used by the tests (real Scrapy crawls against it) and for an offline demo. It
behaves as ``docs/civitai-api.md`` describes the real API: opaque cursor
pages (``feed:<ts>:<offset>|<filter checksum>``), 400 when the filters change
in the middle of a chain, ``meta`` null unless ``withMeta=true``, ``url``
always ``.jpeg`` whatever the bytes, and scripted faults (errors, HTML pages,
dropped or truncated connections, stalls, empty pages, looping cursors).

As Civitai in late 2026: the maturity filter is ``browsingLevel``, else the
mask of ``nsfw``, else PG only; a request whose Host is ``civitai.com`` (the
SFW site) filters on the combined level (the higher of an image's own and its
``_aiNsfwLevel``), any other host on the image's own level; ``nextPage`` is
built from the Host header. A query with ``imageId``, or ``modelId`` without
``modelVersionId``, takes the old database path: newest id first whatever the
sort, and ``meta`` nested as ``{"id", "meta"}`` unless ``flatMeta=true``. The
search index path sorts "Most Reactions" by likes + hearts + laughs + cries and
"Most Comments" by comments, highest first, "Newest" and "Oldest" by ``createdAt``
(stable: ties keep the scenario's order); "Random", and every sort with
``unsorted``, serve the scenario's order. ``ignore_params`` makes the API
drop those parameters silently (the global feed comes back). An image's
``_cdn`` host puts its file on that host name (``image-b2.*`` with the b2 path),
for crawls that map Civitai's names to 127.0.0.1; ``cdn_on_api`` serves the files
from the API's own listener (one origin for both, as a proxy or a mirror has).

Run it (from the repository root)::

    python -m tests.mockserver [--api-port N] [--cdn-port M] [--demo [COUNT]]

It prints ``MOCKSERVER api=http://127.0.0.1:P1 cdn=http://127.0.0.1:P2`` once
both listen, then serves until killed. ``--demo`` loads COUNT (default 300)
generated pictures. Tests use :class:`MockServer`, which runs it as a
subprocess; ``load()`` posts a scenario (see :meth:`MockState.load`) and
``requests()`` reads the request log.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

SORTS = ("Most Reactions", "Most Comments", "Most Collected", "Newest", "Oldest", "Random")
PERIODS = ("AllTime", "Year", "Month", "Week", "Day")
NSFW_VALUES = ("None", "Soft", "Mature", "X", "true", "false")
TYPES = ("image", "video", "audio")
CDN_KEY = "xG1nkqKTMzGDvpLrqFT7WA"
CDN_PATH = re.compile(rf"^/(?:{CDN_KEY}|file/civitai-media-cache)/([^/]+)/original=true/.+$")
CURSOR = re.compile(r"^feed:(\d+):(\d+)\|([0-9a-f]{4}\+[0-9a-f]{4})$")
CURSOR_TS = 1744925337225
NOT_FILTERS = ("limit", "cursor", "withMeta", "flatMeta", "page")  # params left out of a cursor's checksum
# The mask each nsfw value stands for (true: R + X + XXX + Blocked, no PG or PG-13).
NSFW_MASKS = {"None": 1, "Soft": 3, "Mature": 7, "X": 31, "true": 60, "false": 1}
UUID_NAMESPACE = uuid.UUID("6c1a3c9e-0f6b-4d4e-9a57-0b7a1f3c2d10")
API_KEYS = ("id", "url", "hash", "width", "height", "nsfwLevel", "nsfw", "browsingLevel", "type",
            "createdAt", "postId", "username", "baseModel", "modelVersionIds", "stats", "meta")
FAULT_ACTIONS = {"api": {"status", "html", "drop", "stall", "truncate", "empty", "loop"},
                 "cdn": {"status", "html", "drop", "stall", "truncate"}}
FAULT_MATCH_KEYS = {"api": {"page", "cursor", "param", "authorization"}, "cdn": {"image_id"}}
STATUS_BODIES = {
    400: {"error": "Invalid request"},
    429: {"error": "Too Many Requests"},
    500: {"error": "canceling statement due to statement timeout", "code": "57014"},
    503: {"error": "Server busy"},
}
CLOUDFLARE_PAGE = """<!DOCTYPE html>
<!--[if lt IE 7]> <html class="no-js ie6 oldie" lang="en-US"> <![endif]-->
<html class="no-js" lang="en-US">
<head><title>civitai.com | 524: A timeout occurred</title>
<meta charset="UTF-8" /><meta name="robots" content="noindex, nofollow" /></head>
<body><div id="cf-wrapper"><div id="cf-error-details" class="cf-error-details-wrapper">
<h1><span class="cf-error-type">Error</span> <span class="cf-error-code">524</span></h1>
<h2 class="cf-subheadline">A timeout occurred</h2>
<p>The origin web server timed out responding to this request.</p>
<span class="cf-footer-item">Cloudflare Ray ID: <strong>8f1e2d3c4b5a6978</strong></span>
</div></div></body></html>
"""


# What the search index orders each engagement sort by (Civitai's reactionCount, commentCount).
SORT_KEYS = {"Most Reactions": ("likeCount", "heartCount", "laughCount", "cryCount"), "Most Comments": ("commentCount",)}


def sort_value(item: Any, keys: tuple[str, ...]) -> int:
    """An item's sort key: the sum of ``keys`` in its stats; anything unreadable counts as 0."""
    stats = item.get("stats") if isinstance(item, dict) else None
    if not isinstance(stats, dict):
        return 0
    total = 0
    for key in keys:
        value = stats.get(key)
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
            total += int(value)
    return total


def posted_at(image: Image) -> str:
    """What "Newest" orders by: ``createdAt`` (ISO text sorts as time); garbage sorts last."""
    item = image.public
    created = item.get("createdAt") if isinstance(item, dict) else None
    return created if isinstance(created, str) else ""


class ScenarioError(ValueError):
    """A scenario that cannot be loaded; the control endpoint answers 400 with its text."""


class BadRequest(ValueError):
    """An API request the real API would refuse with a 400 JSON body."""


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(obj: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(obj).encode())


def image_uuid(image_id: Any) -> str:
    """The CDN uuid of an image: a uuid5 of its id, so the same for every run."""
    return str(uuid.uuid5(UUID_NAMESPACE, f"civitai-image:{image_id}"))


def filter_checksum(query: dict[str, str]) -> str:
    """The part of a cursor that ties it to its filters: ``xxxx+xxxx``.

    The ``+`` (like ``:`` and ``|``) must be URL-encoded: sent raw it arrives as a
    space and the cursor is refused.
    """
    pairs = sorted((k, v) for k, v in query.items() if k not in NOT_FILTERS)
    digest = hashlib.sha1(json.dumps(pairs).encode()).hexdigest()
    return f"{digest[:4]}+{digest[4:8]}"


def make_cursor(offset: int, checksum: str) -> str:
    return f"feed:{CURSOR_TS}:{offset}|{checksum}"


def _nsfw_level(level: Any) -> str:
    if not isinstance(level, int) or level <= 1:
        return "None"
    return "Soft" if level < 4 else "Mature" if level < 8 else "X"


def with_defaults(raw: dict[str, Any], index: int) -> dict[str, Any]:
    """The public part of a scenario image, with the keys the real API always sends filled in.

    ``url`` is left out unless given (it is built per response); ``stats`` and
    ``meta`` are kept exactly as given, missing included.
    """
    image_id = raw.get("id", index + 1)
    level = raw.get("browsingLevel", 1)
    seed = hashlib.sha256(f"{image_id}".encode()).digest()
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"
    created = datetime(2024, 4, 4, 21, 24, 7, 499000, tzinfo=UTC) - timedelta(minutes=index)
    defaults: dict[str, Any] = {
        "id": image_id,
        "hash": "U" + "".join(alphabet[b % len(alphabet)] for b in seed[:35]),
        "width": 832,
        "height": 1216,
        "nsfwLevel": _nsfw_level(level),
        "nsfw": _nsfw_level(level) != "None",
        "browsingLevel": level,
        "type": "image",
        "createdAt": created.strftime("%Y-%m-%dT%H:%M:%S.") + f"{created.microsecond // 1000:03d}Z",
        "postId": 1_000_000 + index,
        "username": "mockuser",
        "baseModel": "SDXL 1.0",
        "modelVersionIds": [],
    }
    public = {k: v for k, v in raw.items() if not k.startswith("_")}
    out = {k: public[k] if k in public else defaults[k] for k in API_KEYS if k in public or k in defaults}
    out.update(public)
    return out


@dataclass
class Image:
    """One scenario entry: the public item (or any non-object the test put there) and its private keys."""

    public: Any
    file: bytes | None = None
    model_ids: list[int] = field(default_factory=list)
    uuid: str | None = None
    ai_level: int = 0  # Civitai's AI rating: the .com site filters on the higher of the two
    cdn_host: str | None = None  # the image's file is on this host name (default: the CDN's 127.0.0.1)


@dataclass
class Fault:
    server: str
    match: dict[str, Any]
    action: str
    times: int
    extra: dict[str, Any]


@dataclass
class ApiQuery:
    query: dict[str, str]          # single values, last wins
    pairs: list[tuple[str, str]]   # in order of first appearance
    limit: int
    offset: int
    checksum: str
    with_meta: bool
    host: str = ""  # the Host header: which site was asked


class MockState:
    """Everything the running server knows: the scenario, fault counters and the request log."""

    def __init__(self, api_root: str = "", cdn_root: str = "") -> None:
        self.api_root = api_root
        self.cdn_root = cdn_root
        self.images: list[Image] = []
        self.by_uuid: dict[str, Image] = {}
        self.faults: list[Fault] = []
        self.nested_meta = False
        self.ignore_params: set[str] = set()
        self.unsorted = False
        self.cdn_on_api = False
        self.max_limit = 200
        self.log: list[dict[str, Any]] = []

    # -- scenario ---------------------------------------------------------

    def load(self, scenario: Any, files: dict[str, bytes] | None = None) -> None:
        """Replace the whole state with ``scenario``; clears the request log and fault counters.

        Keys: ``images`` (API items, plus private ``_file``, ``_modelIds`` and ``_raw``:
        true to serve the item exactly as given, without filling in missing keys),
        ``files`` (name -> base64 bytes; ``files`` given as an argument are raw
        bytes and win), ``faults``, ``nested_meta`` (bool: meta always nested, an
        older shape), ``ignore_params`` (parameters the API drops silently),
        ``unsorted`` (bool: the search index serves the scenario's order whatever the sort),
        ``cdn_on_api`` (bool: image URLs on the API's listener, which serves them too),
        ``max_limit`` (int). Private image keys also: ``_aiNsfwLevel`` (int),
        ``_cdn`` (a host name for the image URL).
        """
        if not isinstance(scenario, dict):
            raise ScenarioError("scenario must be a JSON object")
        unknown = set(scenario) - {"images", "files", "faults", "nested_meta", "ignore_params", "unsorted",
                                   "cdn_on_api", "max_limit"}
        if unknown:
            raise ScenarioError(f"unknown scenario keys: {sorted(unknown)}")
        blobs: dict[str, bytes] = {}
        for name, data in (scenario.get("files") or {}).items():
            try:
                blobs[name] = base64.b64decode(data, validate=True)
            except (ValueError, TypeError) as exc:
                raise ScenarioError(f"files[{name!r}] is not base64: {exc}") from None
        blobs.update(files or {})
        images: list[Image] = []
        for index, raw in enumerate(scenario.get("images") or []):
            if not isinstance(raw, dict):
                images.append(Image(raw))
                continue
            name = raw.get("_file")
            if name is not None and name not in blobs:
                raise ScenarioError(f"images[{index}]._file {name!r} is not in files")
            # "_raw": serve the item exactly as given (no defaults, e.g. no id at all).
            public = {k: v for k, v in raw.items() if not k.startswith("_")} if raw.get("_raw") else with_defaults(raw, index)
            images.append(Image(public, blobs.get(name) if name is not None else None,
                                list(raw.get("_modelIds") or []), image_uuid(public.get("id", f"index-{index}")),
                                int(raw.get("_aiNsfwLevel") or 0), raw.get("_cdn")))
        faults = [self._fault(i, f) for i, f in enumerate(scenario.get("faults") or [])]
        max_limit = scenario.get("max_limit", 200)
        if not isinstance(max_limit, int) or max_limit < 0:
            raise ScenarioError("max_limit must be a non-negative int")
        self.images = images
        self.by_uuid = {}
        for image in images:
            if image.uuid is not None:
                self.by_uuid.setdefault(image.uuid, image)
        self.faults = faults
        self.nested_meta = bool(scenario.get("nested_meta", False))
        ignore = scenario.get("ignore_params") or []
        if not isinstance(ignore, list) or not all(isinstance(name, str) for name in ignore):
            raise ScenarioError("ignore_params must be a list of parameter names")
        self.ignore_params = set(ignore)
        self.unsorted = bool(scenario.get("unsorted", False))
        self.cdn_on_api = bool(scenario.get("cdn_on_api", False))
        self.max_limit = max_limit
        self.log = []

    @staticmethod
    def _fault(index: int, raw: Any) -> Fault:
        where = f"faults[{index}]"
        if not isinstance(raw, dict):
            raise ScenarioError(f"{where} must be an object")
        server, action = raw.get("server"), raw.get("action")
        if server not in FAULT_ACTIONS:
            raise ScenarioError(f"{where}.server must be 'api' or 'cdn'")
        if action not in FAULT_ACTIONS[server]:
            raise ScenarioError(f"{where}.action must be one of {sorted(FAULT_ACTIONS[server])}")
        match = raw.get("match") or {}
        if not isinstance(match, dict) or set(match) - FAULT_MATCH_KEYS[server]:
            raise ScenarioError(f"{where}.match keys must be among {sorted(FAULT_MATCH_KEYS[server])}")
        times = raw.get("times", 1)
        if not isinstance(times, int):
            raise ScenarioError(f"{where}.times must be an int")
        if action == "status" and not isinstance(raw.get("status"), int):
            raise ScenarioError(f"{where}: action 'status' needs an int 'status'")
        extra = {k: v for k, v in raw.items() if k not in ("server", "match", "action", "times")}
        return Fault(server, match, action, times, extra)

    def take_fault(self, server: str, context: dict[str, Any]) -> Fault | None:
        """The first fault of ``server`` matching ``context`` that has times left; uses one up."""
        for fault in self.faults:
            if fault.server != server or fault.times == 0:
                continue
            if all(self._matches(key, want, context) for key, want in fault.match.items()):
                if fault.times > 0:
                    fault.times -= 1
                return fault
        return None

    @staticmethod
    def _matches(key: str, want: Any, context: dict[str, Any]) -> bool:
        if key == "param":
            query = context.get("query", {})
            return all(query.get(k) == (None if v is None else str(v)) for k, v in want.items())
        return bool(context.get(key) == want)

    # -- request log ------------------------------------------------------

    def record(self, server: str, request: Request) -> dict[str, Any]:
        uri = request.uri.decode("utf-8", "replace")
        raw_query = uri.split("?", 1)[1] if "?" in uri else ""
        entry = {
            "server": server,
            "method": request.method.decode("ascii", "replace"),
            "path": request.path.decode("utf-8", "replace"),
            "query": dict(parse_qsl(raw_query, keep_blank_values=True)),
            "raw_query": raw_query,
            "headers": {name.decode("latin-1").lower(): ", ".join(v.decode("latin-1") for v in values)
                        for name, values in request.requestHeaders.getAllRawHeaders()},
            "time": time.time(),
            "status": 0,
            "fault": None,
        }
        self.log.append(entry)
        return entry

    # -- API ----------------------------------------------------------------

    def parse_api_query(self, raw_query: str, host: str = "") -> ApiQuery:
        """Validate the query of ``/api/v1/images``; raises :class:`BadRequest` (400) or returns it."""
        pairs: dict[str, str] = {}
        for key, value in parse_qsl(raw_query, keep_blank_values=True):
            pairs[key] = value
        query = dict(pairs)
        try:
            limit = int(query.get("limit", "100"))
        except ValueError:
            raise BadRequest(f"limit: expected an integer 0..{self.max_limit}") from None
        if not 0 <= limit <= self.max_limit:
            raise BadRequest(f"limit: must be between 0 and {self.max_limit}")
        for name, allowed in (("sort", SORTS), ("period", PERIODS), ("nsfw", NSFW_VALUES), ("type", TYPES)):
            if name in query and query[name] not in allowed:
                raise BadRequest(f"{name}: invalid value {query[name]!r}, expected one of {list(allowed)}")
        for name in ("browsingLevel", "modelId", "modelVersionId", "postId", "imageId", "page"):
            if name in query:
                try:
                    int(query[name])
                except ValueError:
                    raise BadRequest(f"{name}: expected an integer") from None
        checksum = filter_checksum(query)
        offset = 0
        cursor = query.get("cursor", "")
        if cursor:
            found = CURSOR.match(cursor)
            if not found:
                raise BadRequest("cursor: invalid cursor")
            if found.group(3) != checksum:
                raise BadRequest("This cursor cannot be continued with these filters")
            offset = int(found.group(2))
        return ApiQuery(query, list(pairs.items()), limit, offset, checksum,
                        query.get("withMeta", "").lower() == "true", host)

    @staticmethod
    def database_path(query: dict[str, str]) -> bool:
        """Civitai's old database path: ``imageId``, or ``modelId`` without ``modelVersionId``."""
        return "imageId" in query or ("modelId" in query and "modelVersionId" not in query)

    def filtered(self, query: dict[str, str], host: str = "") -> list[Image]:
        query = {k: v for k, v in query.items() if k not in self.ignore_params}
        images = self.images

        def keep(test: Callable[[dict[str, Any], Image], bool]) -> None:
            nonlocal images
            # Non-objects (garbage a broken API might send) are served whatever the filters.
            images = [im for im in images if not isinstance(im.public, dict) or test(im.public, im)]

        if "modelId" in query:
            keep(lambda item, im: int(query["modelId"]) in im.model_ids)
        if "imageId" in query:
            keep(lambda item, im: item.get("id") == int(query["imageId"]))
        if "modelVersionId" in query:
            keep(lambda item, im: int(query["modelVersionId"]) in (item.get("modelVersionIds") or []))
        if "postId" in query:
            keep(lambda item, im: item.get("postId") == int(query["postId"]))
        if "username" in query:
            keep(lambda item, im: item.get("username") == query["username"])
        mask = int(query["browsingLevel"]) if "browsingLevel" in query else NSFW_MASKS.get(query.get("nsfw", ""), 1)
        sfw_site = host.split(":")[0].lower().endswith("civitai.com")

        def level_in_mask(item: dict[str, Any], im: Image) -> bool:
            own = item.get("browsingLevel")
            if not isinstance(own, int) or isinstance(own, bool):
                return True  # garbage a broken API might send: served, like non-objects
            return (max(own, im.ai_level) if sfw_site else own) & mask != 0

        keep(level_in_mask)
        if "type" in query:
            keep(lambda item, im: item.get("type") == query["type"])
        if "baseModels" in query:
            wanted = {name.strip() for name in query["baseModels"].split(",")}
            keep(lambda item, im: item.get("baseModel") in wanted)
        if self.database_path(query):  # newest id first, whatever the sort
            images = sorted(images, key=lambda im: -im.public["id"] if isinstance(im.public, dict)
                            and isinstance(im.public.get("id"), int) else 0)
        elif self.unsorted:
            pass
        elif query.get("sort", "Most Reactions") in SORT_KEYS:
            keys = SORT_KEYS[query.get("sort", "Most Reactions")]
            images = sorted(images, key=lambda im: -sort_value(im.public, keys))
        elif query.get("sort") in ("Newest", "Oldest"):  # by when it was posted, not by id
            images = sorted(images, key=posted_at, reverse=query["sort"] == "Newest")
        return images

    def render_item(self, image: Image, q: ApiQuery) -> Any:
        if not isinstance(image.public, dict):
            return image.public
        item = dict(image.public)
        if "url" not in item:
            root = self.api_root if self.cdn_on_api else self.cdn_root
            path = f"/{CDN_KEY}/{image.uuid}/original=true/{image.uuid}.jpeg"
            if image.cdn_host:
                root = f"http://{image.cdn_host}:{self.cdn_root.rsplit(':', 1)[1]}"
                if image.cdn_host.startswith("image-b2."):
                    path = f"/file/civitai-media-cache/{image.uuid}/original=true/{image.uuid}.jpeg"
            item["url"] = root + path
            item = {k: item[k] for k in ("id", "url", *item) if k in item}  # url second, as the API does
        flat = q.query.get("flatMeta", "").lower()
        nested = self.nested_meta or (flat != "true" and (flat == "false" or self.database_path(q.query)))
        if not q.with_meta:
            item["meta"] = None
        elif nested and item.get("meta") is not None:
            item["meta"] = {"id": item["id"] if isinstance(item["id"], int) else 0, "meta": item["meta"]}
        return item

    def images_page(self, q: ApiQuery, fault: Fault | None) -> Reply:
        if "page" in q.query and int(q.query["page"]) * q.limit > 1000:
            return json_reply({"error": "use cursors"}, 429)
        images = self.filtered(q.query, q.host)
        chunk = images[q.offset:q.offset + q.limit]
        items = [] if fault and fault.action == "empty" else [self.render_item(im, q) for im in chunk]
        next_offset: int | None = q.offset + q.limit if q.limit and q.offset + q.limit < len(images) else None
        if fault and fault.action == "loop":
            next_offset = (int(fault.extra.get("to_page", 1)) - 1) * q.limit
        metadata: dict[str, str] = {}
        if next_offset is not None:
            cursor = make_cursor(next_offset, q.checksum)
            pairs = [(k, v) for k, v in q.pairs if k != "cursor"] + [("cursor", cursor)]
            root = f"http://{q.host}" if q.host else self.api_root  # built from the Host header, as Civitai does
            metadata = {"nextCursor": cursor, "nextPage": f"{root}/api/v1/images?{urlencode(pairs)}"}
        return json_reply({"items": items, "metadata": metadata})


class MockResource(Resource):
    """One listener: ``api`` (the images API plus ``/_control/``) or ``cdn``."""

    isLeaf = True

    def __init__(self, state: MockState, kind: str, reactor: Any) -> None:
        super().__init__()
        self.state = state
        self.kind = kind
        self.reactor = reactor

    def render(self, request: Request) -> int:
        path = request.path.decode("utf-8", "replace")
        if self.kind == "api" and path.startswith("/_control/"):
            self.send(request, self.control(request, path))
            return NOT_DONE_YET
        entry = self.state.record(self.kind, request)
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        answer: Callable[[Fault | None], Reply]
        if self.kind == "api" and not (self.state.cdn_on_api and CDN_PATH.match(path)):
            answer, context, kind = *self.api(request, entry), "api"
        else:
            answer, context, kind = *self.cdn(path), "cdn"
        fault = self.state.take_fault(kind, context)
        entry["fault"] = fault.action if fault else None
        if fault is None or fault.action in ("empty", "loop"):
            self.send(request, answer(fault), entry)
        elif fault.action == "status":
            status, body = fault.extra["status"], fault.extra.get("body")
            if isinstance(body, str):
                reply = Reply(status, body.encode(), fault.extra.get("content_type", "application/json"))
            else:
                reply = json_reply(STATUS_BODIES.get(status, {"error": f"HTTP {status}"}), status)
            reply.headers.update(fault.extra.get("headers") or {})
            self.send(request, reply, entry)
        elif fault.action == "html":
            reply = Reply(int(fault.extra.get("status", 200)), CLOUDFLARE_PAGE.encode(), "text/html; charset=UTF-8")
            reply.headers.update(fault.extra.get("headers") or {})
            self.send(request, reply, entry)
        elif fault.action == "drop":
            request.channel.transport.abortConnection()
        elif fault.action == "stall":
            def later() -> None:
                if not gone:
                    self.send(request, answer(None), entry)
            self.reactor.callLater(float(fault.extra.get("seconds", 1)), later)
        elif fault.action == "truncate":
            reply = answer(None)
            self.send(request, reply, entry, cut=int(fault.extra.get("bytes", len(reply.body) // 2)))
        return NOT_DONE_YET

    def api(self, request: Request, entry: dict[str, Any]) -> tuple[Callable[[Fault | None], Reply], dict[str, Any]]:
        context: dict[str, Any] = {"query": entry["query"], "cursor": entry["query"].get("cursor"),
                                   "authorization": entry["headers"].get("authorization")}
        if entry["path"].rstrip("/") != "/api/v1/images":
            return (lambda fault: json_reply({"error": "Not found"}, 404)), context
        if request.method not in (b"GET", b"HEAD"):
            return (lambda fault: json_reply({"error": "Method not allowed"}, 405)), context
        try:
            q = self.state.parse_api_query(entry["raw_query"], entry["headers"].get("host", ""))
        except BadRequest as exc:
            error = str(exc)
            return (lambda fault: json_reply({"error": error}, 400)), context
        context["page"] = q.offset // q.limit + 1 if q.limit else 1
        return (lambda fault: self.state.images_page(q, fault)), context

    def cdn(self, path: str) -> tuple[Callable[[Fault | None], Reply], dict[str, Any]]:
        found = CDN_PATH.match(path)
        image = self.state.by_uuid.get(found.group(1)) if found else None
        if image is None or image.file is None:
            return (lambda fault: Reply(404, b"Not Found", "text/plain")), {
                "image_id": image.public["id"] if image else None}
        data = image.file
        return (lambda fault: Reply(200, data, "image/jpeg")), {"image_id": image.public["id"]}

    def control(self, request: Request, path: str) -> Reply:
        if path == "/_control/scenario" and request.method == b"POST":
            try:
                self.state.load(json.loads(request.content.read() if request.content else b"null"))
            except (ScenarioError, ValueError, TypeError, AttributeError) as exc:
                return json_reply({"error": f"bad scenario: {exc}"}, 400)
            return json_reply({"ok": True, "images": len(self.state.images)})
        if path == "/_control/requests" and request.method == b"GET":
            return json_reply(self.state.log)
        return json_reply({"error": "Not found"}, 404)

    def send(self, request: Request, reply: Reply, entry: dict[str, Any] | None = None,
             cut: int | None = None) -> None:
        if entry is not None:
            entry["status"] = reply.status
        request.setResponseCode(reply.status)
        request.setHeader("Content-Type", reply.content_type)
        request.setHeader("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            request.setHeader(name, str(value))
        if cut is None:
            request.write(reply.body)
            request.finish()
        else:
            request.write(reply.body[:cut])
            request.channel.transport.loseConnection()  # flushes what was written, then closes


def demo_scenario(count: int = 300) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A deterministic demo: ``count`` small JPEG/PNG pictures with random (seed 0) stats and prompts."""
    import io
    import random

    from PIL import Image as PILImage
    from PIL import ImageDraw, PngImagePlugin

    rng = random.Random(0)
    subjects = ["a lighthouse", "a red fox", "an old robot", "a mountain lake", "a tea house", "a dragon",
                "a city at night", "a cat astronaut", "a sunflower field", "a knight"]
    styles = ["watercolor", "oil painting", "photo, 35mm", "anime style", "pixel art", "ink sketch"]
    users = ["Ajuro", "pixelpainter", "NightOwl", "lumen_ai", "mockuser"]
    base_models = ["SD 1.5", "SDXL 1.0", "Pony", "Flux.1 D"]
    images: list[dict[str, Any]] = []
    files: dict[str, bytes] = {}
    for n in range(count):
        image_id = 9_000_000 + n * 7
        width, height = rng.randrange(64, 257, 8), rng.randrange(64, 257, 8)
        prompt = f"{rng.choice(subjects)}, {rng.choice(styles)}, highly detailed"
        seed, steps, cfg = rng.randrange(2**32), rng.choice([20, 25, 30, 45]), rng.choice([4, 5, 6.5, 7])
        picture = PILImage.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(picture)
        for _ in range(4):
            x0, y0 = rng.randrange(width), rng.randrange(height)
            box = (x0, y0, x0 + rng.randrange(8, 64), y0 + rng.randrange(8, 64))
            draw.ellipse(box, fill=tuple(rng.randrange(256) for _ in range(3)))
        buffer = io.BytesIO()
        if n % 3 == 0:
            info = PngImagePlugin.PngInfo()
            info.add_text("parameters", f"{prompt}\nSteps: {steps}, Sampler: Euler a, CFG scale: {cfg}, "
                                        f"Seed: {seed}, Size: {width}x{height}")
            picture.save(buffer, "PNG", pnginfo=info)
        else:
            picture.save(buffer, "JPEG", quality=85)
        files[f"img{n}"] = buffer.getvalue()
        stats = {name: int(rng.paretovariate(1.3) * scale) - scale for name, scale in
                 (("cryCount", 2), ("laughCount", 3), ("likeCount", 12), ("dislikeCount", 1),
                  ("heartCount", 6), ("commentCount", 1))}
        level = rng.choices([1, 2, 4], weights=[8, 1, 1])[0]
        version = rng.randrange(100_000, 100_010)
        meta = None if rng.random() < 0.1 else {
            "prompt": prompt, "negativePrompt": "blurry, lowres", "seed": seed, "steps": steps,
            "sampler": "Euler a", "cfgScale": cfg, "Size": f"{width}x{height}",
            "civitaiResources": [{"type": "checkpoint", "modelVersionId": version}]}
        images.append({"id": image_id, "width": width, "height": height, "browsingLevel": level,
                       "postId": 2_000_000 + n // 3, "username": rng.choice(users),
                       "baseModel": rng.choice(base_models), "modelVersionIds": [version],
                       "stats": stats, "meta": meta, "_file": f"img{n}", "_modelIds": [version // 10]})
    images.sort(key=lambda im: -sum(im["stats"].values()))  # "Most Reactions" order
    return {"images": images}, files


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.mockserver", description=__doc__.split("\n")[0])
    parser.add_argument("--api-port", type=int, default=0)
    parser.add_argument("--cdn-port", type=int, default=0)
    parser.add_argument("--demo", type=int, nargs="?", const=300, default=None, metavar="COUNT")
    args = parser.parse_args(argv)

    from twisted.internet import reactor
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    globalLogBeginner.beginLoggingTo([FilteringLogObserver(
        textFileLogObserver(sys.stderr), [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)])],
        redirectStandardIO=False)
    state = MockState()
    api = reactor.listenTCP(args.api_port, Site(MockResource(state, "api", reactor)), interface="127.0.0.1")
    cdn = reactor.listenTCP(args.cdn_port, Site(MockResource(state, "cdn", reactor)), interface="127.0.0.1")
    state.api_root = f"http://127.0.0.1:{api.getHost().port}"
    state.cdn_root = f"http://127.0.0.1:{cdn.getHost().port}"
    if args.demo is not None:
        state.load(*demo_scenario(args.demo))
    print(f"MOCKSERVER api={state.api_root} cdn={state.cdn_root}", flush=True)
    if args.demo is not None:
        print(f"try: scrapy crawl civitai -s CIVITAI_API_URL={state.api_root}/api/v1/images -a min_hearts=10",
              flush=True)
    reactor.run()


class MockServer:
    """Runs ``python -m tests.mockserver`` as a subprocess for the length of a ``with`` block."""

    def __init__(self) -> None:
        self.api_root = ""
        self.cdn_root = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._stdout: Any = None
        self._stderr: Any = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @property
    def api_url(self) -> str:
        return self.api_root + "/api/v1/images"

    def __enter__(self) -> MockServer:
        self._stdout, self._stderr = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        # -X faulthandler: a stand-in that hangs at start is made to print where (SIGABRT below)
        self._process = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "tests.mockserver"],
                                         cwd=Path(__file__).parents[1], stdin=subprocess.DEVNULL,
                                         stdout=self._stdout, stderr=self._stderr)
        deadline = time.monotonic() + 60  # generous: a loaded CI machine can be slow to start Python
        while time.monotonic() < deadline:
            self._stdout.seek(0)
            found = re.search(rb"^MOCKSERVER api=(\S+) cdn=(\S+)\n", self._stdout.read(), re.M)
            if found:
                self.api_root, self.cdn_root = found.group(1).decode(), found.group(2).decode()
                return self
            if self._process.poll() is not None:
                break
            time.sleep(0.05)
        if self._process.poll() is None:  # still starting after a minute: where is it stuck?
            self._process.send_signal(signal.SIGABRT)
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self._stderr.seek(0)
        stderr = self._stderr.read().decode("utf-8", "replace")
        status = self._process.poll()
        self.__exit__(None, None, None)
        raise RuntimeError(f"mock server did not start (exit status {status}):\n{stderr}")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        for handle in (self._stdout, self._stderr):
            if handle is not None:
                handle.close()
        self._stdout = self._stderr = None

    def _call(self, path: str, data: bytes | None = None) -> Any:
        request = urllib.request.Request(self.api_root + path, data=data,
                                         headers={"Content-Type": "application/json"} if data else {})
        try:
            with self._opener.open(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"mock server {path}: HTTP {exc.code}: {exc.read().decode('utf-8', 'replace')}") \
                from None

    def load(self, scenario: dict[str, Any]) -> None:
        """Replace the server's scenario; ``files`` values may be raw bytes (sent base64-encoded)."""
        files = {name: base64.b64encode(data).decode() if isinstance(data, bytes) else data
                 for name, data in (scenario.get("files") or {}).items()}
        self._call("/_control/scenario", json.dumps({**scenario, "files": files}).encode())

    def requests(self, server: str | None = None) -> list[dict[str, Any]]:
        """The request log, oldest first; ``server`` keeps only ``"api"`` or ``"cdn"`` entries."""
        log: list[dict[str, Any]] = self._call("/_control/requests")
        return [entry for entry in log if server is None or entry["server"] == server]


if __name__ == "__main__":
    main()
