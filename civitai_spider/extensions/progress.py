"""Progress while a harvest runs: a live display on a terminal, a periodic log line elsewhere.

``CIVITAI_PROGRESS``: ``auto`` (default: a live tqdm line when stderr is a terminal,
else a log line every ``CIVITAI_PROGRESS_INTERVAL`` seconds: Scrapyd, the cloud,
CI), ``bar``, ``log`` or ``off``. While the live line is shown, log records are
written above it instead of through it. While an API page is being retried, the
line starts with what failed, which try comes next and when. The live line is cut
to the terminal's width at a field boundary, with an ellipsis.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.utils.asyncio import create_looping_call

from civitai_spider.config import CivitaiConfig
from civitai_spider.middlewares import api_retrying

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1024 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TB"


def fit(fields: dict[str, str], width: int) -> str:
    """The fields as one line of at most ``width`` characters, cut at a field boundary ("…" marks a cut)."""
    parts = [f"{name} {value}" if name else value for name, value in fields.items()]
    line = " | ".join(parts)
    while len(line) > width and len(parts) > 1:
        parts.pop()
        line = " | ".join(parts) + " | …"
    return line if len(line) <= width else line[: max(0, width - 1)] + "…"


def progress_fields(stats: dict[str, Any], elapsed: float) -> dict[str, str]:
    """The numbers a person watching wants, from the crawl's stats."""
    dropped = {k.rsplit("/", 1)[1]: v for k, v in stats.items() if k.startswith("filter/dropped/")}
    top = ", ".join(f"{reason} {count}" for reason, count in sorted(dropped.items(), key=lambda kv: -kv[1])[:3])
    stored = stats.get("images/stored", 0)
    written = stats.get("images/bytes_written", 0) + stats.get("metadata/bytes_written", 0)
    return {  # most important first: a narrow terminal cuts the end of the line
        "stored": str(stored),
        "failed": str(stats.get("images/failed", 0)),
        "rate": f"{stored / elapsed:.1f} img/s" if elapsed > 0 else "-",
        "done before": str(stats.get("done/skipped", 0)),
        "written": human_bytes(written),
        "pages": str(stats.get("api/pages", 0)),
        "seen": str(stats.get("api/items", 0)),
        "kept": str(stats.get("filter/passed", 0)),
        "dropped": f"{stats.get('filter/dropped', 0)}" + (f" ({top})" if top else ""),
    }


class Progress:
    def __init__(self, crawler: Crawler) -> None:
        config = CivitaiConfig.of(crawler)
        mode = config.progress
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        if mode == "off":
            raise NotConfigured
        self.crawler = crawler
        self.mode = mode
        self.interval = config.progress_interval if mode == "log" else 0.5
        self.started = time.monotonic()
        self._loop: Any = None
        self._bar: Any = None
        self._redirect: Any = None
        self._retrying: tuple[str, float] | None = None  # (what, when the next try goes)
        crawler.signals.connect(self.on_api_retrying, signal=api_retrying)
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Progress:
        return cls(crawler)

    def spider_opened(self, spider: Any) -> None:
        self.started = time.monotonic()
        if self.mode == "bar":
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            # nrows: a terminal that reports 0 rows (`script`, some CI consoles) would make
            # tqdm hide the line.
            self._bar = tqdm(total=None, file=sys.stderr, unit="img", ncols=self.width(),
                             nrows=shutil.get_terminal_size((120, 24)).lines or 24, bar_format="{desc}")
            root = logging.getLogger()
            before = list(root.handlers)
            self._redirect = logging_redirect_tqdm()
            self._redirect.__enter__()
            # tqdm's handler replaces Scrapy's console handler without its level: keep
            # LOG_LEVEL (else every DEBUG line is written above the bar).
            level = min((h.level for h in before if h not in root.handlers), default=logging.NOTSET)
            for handler in root.handlers:
                if handler not in before:
                    handler.setLevel(level)
        self._loop = create_looping_call(self.update)
        self._loop.start(self.interval, now=False)

    @staticmethod
    def width() -> int:
        """The terminal's width; COLUMNS, or 120 where the terminal reports none (0 columns)."""
        return shutil.get_terminal_size((120, 24)).columns

    def on_api_retrying(self, text: str | None, wait: float = 0.0) -> None:
        self._retrying = None if text is None else (text, time.monotonic() + wait)

    def update(self) -> None:
        fields = progress_fields(self.crawler.stats.get_stats(), time.monotonic() - self.started)
        if self._retrying is not None:
            what, due = self._retrying
            left = due - time.monotonic()
            fields = {"": f"retrying {what} " + (f"in {left:.0f} s" if left > 0.5 else "(trying now)"), **fields}
        if self._bar is not None:
            width = self.width()
            self._bar.ncols = width
            self._bar.set_description_str(fit(fields, width - 1), refresh=True)
        else:
            logger.info("Progress: %s", " | ".join(f"{name} {value}" if name else value for name, value in fields.items()))

    def spider_closed(self, spider: Any) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._bar is not None:
            self.update()
            self._bar.close()
            self._redirect.__exit__(None, None, None)
            self._bar = None
