"""Spider arguments: parsed and validated once, at start, into a frozen ``CrawlArguments``.

``-a key=value`` arguments (and Scrapyd's / Zyte's job arguments) always arrive as
strings. A bad one raises ``ArgumentError`` naming the argument and what it accepts.

Arguments that fan out (one cursor chain per comma-separated value, all chains
run concurrently and merged by image id): ``model_id``, ``model_version_id``,
``post_id``, ``username`` and ``browsing_level``. Several fan-out arguments
together run one chain per combination.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from civitai_spider import api

TRUE_WORDS = {"1", "true", "yes", "on", "y"}
FALSE_WORDS = {"0", "false", "no", "off", "n"}


class ArgumentError(ValueError):
    """A spider argument that cannot be used; the message names it and what it accepts."""


@dataclass(frozen=True)
class Thresholds:
    """Inclusive reaction thresholds: ``minimum[name] <= count`` and ``count <= maximum[name]``."""

    minimum: Mapping[str, int] = field(default_factory=dict)
    maximum: Mapping[str, int] = field(default_factory=dict)

    def failures(self, stats: Any) -> list[str]:
        """The thresholds an item's ``stats`` fails, as ``min_hearts``-style names, in a fixed order."""
        counts = api.reaction_counts(stats)
        failed = [f"min_{n}" for n, v in self.minimum.items() if counts[n] < v]
        failed += [f"max_{n}" for n, v in self.maximum.items() if counts[n] > v]
        return failed

    def sort_floor(self, sort: str) -> int:
        """The lowest value of ``sort``'s key an image meeting the minimums can have (0: no bound).

        "Most Reactions" sorts by likes + hearts + laughs + cries, so an image with
        ``min_hearts=10`` and ``min_likes=5`` has a key of at least 15.
        """
        return sum(self.minimum.get(name, 0) for name in api.SORT_COUNTERS.get(sort, ()))


@dataclass(frozen=True)
class Query:
    """One cursor chain: its key (for logs, stats and resume state) and its API parameters."""

    key: str
    params: Mapping[str, str]


