"""No image stored twice by two workers: each is claimed in Redis before it is downloaded.

An item pipeline, after the done ids (``pipelines.seen``) and before the images:
an id another worker stored in this crawl (``done``) or is storing now (``taken``,
while that worker lives) is dropped; one claimed by a worker that died is taken
over. Once stored (``item_scraped``) it is marked done in Redis; if it fails or is
dropped further on, its claim is released. While Redis is away an item waits for
its claim, asking again every second; a stopping worker leaves the image to
whoever walks its page again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from itemadapter import ItemAdapter
from redis.exceptions import RedisError
from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.utils.asyncio import sleep

from civitai_spider.exceptions import RetryLater
from civitai_spider.pipelines.seen import HandledElsewhere
from civitai_spider.shared_crawl.state import SharedCrawl

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


class ClaimPipeline:
    def __init__(self, crawler: Crawler, shared: SharedCrawl) -> None:
        self.crawler = crawler
        self.shared = shared
        self.claimed: set[int] = set()  # ids this worker claimed and has not finished with
        crawler.signals.connect(self.item_scraped, signal=signals.item_scraped)
        crawler.signals.connect(self.item_finished, signal=signals.item_dropped)
        crawler.signals.connect(self.item_finished, signal=signals.item_error)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ClaimPipeline:
        shared = SharedCrawl.for_crawler(crawler)
        if shared is None:
            raise NotConfigured("no CIVITAI_REDIS_URL: a crawl of one process")
        return cls(crawler, shared)

    async def process_item(self, item: Any) -> Any:
        image_id = ItemAdapter(item).get("id")
        stats = self.crawler.stats
        claim = await self._claim(image_id)
        if claim == "done":
            stats.inc_value("done/skipped")
            raise HandledElsewhere(f"image {image_id} was stored by another worker", log_level="DEBUG")
        if claim == "taken":
            stats.inc_value("redis/images/claimed_by_other_worker")
            raise HandledElsewhere(f"image {image_id} is being stored by another worker", log_level="DEBUG")
        if claim == "mine_from_dead":
            stats.inc_value("redis/images/taken_over_from_dead_worker")
        self.claimed.add(image_id)
        return item

    async def _claim(self, image_id: int) -> str:
        while True:
            try:
                return self.shared.claim(image_id)
            except RedisError as exc:
                self.crawler.stats.inc_value("redis/errors")
                if not self.crawler.crawling or not self.crawler.engine.running:  # stopping
                    raise RetryLater(f"image {image_id}: not claimed, Redis unavailable ({exc})") from None
                self.crawler.stats.inc_value("redis/images/claim_waits")
                await sleep(1.0)

    def item_scraped(self, item: Any) -> None:
        image_id = ItemAdapter(item).get("id")
        if image_id not in self.claimed:
            return
        self.claimed.discard(image_id)
        try:
            self.shared.mark_done(image_id)
        except RedisError as exc:  # stored and recorded; its claim keeps others off while we live
            self.crawler.stats.inc_value("redis/errors")
            logger.warning("Image %s stored, but not marked done in Redis (%s)", image_id, exc)

    def item_finished(self, item: Any, **kwargs: Any) -> None:
        """Failed or dropped after its claim: released, for the next walk of its page."""
        image_id = ItemAdapter(item).get("id")
        if image_id not in self.claimed:
            return
        self.claimed.discard(image_id)
        try:
            self.shared.unclaim(image_id)
        except RedisError as exc:  # the claim lapses with this worker's heartbeat
            self.crawler.stats.inc_value("redis/errors")
            logger.warning("Image %s: claim not released in Redis (%s)", image_id, exc)
