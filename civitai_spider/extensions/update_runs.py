"""Update runs (``-a update=true``): what earlier runs of each query saw, and what this one sees.

Per query (``arguments.CrawlArguments.seen_name``: its chain's API parameters and the
thresholds), the store
keeps ``seen/<name>.ids``: every image id an update run of that query
walked past and saw through the pipelines (stored, dropped by the filter, or
failed). At open, each chain's ids are loaded into a compact set
(``done_ids.IdSet``) for the spider, which stops a chain once
``CIVITAI_UPDATE_STOP_AFTER`` images in a row were seen (``caught_up``).

What this run sees is written only when its walk got all the way: the chain
caught up with the earlier runs, or reached the end of the feed, and the crawl
finished (not stopped, not killed). Then every page it walked is one contiguous
stretch from the top of the feed down to what was seen before, and its ids are
appended in one write (one segment object on ``s3://``/``gs://``), oldest page
first, so that even a write cut short leaves a stretch that joins the earlier
one. A run killed, stopped, or whose chain failed writes nothing: the next
update run walks that stretch again (its stored images skipped by the done-id
record), and no image it did not get to is ever marked seen. A JOBDIR resume
walks from where the killed run was and writes its own stretch at the end;
the one above it is walked again by the next run.

In a shared crawl every worker writes the pages it walked, once the crawl is
finished (``signals.walk_finished`` gives the chains' ends, whichever worker
saw them).
"""

from __future__ import annotations

import logging
import time
from array import array
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.utils.asyncio import run_in_thread

from civitai_spider import signals as civitai_signals
from civitai_spider.done_ids import IdSet, parse_ids
from civitai_spider.storage import Storage, layout

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

WRITTEN_WHEN = ("caught_up", "complete")  # a chain that ended so walked down to what was seen


class UpdateRuns:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.storage: Storage | None = None  # the crawl's (an extension too: looked up once they are all built)
        self.names: dict[str, str] = {}  # chain key -> its seen record's name, in an update run
        self.pages: dict[str, dict[int, array[int]]] = {}  # chain key -> page number -> its ids
        self.statuses: dict[str, str] = {}  # chain key -> how it ended
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)
        crawler.signals.connect(self.page_finished, signal=civitai_signals.page_finished)
        crawler.signals.connect(self.chain_ended, signal=civitai_signals.chain_ended)
        crawler.signals.connect(self.walk_finished, signal=civitai_signals.walk_finished)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> UpdateRuns:
        return cls(crawler)

    async def spider_opened(self, spider: Any) -> None:
        crawl_args = getattr(spider, "crawl_args", None)
        if crawl_args is None or not crawl_args.update:
            return
        self.storage = self.crawler.get_extension(Storage)
        if self.storage is None:
            raise NotConfigured("no Storage extension: nowhere to keep what update runs saw")
        await self.storage.open()
        stats = self.crawler.stats
        for query in crawl_args.queries:
            started = time.perf_counter()
            self.names[query.key] = crawl_args.seen_name(query)
            record = self.storage.record(layout.seen_file(self.names[query.key]))
            ids, _ = await run_in_thread(parse_ids, record.read_chunks())
            spider.seen_before[query.key] = IdSet(ids)
            self.pages[query.key] = {}
            stats.inc_value("update/seen_loaded", len(ids))
            logger.info(
                "Update run, chain %s: %d images seen by earlier update runs (%s, %.2f s)%s", query.key, len(ids),
                record.location, time.perf_counter() - started,
                "" if len(ids) else ": the first update run of this query walks it all",
            )

    def page_finished(self, request: Any, complete: bool, ids: list[int]) -> None:
        pages = self.pages.get(request.meta.get("chain"))
        if pages is not None:
            pages[int(request.meta.get("page", 1))] = array("q", ids)

    def chain_ended(self, chain: str, status: str) -> None:
        self.statuses[chain] = status

    def walk_finished(self, statuses: dict[str, str]) -> None:
        self.statuses.update(statuses)

    async def spider_closed(self, spider: Any, reason: str) -> None:
        if not self.names:
            return
        stats = self.crawler.stats
        stats.set_value("update/pages", sum(len(pages) for pages in self.pages.values()))
        if reason != "finished":
            stats.set_value("update/not_recorded", reason)
            logger.info("Update run stopped (%s): what it saw is not recorded; the next update run walks it again",
                        reason)
            return
        for key, name in self.names.items():
            status = self.statuses.get(key)
            pages = self.pages[key]
            if status not in WRITTEN_WHEN:
                stats.inc_value("update/chains_not_recorded")
                logger.warning("Update run, chain %s: ended %s: what it saw is not recorded (the next update run "
                               "walks it again)", key, status or "unfinished")
                continue
            lines = [str(image_id) for number in sorted(pages, reverse=True) for image_id in pages[number]]
            assert self.storage is not None
            record = self.storage.record(layout.seen_file(name))
            if lines:
                record.extend(lines)
            await record.close()
            stats.inc_value("update/seen_recorded", len(lines))
            logger.info("Update run, chain %s: %s; %d pages walked by this process, %d images recorded as seen in %s",
                        key, status.replace("_", " "), len(pages), len(lines), record.location)