@dataclass(frozen=True)
class CrawlArguments:
    thresholds: Thresholds
    require_meta: bool
    queries: tuple[Query, ...]
    sort: str
    period: str
    update: bool = False  # walk only down to what earlier update runs of the same query saw

    def seen_name(self, query: Query) -> str:
        """A stable name for everything that decides what ``query``'s chain stores: its API
        parameters, the thresholds and ``require_meta`` (an update run with ``min_hearts=5``
        must not stop at images a ``min_hearts=10`` run dropped). Readable key, then a hash."""
        decisive = {
            "params": sorted(query.params.items()),
            "minimum": sorted(self.thresholds.minimum.items()),
            "maximum": sorted(self.thresholds.maximum.items()),
            "require_meta": self.require_meta,
        }
        digest = hashlib.sha256(json.dumps(decisive, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]
        readable = re.sub(r"[^A-Za-z0-9=,._-]+", "_", query.key)[:60]
        return f"{readable}.{digest}"

    def early_stop(self, query: Query) -> tuple[int, str]:
        """The sort key below which ``query``'s chain can stop, or 0 and why it cannot.

        A page is in ``sort`` order, so once its last image's key is below the
        floor, every later image is below the thresholds. Only the search index
        sorts: on Civitai's database path the engagement sorts are newest-by-id.
        """
        if self.sort not in api.SORT_COUNTERS:
            return 0, f"sort={self.sort} is not ordered by reaction or comment counts"
        floor = self.thresholds.sort_floor(self.sort)
        if not floor:
            counters = "/".join(api.SORT_COUNTERS[self.sort])
            return 0, f"no min_{counters.replace('/', '/min_')} threshold bounds the '{self.sort}' order"
        why_not = api.database_path(query.params)
        if why_not:
            advice = " (add model_version_id for a sorted, shorter walk)" if "modelId" in why_not else ""
            return 0, f"Civitai answers {why_not} from its database, where '{self.sort}' is silently newest-first{advice}"
        return floor, ""


# Name of the spider argument -> (short reaction name, "min" or "max").
THRESHOLD_ARGS = {f"min_{n}": (n, "min") for n in api.REACTIONS} | {"max_dislikes": ("dislikes", "max")}
FAN_OUT_ARGS = {
    "model_id": "modelId",
    "model_version_id": "modelVersionId",
    "post_id": "postId",
    "username": "username",
    "browsing_level": "browsingLevel",
}
KNOWN_ARGS = set(THRESHOLD_ARGS) | set(FAN_OUT_ARGS) | {
    "sort", "period", "nsfw", "type", "base_models", "require_meta", "update",
}
#: One line of help per argument, as ``scrapy crawl civitai -h`` lists them (README "Spider arguments").
ARGUMENT_HELP = {
    "min_hearts=N": "keep images with at least N hearts (inclusive; a missing count is 0)",
    "min_likes=N, min_laughs=N, min_cries=N, min_comments=N, min_dislikes=N": "the same for the other counts",
    "max_dislikes=N": "keep images with at most N dislikes",
    "require_meta=BOOL": "drop images without a prompt (default true)",
    "update=BOOL": "with sort=Newest: stop each chain where earlier update runs of it left off",
    "sort=S": ", ".join(api.SORTS) + " (default Most Reactions)",
    "period=P": ", ".join(api.PERIODS) + " (default AllTime)",
    "type=T": ", ".join(api.TYPES) + " (default image)",
    "nsfw=V": "None, Soft, Mature, X, true (R+X+XXX only!), false; default: PG only",
    "base_models=A,B": "one filter: images of any of these base models (e.g. SDXL 1.0,Pony)",
    "browsing_level=L,M": "one chain per level or mask: 1..31 or PG, PG13, R, X, XXX joined by +",
    "model_id=..., model_version_id=..., post_id=..., username=...": "one chain per comma-separated value",
}


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        value = str(value)
    value = value.strip()
    if not value:
        raise ArgumentError(f"argument {name}: empty value")
    return value


def parse_count(name: str, value: Any) -> int:
    text = _text(name, value)
    try:
        number = int(text)
    except ValueError:
        raise ArgumentError(f"argument {name}={text!r}: expected a whole number >= 0") from None
    if number < 0:
        raise ArgumentError(f"argument {name}={text!r}: expected a whole number >= 0")
    return number


def parse_bool(name: str, value: Any) -> bool:
    text = _text(name, value).lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ArgumentError(f"argument {name}={value!r}: expected true or false")


def _fold(text: str) -> str:
    return text.lower().replace(" ", "").replace("_", "").replace("-", "")


def parse_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """One of the API's fixed values, matched ignoring case, spaces, '_' and '-'."""
    text = _text(name, value)
    for choice in choices:
        if _fold(choice) == _fold(text):
            return choice
    raise ArgumentError(f"argument {name}={text!r}: expected one of {', '.join(choices)}")


def _split(name: str, value: Any) -> list[str]:
    parts = [p.strip() for p in _text(name, value).split(",")]
    if not all(parts):
        raise ArgumentError(f"argument {name}={value!r}: empty element in a comma-separated list")
    return list(dict.fromkeys(parts))  # de-duplicated, order kept


def parse_browsing_level(name: str, element: str) -> int:
    """A browsing-level mask: a number 1..31, or level names joined by '+' (PG, PG13, R, X, XXX)."""
    if element.isdigit():
        mask = int(element)
    else:
        names = [p.strip().upper() for p in element.replace("|", "+").split("+")]
        if not all(n in api.BROWSING_LEVELS for n in names):
            mask = -1
        else:
            mask = sum(set(api.BROWSING_LEVELS[n] for n in names))
    if not 1 <= mask <= 31:
        raise ArgumentError(
            f"argument {name}={element!r}: expected a mask 1..31 or names joined by '+' "
            f"from {', '.join(api.BROWSING_LEVELS)}"
        )
    return mask


def _fan_out_values(name: str, value: Any) -> list[str]:
    elements = _split(name, value)
    if name == "browsing_level":
        return list(dict.fromkeys(str(parse_browsing_level(name, e)) for e in elements))
    if name != "username":
        for element in elements:
            if not element.isdigit() or int(element) <= 0:
                raise ArgumentError(
                    f"argument {name}={value!r}: expected positive whole numbers, comma-separated"
                )
        return [str(int(e)) for e in elements]
    return elements


def parse_arguments(kwargs: Mapping[str, Any]) -> CrawlArguments:
    """Validate every spider argument; arguments starting with '_' (Scrapyd's ``_job``) are ignored."""
    unknown = sorted(k for k in kwargs if k not in KNOWN_ARGS and not k.startswith("_"))
    if unknown:
        raise ArgumentError(
            f"unknown argument {unknown[0]!r}; known arguments: {', '.join(sorted(KNOWN_ARGS))}"
        )
    minimum: dict[str, int] = {}
    maximum: dict[str, int] = {}
    for arg, (short, kind) in THRESHOLD_ARGS.items():
        if arg in kwargs:
            (minimum if kind == "min" else maximum)[short] = parse_count(arg, kwargs[arg])

    base: dict[str, str] = {
        "sort": parse_choice("sort", kwargs.get("sort", "Most Reactions"), api.SORTS),
        "period": parse_choice("period", kwargs.get("period", "AllTime"), api.PERIODS),
        "type": parse_choice("type", kwargs.get("type", "image"), api.TYPES),
    }
    if "nsfw" in kwargs:
        base["nsfw"] = parse_choice("nsfw", kwargs["nsfw"], api.NSFW_VALUES)
    if "base_models" in kwargs:
        base["baseModels"] = ",".join(_split("base_models", kwargs["base_models"]))

    axes = [
        [(param, v) for v in _fan_out_values(arg, kwargs[arg])]
        for arg, param in FAN_OUT_ARGS.items()
        if arg in kwargs
    ]
    queries = []
    for combination in itertools.product(*axes):
        key = ",".join(f"{p}={v}" for p, v in combination) or "all"
        queries.append(Query(key=key, params={**base, **dict(combination)}))

    update = parse_bool("update", kwargs.get("update", "false"))
    if update and base["sort"] != "Newest":
        raise ArgumentError(
            f"argument update=true needs sort=Newest (the only order where new images come first), got "
            f"sort={base['sort']!r}: add -a sort=Newest"
        )
    return CrawlArguments(
        thresholds=Thresholds(minimum=minimum, maximum=maximum),
        require_meta=parse_bool("require_meta", kwargs.get("require_meta", "true")),
        queries=tuple(queries),
        sort=base["sort"],
        period=base["period"],
        update=update,
    )
