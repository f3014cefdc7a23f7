"""The ``civitai`` spider: spider arguments -> queries -> cursor chains -> one item per image.

Each query (see ``civitai_spider.arguments``) is one cursor chain over
``/api/v1/images``. A chain asks for its next page as soon as a page is parsed,
before that page's items go down the pipelines, and ends when a page has no
``nextCursor``, when a cursor comes back that the chain already visited (a
loop), on early stop, or when the API keeps failing for that page. Chains run
concurrently; an image id yielded by one chain is not yielded again.

Resume (with ``-s JOBDIR=DIR``): each chain keeps, in ``spider.state["chains"]``,
the cursor of its oldest page whose items are not all through the pipelines yet
(or of its next page). That state is written to ``JOBDIR/spider.state`` (the
file and pickle format of Scrapy's SpiderState extension, which loads it at
start) atomically, at most every ``CIVITAI_STATE_SAVE_INTERVAL`` seconds while
the crawl runs and again at close. A crawl stopped by Ctrl-C or killed outright
restarts each chain from there: images that were in flight are fetched again,
done ones are skipped by the done-id record. Page requests that Scrapy's own
request queue brings back from the earlier run are ignored (the chains restart
from the state instead), so no chain is walked twice.

Shared crawl (``CIVITAI_REDIS_URL``, see ``civitai_spider.shared_crawl``): page
requests go through scrapy-redis's queue and dupefilter (so they are not
``dont_filter``), and each worker walks whichever pages it takes. A page's lease
is released once its next page is queued and every one of its images has left
the pipelines; the chain's barren-page count travels in the request. Only the
worker that starts the crawl yields the first pages; there is no JOBDIR state
(the queue and the leases in Redis are the resume state).
"""

from __future__ import annotations

import logging
import pickle
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import scrapy
from redis.exceptions import RedisError
from scrapy import signals
from scrapy.downloadermiddlewares.retry import get_retry_request
from scrapy.http import Request, Response
from scrapy.utils.defer import deferred_from_coro
from scrapy.utils.job import job_dir
from twisted.python.failure import Failure

from civitai_spider import api
from civitai_spider.arguments import CrawlArguments, Query, parse_arguments
from civitai_spider.done_ids import IdSet
from civitai_spider.exceptions import RetryLater
from civitai_spider.items import API_FIELDS, CivitaiImage
from civitai_spider.shared_crawl.scheduler import FROM_LEASE, LEASE
from civitai_spider.shared_crawl.state import SharedCrawl
from civitai_spider.atomic_files import write_atomically

logger = logging.getLogger(__name__)


API_SLOT = "civitai-api"
FINISHED = ("complete", "loop", "early_stop")  # a chain in one of these is not walked again


@dataclass
class Chain:
    """The walking state of one cursor chain."""

    query: Query
    # cursors, in walk order -> the cursor of the page that gave each (None: the first page)
    visited: dict[str, str | None] = field(default_factory=dict)
    pages: int = 0
    barren_pages: int = 0  # consecutive pages with no image meeting the minimum thresholds
    next_cursor: str | None = None  # cursor of the page requested next (None: the first page)
    status: str = "walking"  # "walking", "failed" or one of FINISHED
    # Pages whose items are still in the pipelines: sequence number -> [cursor, items left].
    in_flight: dict[int, list[Any]] = field(default_factory=dict)
    sequence: int = 0

    def snapshot(self) -> dict[str, Any]:
        """What a resumed crawl needs: where to restart, and whether there is anything left."""
        oldest = next(iter(self.in_flight.values()), None)
        finished = self.status in FINISHED and oldest is None
        cursor = oldest[0] if oldest else self.next_cursor
        # Cursors up to the restart point: the walk from there will visit the later ones again.
        visited = list(self.visited)
        visited = visited[: visited.index(cursor) + 1] if cursor in self.visited else []
        return {
            "cursor": cursor,
            "status": self.status if finished else "walking",
            "visited": visited,
            "pages": self.pages,
            "barren_pages": self.barren_pages,
        }

    @classmethod
    def restore(cls, query: Query, saved: dict[str, Any]) -> Chain:
        visited = list(saved.get("visited", ()))
        return cls(
            query,
            visited=dict(zip(visited, [None, *visited[:-1]])),
            pages=saved.get("pages", 0),
            barren_pages=saved.get("barren_pages", 0),
            next_cursor=saved.get("cursor"),
            status=saved.get("status", "walking"),
        )


