"""scrapy-redis's scheduler, with each taken page leased to its worker until it is through.

Stock scrapy-redis pops a request and forgets it: a worker killed after the pop
loses the page, and with it the rest of its cursor chain. Here the pop moves the
request into the crawl's ``leases`` hash in the same Lua script
(``state.POP_SCRIPT``); ``workers.WorkerLoop`` releases the lease once the spider
says the page is through (``signals.page_finished``), and puts the pages of dead
or stopping workers back in the queue. Starting the crawl queues the first page
of every chain (``CivitaiSpider.first_pages``) in the same step. A new page request is
marked seen and queued in one Lua step too (``state.ENQUEUE_SCRIPT``), where
scrapy-redis makes two calls. Everything else (request serialisation, the
fingerprints, ``SCHEDULER_PERSIST``) is scrapy-redis's.

A worker takes at most ``CIVITAI_REDIS_PAGES_PER_WORKER`` pages at once, so the
pages (and their images) spread over the workers instead of piling up on the
first one.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError
from scrapy.utils.asyncio import sleep
from scrapy.utils.defer import deferred_from_coro
from scrapy.utils.misc import load_object
from scrapy_redis.scheduler import Scheduler

from civitai_spider.config import CivitaiConfig
from civitai_spider.shared_crawl.state import (
    SharedCrawl,
    SharedCrawlError,
    arguments_fingerprint,
)

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from twisted.internet.defer import Deferred

logger = logging.getLogger(__name__)

LEASE = "civitai_lease"  # request.meta key: the lease a page request was taken under
FROM_LEASE = "civitai_from_lease"  # request.meta key: the lease of the page that asked for this one


class LeasingScheduler(Scheduler):
    """scrapy-redis's ``Scheduler`` whose ``next_request`` leases the page it hands out."""

    crawler: Crawler
    shared: SharedCrawl

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> LeasingScheduler:
        settings = crawler.settings
        shared = SharedCrawl.for_crawler(crawler)
        if shared is None:
            raise ValueError("LeasingScheduler needs CIVITAI_REDIS_URL")
        # Like scrapy-redis's from_settings, without its ping at build time (a Redis that
        # cannot be reached becomes a clean close in open(), not a traceback).
        scheduler = cls(
            server=shared.server,
            persist=True,
            queue_key=settings.get("SCHEDULER_QUEUE_KEY"),
            queue_cls="scrapy_redis.queue.PriorityQueue",
            dupefilter_key=settings.get("SCHEDULER_DUPEFILTER_KEY"),
            dupefilter_cls=settings.get("DUPEFILTER_CLASS"),
        )
        scheduler.stats = crawler.stats
        scheduler.crawler = crawler
        scheduler.shared = shared
        scheduler.pages_per_worker = CivitaiConfig.of(crawler).redis_pages_per_worker
        scheduler._warned_at = -60.0
        return scheduler

    def open(self, spider: Any) -> Deferred[None]:
        return deferred_from_coro(self._open(spider))

    async def _open(self, spider: Any) -> None:
        # scrapy-redis's open(), without its deprecated spider.log() call: the queue and the
        # dupefilter encode and fingerprint the first pages, queued as the crawl starts.
        self.spider = spider
        self.queue = load_object(self.queue_cls)(
            server=self.server, spider=spider, key=self.queue_key % {"spider": spider.name}, serializer=self.serializer,
        )
        if not self.df:
            self.df = load_object(self.dupefilter_cls).from_spider(spider)
        description = f"{spider.crawl_args!r} api={spider.api_url}"
        first = spider.first_pages()  # queued with the crawl if this worker starts it
        seeds = [(self.df.request_fingerprint(request), self.encode(request), -request.priority)
                 for request in first]
        try:
            started = await self._join(description, seeds)
        except SharedCrawlError as exc:
            # Closed by WorkerLoop once the spider is open: a CloseSpider from here, before
            # the scraper is open, makes Scrapy 2.19 log a "Scraper close failure" traceback.
            logger.error("%s", exc)
            self.shared.refusal = exc.reason
            return
        if started:
            self.stats.inc_value("scheduler/enqueued/redis", len(seeds))
            self.stats.inc_value("api/chains/started", len(seeds))
            logger.info("Chains started: %s", ", ".join(request.meta["chain"] for request in first))

    async def _join(self, description: str, seeds: list[tuple[str, bytes, float]]) -> bool:
        """``SharedCrawl.open`` as CIVITAI_REDIS_START says. Workers started together with
        ``resume`` wait up to CIVITAI_REDIS_JOIN_WAIT s for another one to create the crawl."""
        config = CivitaiConfig.of(self.crawler)
        mode = config.redis_start
        deadline = time.monotonic() + config.redis_join_wait
        fingerprint = arguments_fingerprint(description)
        while True:
            try:
                return self.shared.open(mode, fingerprint, description, seeds)
            except SharedCrawlError as exc:
                if exc.reason != "redis_no_crawl" or time.monotonic() >= deadline:
                    raise
                if not self.stats.get_value("redis/waited_for_crawl"):
                    logger.info("No crawl %r in Redis yet: waiting for it to be started", self.shared.crawl)
                self.stats.inc_value("redis/waited_for_crawl")
                await sleep(0.25)

    def close(self, reason: str) -> None:
        if not self.shared.joined:
            return
        super().close(reason)  # persist=True: the queue and the dupefilter stay in Redis

    def has_pending_requests(self) -> bool:
        if not self.shared.joined:
            return False
        try:
            return super().has_pending_requests()
        except RedisError:  # Redis away: not idle (the worker loop decides when the crawl ends)
            return True

    # scrapy-redis's queue (de)serialises requests in private methods: used here only, so that
    # what goes into Redis is exactly what its own queue would put there.
    def encode(self, request: Request) -> bytes:
        return self.queue._encode_request(request)

    def decode(self, data: bytes) -> Request:
        return self.queue._decode_request(data)

    def enqueue_request(self, request: Request) -> bool:
        lease = request.meta.pop(LEASE, None)
        from_lease = request.meta.pop(FROM_LEASE, None)
        data = self.encode(request)
        score = -request.priority
        if lease is None:
            # scrapy-redis's request_seen and queue push, in one Lua step (see state.ENQUEUE_SCRIPT);
            # its dupefilter still gives the fingerprint and its queue the encoding and the score.
            # Every new page request is fingerprinted, dont_filter or not: a page asked for twice
            # (walked again after a worker died, a cursor loop) is dropped here.
            fingerprint = self.df.request_fingerprint(request)
            try:
                if not self.shared.enqueue(fingerprint, data, score):
                    self.df.log(request, self.spider)
                    self.stats.inc_value("dupefilter/filtered")
                    return False
            except RedisError as exc:
                self.shared.hold_push(fingerprint, data, score, from_lease)
                self._redis_away("queue a page", exc)
            self.stats.inc_value("scheduler/enqueued/redis")
            return True
        # A leased page asked for again (a retry, with dont_filter): queued, and its lease
        # dropped, in one step.
        try:
            self.shared.requeue(lease, data, score)
        except RedisError as exc:
            self.shared.hold_requeue(lease, data, score)
            self._redis_away("queue a page again", exc)
        self.stats.inc_value("redis/pages/requeued_retry")
        return True

    def _redis_away(self, what: str, exc: RedisError) -> None:
        """Count and report a Redis call that failed; one warning a minute at most."""
        self.stats.inc_value("redis/errors")
        now = time.monotonic()
        if now - self._warned_at >= 60.0:
            self._warned_at = now
            logger.warning(
                "Redis unavailable (%s: %s): could not %s; this worker waits and tries again "
                "(%d writes held)", exc.__class__.__name__, exc, what, self.shared.held(),
            )

    def next_request(self) -> Request | None:
        if not self.shared.joined or len(self.shared.leases) >= self.pages_per_worker:
            return None
        try:
            if self.shared.held():
                self.shared.flush()
            taken = self.shared.take_page()
        except RedisError as exc:
            self._redis_away("take a page", exc)
            return None
        if taken is None:
            return None
        lease, data = taken
        request = self.decode(data)
        request.meta[LEASE] = lease
        self.stats.inc_value("redis/pages/leased")
        self.stats.inc_value("scheduler/dequeued/redis")
        return request
