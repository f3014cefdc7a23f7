"""Our settings, checked before the crawl starts: a bad value is one usage error, not a traceback.

``check_settings`` runs in the project's ``scrapy crawl`` before anything is
built: every ``CIVITAI_*`` / ``FIELDSTATS_*`` setting whose default (in
``civitai_spider.settings``) is a bool, int or float must read as one, every
setting with a fixed set of values must have one of them, and the few with a
range must be in it. The components read the same settings with the same
helpers (``choice``), so a value that passes here is one they accept.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

PREFIXES = ("CIVITAI_", "FIELDSTATS_")

#: Settings with a fixed set of values (compared folded to lower case).
CHOICES: dict[str, tuple[str, ...]] = {
    "CIVITAI_PROGRESS": ("auto", "bar", "log", "off"),
    "CIVITAI_IMAGE_FORMAT": ("original", "jpeg", "png"),
    "CIVITAI_REDIS_START": ("auto", "new", "resume", "restart"),
}

#: Numeric settings with bounds: (lowest, highest or None, what the bounds mean).
RANGES: dict[str, tuple[float, float | None, str]] = {
    "CIVITAI_PAGE_LIMIT": (1, 200, "1..200 (items per API page)"),
    "CIVITAI_JPEG_QUALITY": (1, 100, "1..100"),
    "CIVITAI_RECORD_FLUSH_LINES": (1, None, "at least 1"),
    "CIVITAI_RECORD_FLUSH_SECONDS": (0, None, "0 (no time limit) or more"),
    "CIVITAI_REDIS_WORKER_TIMEOUT": (1, None, "at least 1 (seconds)"),
    "CIVITAI_STORE_PROCESSES": (-1, None, "-1 (one per CPU, at most 4), 0 (threads) or more"),
    "CIVITAI_STORE_PROCESS_TIMEOUT": (0, None, "0 (no limit) or more (seconds)"),
}


#: Settings that no longer exist, and what took their place: set, they are an error, not ignored.
RETIRED: dict[str, str] = {
    "CIVITAI_EARLY_STOP_PAGES": (
        "early stop no longer counts barren pages: it stops exactly where the sort proves every later "
        "image below the thresholds; CIVITAI_EARLY_STOP=false turns it off"
    ),
}


class SettingError(ValueError):
    """A setting that cannot be used; the message names it and what it accepts."""


def choice(settings: BaseSettings, name: str) -> str:
    """The value of a ``CHOICES`` setting, folded to lower case; ``SettingError`` if not one of them."""
    value = str(settings.get(name, "")).strip().lower()
    if value not in CHOICES[name]:
        raise SettingError(f"{name} must be one of {', '.join(CHOICES[name])}, got {settings.get(name)!r}")
    return value


def check_settings(settings: BaseSettings, defaults: ModuleType) -> None:
    """Raise ``SettingError`` for the first of our settings that cannot be used."""
    for name, instead in RETIRED.items():
        if settings.get(name) is not None:
            raise SettingError(f"{name} is gone: {instead}")
    for name, default in vars(defaults).items():
        if not name.startswith(PREFIXES) or settings.get(name) is None:
            continue
        read = {bool: settings.getbool, int: settings.getint, float: settings.getfloat}.get(type(default))
        if read is None:
            continue
        try:
            value = read(name)
        except (TypeError, ValueError):
            kind = {bool: "true or false", int: "a whole number", float: "a number"}[type(default)]
            raise SettingError(f"{name} must be {kind}, got {settings.get(name)!r}") from None
        if name in RANGES:
            low, high, text = RANGES[name]
            if value < low or (high is not None and value > high):
                raise SettingError(f"{name} must be {text}, got {value!r}")
    for name in CHOICES:
        choice(settings, name)
