"""When the store keeps failing, stop the crawl: the policy of the pipelines that write."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from scrapy.utils.defer import deferred_from_coro

from civitai_spider.config import CivitaiConfig

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


class StoreErrors:
    """Consecutive store write failures, counted across every pipeline that writes.

    The count lives in the crawl's stats (``store/consecutive_errors``; every failure
    also adds to ``store/errors``), so the image and metadata pipelines share it. At
    ``CIVITAI_STORE_ERRORS_MAX`` in a row the crawl stops (``store_failing``): a full
    disk or a revoked permission fails every item from then on.
    """

    KEY = "store/consecutive_errors"

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.limit = CivitaiConfig.of(crawler).store_errors_max

    def succeeded(self) -> None:
        self.crawler.stats.set_value(self.KEY, 0)

    def failed(self, exc: BaseException) -> None:
        stats = self.crawler.stats
        stats.inc_value("store/errors")
        count = stats.get_value(self.KEY, 0) + 1
        stats.set_value(self.KEY, count)
        engine = self.crawler.engine
        if self.limit and count >= self.limit and engine is not None and engine.running:
            logger.error(
                "The store failed %d writes in a row (last: %s: %s): stopping the crawl. Images already "
                "stored are kept and recorded; fix the store (disk space, permissions) and run the same "
                "command again to complete the set.",
                count, exc.__class__.__name__, exc,
            )
            deferred_from_coro(engine.close_spider_async(reason="store_failing"))
