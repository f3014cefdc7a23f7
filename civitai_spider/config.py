"""Our settings, read once and checked: a frozen ``CivitaiConfig``, one typed field per setting.

Every ``CIVITAI_*`` / ``FIELDSTATS_*`` setting has a field here, with its name, a
line of doc and, where it takes less than its type allows, its choices or range
(``Rule``). The default is the one in ``civitai_spider.settings`` (the only place
defaults are written); the type, the field's. ``CivitaiConfig.from_settings``
reads and checks them all: a bad value is one ``SettingError`` naming the setting
and what it takes. Components get the crawl's one config with
``CivitaiConfig.of(crawler)``, so every way a crawl starts (``scrapy crawl``,
``CrawlerProcess``, Scrapyd, Zyte) checks the settings before anything runs; our
``scrapy crawl`` checks them first, as a usage error (exit 2).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from civitai_spider import settings as defaults
from civitai_spider.shared_crawl.urls import redacted

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings


class SettingError(ValueError):
    """A setting that cannot be used; the message names it and what it accepts."""


@dataclass(frozen=True)
class Rule:
    """What a setting takes beyond its type: one of ``choices`` (folded to lower case), or a
    number from ``low`` to ``high`` (None: no bound), ``meaning`` saying so in words."""

    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    meaning: str = ""
    schemes: tuple[str, ...] = ()  # a URL (or empty) with one of these schemes


#: Settings that no longer exist, and what took their place: set, they are an error, not ignored.
RETIRED: dict[str, str] = {
    "CIVITAI_EARLY_STOP_PAGES": (
        "early stop no longer counts barren pages: it stops exactly where the sort proves every later "
        "image below the thresholds; CIVITAI_EARLY_STOP=false turns it off"
    ),
}


def choices(name: str) -> tuple[str, ...]:
    """The values setting ``name`` takes (one with a fixed set of them)."""
    return next(spec.metadata["rule"].choices for spec in fields(CivitaiConfig) if spec.metadata["setting"] == name)


def setting(name: str, doc: str, rule: Rule | None = None, *, env: bool = False) -> Any:
    """A config field read from setting ``name``; ``env``: when empty, from the environment variable of that name."""
    return field(metadata={"setting": name, "doc": doc, "rule": rule or Rule(), "env": env})


@dataclass(frozen=True)
class CivitaiConfig:
    # The API
    api_url: str = setting("CIVITAI_API_URL", "the images endpoint")
    api_key: str = setting("CIVITAI_API_KEY", "API key (else the environment variable)", env=True)
    page_limit: int = setting("CIVITAI_PAGE_LIMIT", "items per API page",
                              Rule(low=1, high=200, meaning="1..200 (items per API page)"))
    early_stop: bool = setting("CIVITAI_EARLY_STOP", "stop a chain where the sort proves the rest below the thresholds")
    update_stop_after: int = setting("CIVITAI_UPDATE_STOP_AFTER", "update runs: images in a row seen before that stop a chain",
                                     Rule(low=1, meaning="at least 1"))
    state_save_interval: float = setting("CIVITAI_STATE_SAVE_INTERVAL", "seconds between JOBDIR state writes",
                                         Rule(low=0, meaning="0 or more (seconds)"))
    image_hosts: tuple[str, ...] = setting("CIVITAI_IMAGE_HOSTS", "hosts images may be fetched from")
    meta_max_depth: int = setting("CIVITAI_META_MAX_DEPTH", "deepest meta nesting accepted",
                                  Rule(low=1, meaning="at least 1"))
    # Retries
    retry_backoff_base: float = setting("CIVITAI_RETRY_BACKOFF_BASE", "first retry's wait (seconds)",
                                        Rule(low=0, meaning="0 or more (seconds)"))
    retry_backoff_max: float = setting("CIVITAI_RETRY_BACKOFF_MAX", "longest backoff (seconds)",
                                       Rule(low=0, meaning="0 or more (seconds)"))
    retry_after_max: float = setting("CIVITAI_RETRY_AFTER_MAX", "longest Retry-After honoured (seconds)",
                                     Rule(low=0, meaning="0 or more (seconds)"))
    images_in_flight: int = setting("CIVITAI_IMAGES_IN_FLIGHT", "images downloading at once (0: CONCURRENT_REQUESTS - 8)",
                                    Rule(low=0, meaning="0 (CONCURRENT_REQUESTS - 8) or more"))
    # Images
    image_format: str = setting("CIVITAI_IMAGE_FORMAT", "keep or convert policy",
                                Rule(choices=("original", "jpeg", "png")))
    jpeg_quality: int = setting("CIVITAI_JPEG_QUALITY", "JPEG quality when encoding", Rule(low=1, high=100, meaning="1..100"))
    max_image_pixels: int = setting("CIVITAI_MAX_IMAGE_PIXELS", "decompression-bomb limit (0: off)",
                                    Rule(low=0, meaning="0 (no limit) or more"))
    image_max_bytes: int = setting("CIVITAI_IMAGE_MAX_BYTES", "largest download", Rule(low=1, meaning="at least 1"))
    store_errors_max: int = setting("CIVITAI_STORE_ERRORS_MAX", "store failures in a row that stop the crawl (0: never)",
                                    Rule(low=0, meaning="0 (never) or more"))
    store_processes: int = setting("CIVITAI_STORE_PROCESSES", "store processes (-1: per CPU, 0: threads)",
                                   Rule(low=-1, meaning="-1 (one per CPU, at most 4), 0 (threads) or more"))
    store_process_timeout: float = setting("CIVITAI_STORE_PROCESS_TIMEOUT", "seconds a store process may hold an image",
                                           Rule(low=0, meaning="0 (no limit) or more (seconds)"))
    partial_files_min_age: float = setting("CIVITAI_PARTIAL_FILES_MIN_AGE", "age of .part files removed at open",
                                           Rule(low=0, meaning="0 or more (seconds)"))
    record_flush_lines: int = setting("CIVITAI_RECORD_FLUSH_LINES", "lines per record segment (s3://, gs://)",
                                      Rule(low=1, meaning="at least 1"))
    record_flush_seconds: float = setting("CIVITAI_RECORD_FLUSH_SECONDS", "seconds a record line may wait",
                                          Rule(low=0, meaning="0 (no time limit) or more"))
    # Metadata
    caption_files: bool = setting("CIVITAI_CAPTION_FILES", "also write N.txt captions")
    meta_max_bytes: int = setting("CIVITAI_META_MAX_BYTES", "largest metadata files of an image", Rule(low=1, meaning="at least 1"))
    # The run experience
    fieldstats_enabled: bool = setting("FIELDSTATS_ENABLED", "field coverage in the closing log")
    fieldstats_max_depth: int = setting("FIELDSTATS_MAX_DEPTH", "levels of field coverage", Rule(low=1, meaning="at least 1"))
    progress: str = setting("CIVITAI_PROGRESS", "live line, log line or none", Rule(choices=("auto", "bar", "log", "off")))
    progress_interval: float = setting("CIVITAI_PROGRESS_INTERVAL", "seconds between progress log lines",
                                       Rule(low=0.1, meaning="at least 0.1 (seconds)"))
    # Many workers on one crawl
    redis_url: str = setting("CIVITAI_REDIS_URL", "Redis of a shared crawl (else the environment variable)",
                             Rule(schemes=("redis", "rediss", "unix"), meaning="a redis://, rediss:// or unix:// URL"),
                             env=True)
    redis_crawl: str = setting("CIVITAI_REDIS_CRAWL", "the shared crawl's name in Redis")
    redis_start: str = setting("CIVITAI_REDIS_START", "start or join", Rule(choices=("auto", "new", "resume", "restart")))
    redis_join_wait: float = setting("CIVITAI_REDIS_JOIN_WAIT", "seconds resume waits for a crawl to be started",
                                     Rule(low=0, meaning="0 or more (seconds)"))
    redis_worker: str = setting("CIVITAI_REDIS_WORKER", "this worker's name")
    redis_worker_timeout: float = setting("CIVITAI_REDIS_WORKER_TIMEOUT", "seconds of silence before a worker is dead",
                                          Rule(low=1, meaning="at least 1 (seconds)"))
    redis_poll_interval: float = setting("CIVITAI_REDIS_POLL_INTERVAL", "seconds between looks for a queued page",
                                         Rule(low=0, meaning="0 or more (seconds)"))
    redis_pages_per_worker: int = setting("CIVITAI_REDIS_PAGES_PER_WORKER", "pages a worker works on at once",
                                          Rule(low=1, meaning="at least 1"))

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> CivitaiConfig:
        """Read and check every setting of ours; raises ``SettingError`` for the first bad one."""
        for name, instead in RETIRED.items():
            if settings.get(name) is not None:
                raise SettingError(f"{name} is gone: {instead}")
        return cls(**{spec.name: _read(settings, spec.metadata, spec.type) for spec in fields(cls)})

    @classmethod
    def of(cls, crawler: Crawler) -> CivitaiConfig:
        """The crawler's config, read once its settings are final.

        Scrapy builds the spider before it runs the add-ons, and the shared-crawl add-on
        changes a setting of ours (``CIVITAI_PARTIAL_FILES_MIN_AGE``): a config cached then
        kept the old value, and a worker joining a shared crawl deleted the ``.part`` files
        other workers were writing. So it is kept only once the settings are frozen."""
        config = getattr(crawler, "civitai_config", None)
        if config is None:
            config = cls.from_settings(crawler.settings)
            if crawler.settings.frozen:
                crawler.civitai_config = config  # type: ignore[attr-defined]
        return config


_KINDS = {"bool": "true or false", "int": "a whole number", "float": "a number"}
_READERS = {"bool": "getbool", "int": "getint", "float": "getfloat"}


def _read(settings: BaseSettings, meta: Any, kind: str) -> Any:
    """One setting, as its field's type (``kind``: the annotation), checked against its rule."""
    name, rule = meta["setting"], meta["rule"]
    default = getattr(defaults, name)  # when these settings do not have it (not built from ours)
    try:
        if kind in _READERS:
            value: Any = getattr(settings, _READERS[kind])(name, default)
        elif kind.startswith("tuple"):
            value = tuple(settings.getlist(name, default))
        else:
            value = str(settings.get(name, default)).strip()
    except (TypeError, ValueError):
        raise SettingError(f"{name} must be {_KINDS[kind]}, got {settings.get(name)!r}") from None
    if meta["env"] and not value:
        value = os.environ.get(name, "").strip()
    if rule.choices:
        value = value.lower()
        if value not in rule.choices:
            raise SettingError(f"{name} must be one of {', '.join(rule.choices)}, got {settings.get(name)!r}")
    if (rule.low is not None and value < rule.low) or (rule.high is not None and value > rule.high):
        raise SettingError(f"{name} must be {rule.meaning}, got {value!r}")
    if rule.schemes and value and urlsplit(value).scheme not in rule.schemes:
        raise SettingError(f"{name} must be {rule.meaning}, got {redacted(value)!r}")  # no password in a log
    return value