class CivitaiSpider(scrapy.Spider):
    name = "civitai"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Arguments are parsed here, not set as attributes: a bad one stops the
        # crawl before any request is made.
        self.crawl_args: CrawlArguments = self.check_arguments(kwargs)
        super().__init__(*args, name=kwargs.pop("name", None))
        self._chains: dict[str, Chain] = {}
        self._yielded_ids = IdSet()  # compact: a long walk does not grow memory by ~60 bytes an id
        self._item_pages: dict[int, tuple[Chain, int]] = {}  # image id -> its page in flight
        self._run = secrets.token_hex(4)  # marks this process' page requests
        self._state_file: Path | None = None
        self._state_saved_at = 0.0
        self.shared: SharedCrawl | None = None
        self.seeds_crawl = True  # in a shared crawl: set by the scheduler when it opens

    @classmethod
    def check_arguments(cls, kwargs: dict[str, Any]) -> CrawlArguments:
        """Parse and validate spider arguments; raises ``ArgumentError`` on a bad one."""
        return parse_arguments(kwargs)

    @classmethod
    def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> CivitaiSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        settings = crawler.settings
        spider.api_url = settings.get("CIVITAI_API_URL")
        spider.page_limit = settings.getint("CIVITAI_PAGE_LIMIT")
        if not 1 <= spider.page_limit <= api.MAX_LIMIT:
            raise ValueError(f"CIVITAI_PAGE_LIMIT must be 1..{api.MAX_LIMIT}, got {spider.page_limit}")
        early_stop = settings.getint("CIVITAI_EARLY_STOP_PAGES")
        use_early_stop = (
            early_stop > 0
            and spider.crawl_args.sorted_by_reactions
            and bool(spider.crawl_args.thresholds.minimum)
        )
        spider.early_stop_pages = early_stop if use_early_stop else 0
        hosts = settings.getlist("CIVITAI_IMAGE_HOSTS")
        api_host = urlsplit(spider.api_url).hostname
        # The API's own host is trusted too (it is what the user pointed us at).
        spider.image_hosts = (*hosts, api_host) if hosts and api_host else tuple(hosts)
        spider.max_meta_depth = settings.getint("CIVITAI_META_MAX_DEPTH", 64)
        jobdir = job_dir(settings)
        spider._state_file = Path(jobdir, "spider.state") if jobdir else None
        spider.state_save_interval = settings.getfloat("CIVITAI_STATE_SAVE_INTERVAL", 1.0)
        spider.shared = SharedCrawl.for_crawler(crawler)
        if spider.shared is not None:
            spider._state_file = None  # the queue and the leases in Redis are the resume state
        for signal in (signals.item_scraped, signals.item_dropped, signals.item_error):
            crawler.signals.connect(spider._item_left_pipelines, signal=signal)
        return spider

    async def start(self) -> AsyncIterator[Request]:
        state = getattr(self, "state", None)  # set by Scrapy's SpiderState when JOBDIR is on
        saved = state.get("chains", {}) if isinstance(state, dict) and self.shared is None else {}
        stats = self.crawler.stats
        if self.shared is not None and not self.seeds_crawl:
            for query in self.crawl_args.queries:  # pages of every chain may come to this worker
                self._chains[query.key] = Chain(query)
            return
        for query in self.crawl_args.queries:
            chain = Chain.restore(query, saved[query.key]) if query.key in saved else Chain(query)
            self._chains[query.key] = chain
            if chain.status in FINISHED:
                logger.info("Chain %s: already %s in an earlier run of this job", query.key, chain.status)
                stats.inc_value("api/chains/already_finished")
                continue
            chain.status = "walking"
            if query.key in saved:
                stats.inc_value("api/chains/resumed")
                logger.info("Chain %s: resuming at cursor %r (page %d)", query.key, chain.next_cursor, chain.pages + 1)
            else:
                stats.inc_value("api/chains/started")
                logger.info("Chain %s: starting", query.key)
            yield self.page_request(query.key, cursor=chain.next_cursor)
        self._save_state(force=True)

    def page_request(self, chain_key: str, cursor: str | None) -> Request:
        chain = self._chains[chain_key]
        url = api.page_url(self.api_url, chain.query.params, cursor, self.page_limit)
        return Request(
            url,
            callback=self.parse_page,
            errback=self.page_failed,
            # One process: loops are caught per chain below, and the dupefilter must
            # not drop a page that a resumed crawl asks for again. Shared crawl: the
            # shared dupefilter is what drops a page asked for twice.
            dont_filter=self.shared is None,
            meta={
                "chain": chain_key,
                "cursor": cursor,
                "run": self._run,
                "barren": chain.barren_pages,
                "handle_httpstatus_all": True,
                # Its own download slot: API pages never queue behind image downloads.
                "download_slot": API_SLOT,
            },
        )

    def _is_stale(self, request: Request) -> bool:
        """A page request of an earlier run of this job, brought back by Scrapy's request queue."""
        if request.meta.get("chain") in self._chains and (self.shared is not None or request.meta.get("run") == self._run):
            return False
        self.crawler.stats.inc_value("api/pages/stale_from_earlier_run")
        return True

    def parse_page(self, response: Response) -> Iterator[Request | CivitaiImage]:
        if self._is_stale(response.request):
            return
        chain = self._chains[response.meta["chain"]]
        lease = response.meta.get(LEASE)
        if response.status != 200:
            self._end_chain(chain, f"http_{response.status}", response, lease=lease)
            return
        try:
            page = api.parse_page(response.body)
        except api.PageError as exc:
            retry = get_retry_request(response.request, spider=self, reason="api_invalid_json")
            if retry is not None:
                yield retry  # a leased page: the scheduler queues it and drops the lease
            else:
                self._end_chain(chain, "invalid_json", response, detail=str(exc), lease=lease)
            return
        if self.shared is not None:  # the count so far travels with the chain's requests
            chain.barren_pages = response.meta.get("barren", 0)

        stats = self.crawler.stats
        chain.pages += 1
        stats.inc_value("api/pages")
        stats.inc_value("api/items", len(page.items))
        if not page.items:
            stats.inc_value("api/pages/empty")

        items = list(self._items(chain, page.items))
        if items:  # registered before any of them can finish
            chain.sequence += 1
            chain.in_flight[chain.sequence] = [response.meta["cursor"], len(items), lease]
            for item in items:
                self._item_pages[item["id"]] = (chain, chain.sequence)
        next_request = self._next_page(chain, page, response.meta["cursor"])
        self._save_state()
        if next_request is not None:
            if lease is not None:  # this page stays leased while its next page cannot be queued
                next_request.meta[FROM_LEASE] = lease
            yield next_request
        yield from items
        if not items:  # runs once the next page request is scheduled
            self._release(lease)

    def _next_page(self, chain: Chain, page: api.Page, page_cursor: str | None) -> Request | None:
        stats = self.crawler.stats
        if self.early_stop_pages:
            thresholds = self.crawl_args.thresholds
            if any(isinstance(raw, dict) and thresholds.meets_minimums(raw.get("stats")) for raw in page.items):
                chain.barren_pages = 0
            else:
                chain.barren_pages += 1
            if chain.barren_pages >= self.early_stop_pages:
                logger.info(
                    "Chain %s: early stop after %d consecutive pages with no image meeting "
                    "the thresholds (sorted by Most Reactions, AllTime); %d pages walked",
                    chain.query.key, chain.barren_pages, chain.pages,
                )
                stats.inc_value("api/chains/early_stop")
                chain.status = "early_stop"
                self._shared_chain_status(chain)
                return None
        cursor = page.next_cursor
        if cursor is None:
            logger.info("Chain %s: complete after %d pages", chain.query.key, chain.pages)
            stats.inc_value("api/chains/completed")
            chain.status = "complete"
            self._shared_chain_status(chain)
            return None
        if cursor in chain.visited and chain.visited[cursor] == page_cursor:
            # The same page walked again (a shared crawl's page handed back to this worker):
            # asked for again, and the shared dupefilter drops it if it was queued already.
            stats.inc_value("api/pages/walked_again")
            return self.page_request(chain.query.key, cursor)
        if cursor in chain.visited:
            logger.warning(
                "Chain %s: the API sent back cursor %r, already visited in this chain: "
                "ending the chain to avoid a loop (%d pages walked)",
                chain.query.key, cursor, chain.pages,
            )
            stats.inc_value("api/chains/loop")
            chain.status = "loop"
            self._shared_chain_status(chain)
            return None
        chain.visited[cursor] = page_cursor
        chain.next_cursor = cursor
        return self.page_request(chain.query.key, cursor)

    def _items(self, chain: Chain, raw_items: list[Any]) -> Iterator[CivitaiImage]:
        stats = self.crawler.stats
        for raw in raw_items:
            try:
                if not isinstance(raw, dict):
                    raise api.InvalidItem("not_an_object", type(raw).__name__)
                image_id = api.image_id(raw)
                url = api.image_url(raw, self.image_hosts)
                if api.nesting_depth(raw.get("meta"), self.max_meta_depth) > self.max_meta_depth:
                    raise api.InvalidItem("meta_too_deep", f"image {image_id}: over {self.max_meta_depth} levels")
            except api.InvalidItem as exc:
                logger.warning("Chain %s: skipping an API item: %s", chain.query.key, exc)
                stats.inc_value(f"api/items/invalid/{exc.reason}")
                continue
            if image_id in self._yielded_ids or image_id in self._item_pages:
                stats.inc_value("api/items/duplicate")
                continue
            self._yielded_ids.add(image_id)
            item = CivitaiImage({k: raw[k] for k in API_FIELDS if k in raw})
            item["id"] = image_id
            item["meta"] = api.normalise_meta(raw.get("meta"))
            item["query"] = chain.query.key
            item["image_urls"] = [url]
            yield item

    def _item_left_pipelines(self, item: Any, exception: Any = None, failure: Any = None, **kwargs: Any) -> None:
        """An item left the pipelines. Stored, or dropped for good (filtered, already done):
        its page is one item closer to finished. Failed, or left by a stopping crawl
        (``RetryLater``), or broken by an error: its page stays unfinished, so a resumed
        job walks it again and retries the item."""
        image_id = item.get("id") if isinstance(item, (dict, CivitaiImage)) else None
        entry = self._item_pages.pop(image_id, None) if isinstance(image_id, int) else None
        if entry is None:
            return
        if self.shared is None:
            if isinstance(exception, RetryLater) or failure is not None:
                return
        elif isinstance(exception, RetryLater) and not self.crawler.engine.running:
            # A shared crawl has no next run of this job: a failed image is in
            # failures.jsonl and its page goes on. Only an image left by a stopping
            # worker keeps the page leased, to be put back in the queue at close.
            return
        chain, sequence = entry
        page = chain.in_flight[sequence]
        page[1] -= 1
        if page[1] == 0:
            del chain.in_flight[sequence]
            self._save_state()
            self._release(page[2])

    def _release(self, lease: str | None) -> None:
        """A shared crawl's page is through: its lease goes (nothing to do in one process)."""
        if lease is not None and self.shared is not None:
            if self.shared.release(lease):
                self.crawler.stats.inc_value("redis/pages/released")
            else:  # its next page not queued yet, or Redis away: the worker loop releases it later
                self.crawler.stats.inc_value("redis/pages/release_delayed")

    def _shared_chain_status(self, chain: Chain) -> None:
        if self.shared is not None:
            try:
                self.shared.set_chain(chain.query.key, chain.status)
            except RedisError as exc:  # a record for people reading Redis; the walk does not need it
                logger.warning("Chain %s: status %r not recorded in Redis (%s)", chain.query.key, chain.status, exc)

    def _save_state(self, force: bool = False) -> None:
        """Chain positions into ``spider.state``; with JOBDIR, also onto disk now and then."""
        state = getattr(self, "state", None)
        if not isinstance(state, dict):
            return
        state["chains"] = {key: chain.snapshot() for key, chain in self._chains.items()}
        now = time.monotonic()
        if self._state_file is None or (not force and now - self._state_saved_at < self.state_save_interval):
            return
        self._state_saved_at = now
        write_atomically(self._state_file, pickle.dumps(state, protocol=4))

    def closed(self, reason: str) -> None:
        self._save_state()  # into spider.state: Scrapy's SpiderState writes it at close

    def page_failed(self, failure: Failure) -> None:
        request = failure.request  # type: ignore[attr-defined]
        if self._is_stale(request):
            return
        chain = self._chains[request.meta["chain"]]
        self._end_chain(
            chain, failure.value.__class__.__name__, None, detail=str(failure.value), url=request.url,
            lease=request.meta.get(LEASE),
        )

    def _end_chain(
        self,
        chain: Chain,
        reason: str,
        response: Response | None,
        detail: str = "",
        url: str = "",
        lease: str | None = None,
    ) -> None:
        if response is not None:
            url = response.url
            detail = "; ".join(filter(None, [detail, f"body starts {response.body[:200]!r}"]))
        logger.error(
            "Chain %s: ended after %d pages: %s at %s (%s); other chains go on",
            chain.query.key, chain.pages, reason, url, detail,
        )
        chain.status = "failed"  # a later run of the job tries this chain again
        self.crawler.stats.inc_value(f"api/chains/failed/{reason}")
        self._save_state()
        if reason in ("http_401", "http_403"):
            logger.error(
                "The API refused this crawl (%s): the API key is missing, wrong or lacks access. "
                "Set CIVITAI_API_KEY (environment variable or -s CIVITAI_API_KEY=...).", reason,
            )
            # A shared crawl: this worker's key is refused, not the chain: the page stays
            # leased and goes back to the queue when this worker closes, for the others.
            self._close("api_key_rejected")
            return
        self._shared_chain_status(chain)
        self._release(lease)
        all_started = len(self._chains) == len(self.crawl_args.queries)
        if all_started and not self.crawler.stats.get_value("api/pages") and all(
            c.status in ("failed", *FINISHED) for c in self._chains.values()
        ):
            logger.error(
                "Could not use the API at %s: no chain got a single page (last: %s, %s)", self.api_url, reason, detail
            )
            self._close("api_unavailable")

    def _close(self, reason: str) -> None:
        """Close the crawl with ``reason`` (from a callback or an errback, without a traceback)."""
        deferred_from_coro(self.crawler.engine.close_spider_async(reason=reason))
