"""The chains' resume state in JOBDIR: loaded at open, written atomically while the crawl runs.

With ``-s JOBDIR=DIR``, ``DIR/spider.state`` holds ``spider.state`` (a pickled dict,
the file and format of Scrapy's ``SpiderState`` extension, which this one replaces:
that one writes at close only, truncating the file and then pickling into it, so a
kill between the two left an empty file that stopped every later run at open).
Here it is loaded forgivingly (an unreadable file is a warning, counted as
``chain_state/unreadable``, and the chains start afresh: done images are skipped
all the same), and written atomically (``storage.atomic``) whenever the spider's
chains move (``signals.chains_changed``), at most every
``CIVITAI_STATE_SAVE_INTERVAL`` seconds: a change within the interval is written
at its end, not at the next change (which may be long in coming while images
download), and once more at close.
"""

from __future__ import annotations

import logging
import pickle
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.utils.asyncio import CallLaterResult, call_later
from scrapy.utils.job import job_dir

from civitai_spider import signals as civitai_signals
from civitai_spider.config import CivitaiConfig
from civitai_spider.storage.atomic import write_atomically

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

STATE_FILE = "spider.state"  # Scrapy's SpiderState's name for it: a JOBDIR of an earlier version resumes


class ChainState:
    def __init__(self, crawler: Crawler, path: Path) -> None:
        self.crawler = crawler
        self.path = path
        self.interval = CivitaiConfig.of(crawler).state_save_interval
        self.spider: Any = None
        self._saved_at = 0.0
        self._due: CallLaterResult | None = None  # a write at the end of the interval
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)
        crawler.signals.connect(self.chains_changed, signal=civitai_signals.chains_changed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ChainState:
        jobdir = job_dir(crawler.settings)
        if not jobdir:
            raise NotConfigured("no JOBDIR: nothing to resume from")
        return cls(crawler, Path(jobdir, STATE_FILE))

    def spider_opened(self, spider: Any) -> None:
        self.spider = spider
        spider.state = self.load()

    def load(self) -> dict[str, Any]:
        try:
            with open(self.path, "rb") as source:
                state = pickle.load(source)  # our own file, in the user's JOBDIR
        except FileNotFoundError:
            return {}
        except Exception as exc:  # empty, cut short, or not ours: start afresh, say so
            logger.warning("JOBDIR state %s unreadable (%s: %s): the chains start from their first page "
                           "(stored images are skipped all the same)", self.path, exc.__class__.__name__, exc)
            self.crawler.stats.inc_value("chain_state/unreadable")
            return {}
        return state if isinstance(state, dict) else {}

    def chains_changed(self) -> None:
        wait = self._saved_at + self.interval - time.monotonic()
        if wait <= 0:
            self.write()
        elif self._due is None:
            self._due = call_later(wait, self.write)

    def write(self) -> None:
        if self._due is not None:
            self._due.cancel()
            self._due = None
        state = getattr(self.spider, "state", None)
        if not isinstance(state, dict):
            return
        self._saved_at = time.monotonic()
        write_atomically(self.path, pickle.dumps(state, protocol=4))
        self.crawler.stats.inc_value("chain_state/writes")

    def spider_closed(self, spider: Any) -> None:
        self.write()
