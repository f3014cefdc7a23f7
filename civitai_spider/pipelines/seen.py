"""Done ids: skip images already stored, record each image once it is complete.

- At start, the done ids are loaded from ``downloaded_ids.txt`` at the top of the
  store (one id per line: the original script's file can be dropped in), in a
  worker thread. On ``s3://``/``gs://`` that is the plain object plus every
  run's segment objects (``civitai_spider.storage.records.SegmentRecord``), so a job on
  Zyte Scrapy Cloud skips what earlier jobs stored.
- ``process_item`` drops an item whose id is done, before anything is downloaded
  (``done/skipped``), and one whose id is already in flight in this run.
- An id is recorded as done on Scrapy's ``item_scraped`` signal, i.e. only after
  every later pipeline (image AND metadata files) has stored it: appended to
  the record (``done/recorded``): flushed at once to a file, written in
  segments to an object store (at most ``CIVITAI_RECORD_FLUSH_LINES`` ids or
  ``CIVITAI_RECORD_FLUSH_SECONDS`` late, and at close). A failed or dropped
  image is never recorded, so the next run tries it again.

(A shared crawl adds its claims in Redis in a pipeline of its own, right after
this one: ``civitai_spider.shared_crawl.claims``.)
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from itemadapter import ItemAdapter
from scrapy import signals
from scrapy.exceptions import CloseSpider, DropItem, NotConfigured
from scrapy.utils.asyncio import run_in_thread

from civitai_spider.done_ids import IdSet, parse_ids
from civitai_spider.storage import Storage, layout

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)



class AlreadyHandled(DropItem):
    """Dropped here because the id is done or in flight: says nothing about that other copy."""


class HandledElsewhere(DropItem):
    """Dropped further on because another process has stored the image, or is storing it
    (a shared crawl's claims): this copy is finished with, like any other drop."""


class DoneIdsPipeline:
    def __init__(self, crawler: Crawler, storage: Storage) -> None:
        self.crawler = crawler
        self.storage = storage
        self.record = storage.record(layout.DONE_FILE)
        self.done = IdSet()
        self.in_flight: set[int] = set()
        crawler.signals.connect(self.item_scraped, signal=signals.item_scraped)
        crawler.signals.connect(self.item_finished, signal=signals.item_dropped)
        crawler.signals.connect(self.item_finished, signal=signals.item_error)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> DoneIdsPipeline:
        storage = crawler.get_extension(Storage)
        if storage is None:
            raise NotConfigured("no Storage extension (EXTENSIONS): nothing is stored, so nothing is done")
        return cls(crawler, storage)

    async def open_spider(self) -> None:
        # The first pipeline to use the store: a store that cannot be written or read
        # stops the crawl now, with a clear error, before anything is walked.
        try:
            await self.storage.open()
            started = time.perf_counter()
            where = self.record.location
            ids, bad = await run_in_thread(parse_ids, self.record.read_chunks())
        except Exception as exc:
            logger.error("Cannot use the store IMAGES_STORE=%s: %s: %s", self.storage.uri, exc.__class__.__name__, exc)
            raise CloseSpider("store_unwritable") from None
        self.done = IdSet(ids)
        stats = self.crawler.stats
        stats.set_value("done/loaded", self.done.loaded_count)
        if bad:
            stats.set_value("done/unreadable_lines", bad)
            logger.warning("%s: skipped %d lines that are not image ids", where, bad)
        logger.info(
            "Loaded %d done image ids from %s in %.2f s",
            self.done.loaded_count, where, time.perf_counter() - started,
        )

    async def close_spider(self) -> None:
        await self.record.close()

    async def process_item(self, item: Any) -> Any:
        image_id = ItemAdapter(item).get("id")
        if image_id in self.done:
            self.crawler.stats.inc_value("done/skipped")
            raise AlreadyHandled(f"image {image_id} is already stored", log_level="DEBUG")
        if image_id in self.in_flight:
            self.crawler.stats.inc_value("done/in_flight_duplicate")
            raise AlreadyHandled(f"image {image_id} is already being stored", log_level="DEBUG")
        self.in_flight.add(image_id)
        return item

    def item_scraped(self, item: Any) -> None:
        image_id = ItemAdapter(item).get("id")
        if image_id not in self.in_flight:
            return
        self.in_flight.discard(image_id)
        try:
            self.record.append(str(image_id))
        except OSError as exc:  # a full disk: the image is stored but not recorded, so fetched again next run
            self.crawler.stats.inc_value("done/record_errors")
            logger.warning("Image %s stored but not recorded as done (%s): the next run fetches it again", image_id, exc)
            return
        self.done.add(image_id)
        self.crawler.stats.inc_value("done/recorded")

    def item_finished(self, item: Any, response: Any = None, exception: Any = None, failure: Any = None, **kwargs: Any) -> None:
        """An item dropped or failed after this pipeline let it through: no longer in flight."""
        if isinstance(exception, AlreadyHandled) or (failure is not None and isinstance(failure.value, AlreadyHandled)):
            return
        self.in_flight.discard(ItemAdapter(item).get("id"))
