"""One worker's part in a shared crawl: heartbeat, reaping dead workers, leases, idling, leaving.

- A page's lease is released once the spider says the page is through
  (``signals.page_finished``: every image of it out of the pipelines, its next
  page asked for); a chain's end (``signals.chain_ended``) is recorded in Redis's
  ``chains`` hash, for people reading Redis.

- Every ``CIVITAI_REDIS_WORKER_TIMEOUT / 3`` seconds the worker renews its key
  (``worker:<id>``, expiring after the timeout) and puts back in the queue the
  leased pages of every worker whose key has expired (killed, or cut off): the
  pages are walked again by whoever takes them, their images claimed again
  (the dead worker's claims lapse with its key) and the done ones skipped.
- Scrapy's engine asks the scheduler for work on its own every 5 s when idle;
  every ``CIVITAI_REDIS_POLL_INTERVAL`` seconds this wakes it, so a page queued by
  another worker is taken at once.
- An idle worker stays up (``DontCloseSpider``) while any page is queued or
  leased anywhere: another worker's page may still queue the next one. When
  nothing is queued and nothing leased, the crawl is finished: recorded in
  ``info`` and every worker closes with reason ``finished``.
- At close (Ctrl-C, ``CLOSESPIDER_*``, a failing store), the pages this worker
  still holds go back to the queue at once, and its key is deleted.
- While Redis is away, the worker waits: page requests it could not queue and
  leases it could not release are held (``SharedCrawl.flush`` does them on the
  first beat that reaches Redis again; a page stays leased until its next page
  is queued), items wait for their claim, and no worker reaps another for one
  timeout after Redis is back (every key may have lapsed with it).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError
from scrapy import signals
from scrapy.exceptions import CloseSpider, DontCloseSpider, NotConfigured
from twisted.internet.task import LoopingCall

from civitai_spider import signals as civitai_signals
from civitai_spider.config import CivitaiConfig
from civitai_spider.shared_crawl.scheduler import LEASE
from civitai_spider.shared_crawl.state import SharedCrawl

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


class WorkerLoop:
    def __init__(self, crawler: Crawler, shared: SharedCrawl) -> None:
        self.crawler = crawler
        self.shared = shared
        self.beat_interval = max(0.1, shared.worker_timeout / 3)
        self.poll_interval = CivitaiConfig.of(crawler).redis_poll_interval
        self._beat: LoopingCall | None = None
        self._poll: LoopingCall | None = None
        # After Redis was away, every worker's key may have lapsed with it: no reaping
        # until then + one timeout, so that the live ones have beaten again.
        self._reap_after = 0.0
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self.spider_idle, signal=signals.spider_idle)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)
        crawler.signals.connect(self.page_finished, signal=civitai_signals.page_finished)
        crawler.signals.connect(self.chain_ended, signal=civitai_signals.chain_ended)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> WorkerLoop:
        shared = SharedCrawl.for_crawler(crawler)
        if shared is None:
            raise NotConfigured("no CIVITAI_REDIS_URL: a crawl of one process")
        return cls(crawler, shared)

    def page_finished(self, request: Any, complete: bool) -> None:
        """The page is through: its lease goes (held while its next page is not queued yet, or
        while Redis is away: then released by a later beat)."""
        lease = request.meta.get(LEASE)
        if lease is None:
            return
        if self.shared.release(lease):
            self.crawler.stats.inc_value("redis/pages/released")
        else:
            self.crawler.stats.inc_value("redis/pages/release_delayed")

    def chain_ended(self, chain: str, status: str) -> None:
        try:
            self.shared.set_chain(chain, status)
        except RedisError as exc:  # a record for people reading Redis; the walk does not need it
            logger.warning("Chain %s: status %r not recorded in Redis (%s)", chain, status, exc)

    def _refused(self) -> bool:
        return not self.shared.joined

    def spider_opened(self, spider: Any) -> None:
        if self.shared.refusal:
            raise CloseSpider(self.shared.refusal)
        if self._refused():
            return
        logger.info("Worker %s on crawl %r (timeout %.0f s)", self.shared.worker, self.shared.crawl, self.shared.worker_timeout)
        self._beat = LoopingCall(self.beat)
        self._beat.start(self.beat_interval, now=True).addErrback(self._loop_failed, "heartbeat")
        if self.poll_interval > 0:
            self._poll = LoopingCall(self.wake_engine)
            self._poll.start(self.poll_interval, now=False).addErrback(self._loop_failed, "poll")

    def beat(self) -> None:
        moved = 0
        try:
            self.shared.heartbeat()
            if time.monotonic() >= self._reap_after:
                moved = self.shared.reap_dead()
            if self.shared.held():  # writes that failed while Redis was away
                self.shared.flush()
                logger.info("Redis is back: the writes held while it was away are done")
        except RedisError as exc:  # Redis away for a moment: try again next beat
            self.crawler.stats.inc_value("redis/heartbeat_errors")
            self._reap_after = time.monotonic() + self.shared.worker_timeout
            logger.warning("Redis heartbeat failed (%s: %s); retrying", exc.__class__.__name__, exc)
            return
        if moved:
            self.crawler.stats.inc_value("redis/pages/requeued_from_dead_workers", moved)
            logger.warning("Put %d pages of workers that stopped answering back in the queue", moved)

    def wake_engine(self) -> None:
        """Have the engine ask the scheduler for a page now (it would wait up to 5 s when idle).

        Scrapy has no public call for this; ``engine._slot.nextcall`` is what its own
        heartbeat schedules.
        """
        slot = getattr(self.crawler.engine, "_slot", None)
        nextcall = getattr(slot, "nextcall", None)
        if nextcall is not None and self.crawler.engine.running:
            nextcall.schedule()

    def _loop_failed(self, failure: Any, name: str) -> None:
        logger.error("Shared-crawl %s loop stopped: %s", name, failure.getErrorMessage())

    def spider_idle(self, spider: Any) -> None:
        if self._refused():
            return
        if self.shared.held():  # writes waiting for Redis: not finished whatever Redis says
            raise DontCloseSpider
        try:
            finished = self.shared.finished()
        except RedisError as exc:
            self.crawler.stats.inc_value("redis/errors")
            logger.debug("Redis unavailable while idle (%s); waiting", exc)  # the heartbeat warns
            raise DontCloseSpider from None
        if finished:
            if self.shared.mark_finished():
                logger.info("Crawl %r is finished: no page queued or leased", self.shared.crawl)
            try:
                statuses = self.shared.chains()
            except RedisError:
                statuses = {}  # chains this worker did not see end count as unfinished
            self.crawler.signals.send_catch_log(civitai_signals.walk_finished, statuses=statuses)
            return
        raise DontCloseSpider

    def spider_closed(self, spider: Any, reason: str) -> None:
        for loop in (self._beat, self._poll):
            if loop is not None and loop.running:
                loop.stop()
        if self._refused():
            return
        try:
            moved = self.shared.requeue_mine()
            self.shared.leave()
        except RedisError as exc:
            logger.error(
                "Could not hand back this worker's pages (%s: %s): other workers take them once its "
                "heartbeat expires (%.0f s)", exc.__class__.__name__, exc, self.shared.worker_timeout,
            )
            return
        if moved:
            self.crawler.stats.inc_value("redis/pages/requeued_on_close", moved)
            logger.info("Put the %d pages this worker had not finished back in the queue", moved)
