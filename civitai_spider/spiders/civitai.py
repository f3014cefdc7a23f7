"""The ``civitai`` spider: spider arguments -> queries -> cursor chains -> one item per image.

Each query (see ``civitai_spider.arguments``) is one cursor chain over
``/api/v1/images``. A chain asks for its next page as soon as a page is parsed,
before that page's items go down the pipelines, and ends when a page has no
``nextCursor``, when a cursor comes back that the chain already visited (a
loop), on early stop, when the API keeps failing for that page, or when a page
shows that the API ignored the query's filters. Chains run concurrently; an
image id yielded by one chain is not yielded again.

Early stop is exact: with ``sort=Most Reactions`` (or ``Most Comments``) pages
come in the order of one number (likes + hearts + laughs + cries; comments), so
once a page's last image is below the sum of the matching ``min_*`` thresholds,
every later image is too. It is off for a chain whose query Civitai answers from
its database (``api.database_path``), and for one whose page comes back out of
order.

Items that contradict their query (``api.ItemFilter``: another user, post, level,
type or base model) are never yielded; a page with nothing but such items ends
its chain (``filter_ignored``) and the crawl closes ``api_filter_ignored`` once
the other chains are done.

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
the pipelines; whether the chain may stop early travels in the request. Only the
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
from scrapy.exceptions import CloseSpider
from scrapy.http import Request, Response
from scrapy.utils.asyncio import CallLaterResult, call_later
from scrapy.utils.defer import deferred_from_coro
from scrapy.utils.job import job_dir
from twisted.python.failure import Failure

from civitai_spider import api
from civitai_spider.arguments import CrawlArguments, Query, parse_arguments
from civitai_spider.done_ids import IdSet
from civitai_spider.exceptions import RetryLater
from civitai_spider.items import API_FIELDS, CivitaiImage
from civitai_spider.middlewares import API_PAGE, PAGE, failure_words
from civitai_spider.shared_crawl.scheduler import FROM_LEASE, LEASE
from civitai_spider.shared_crawl.state import SharedCrawl
from civitai_spider.storage.atomic import write_atomically

logger = logging.getLogger(__name__)


API_SLOT = "civitai-api"
FINISHED = ("complete", "loop", "early_stop")  # a chain in one of these is not walked again
FILTER_IGNORED = "filter_ignored"


@dataclass
class Chain:
    """The walking state of one cursor chain."""

    query: Query
    # cursors, in walk order -> the cursor of the page that gave each (None: the first page)
    visited: dict[str, str | None] = field(default_factory=dict)
    pages: int = 0  # pages this run walked
    next_cursor: str | None = None  # cursor of the page requested next (None: the first page)
    next_page: int = 1  # its number in the chain
    reached: int = 0  # the highest page number walked, in this run or an earlier one of the job
    again: int = 0  # pages this run walked again after a resume (at or below ``reached``)
    status: str = "walking"  # "walking", "failed" or one of FINISHED
    # Pages whose items are still in the pipelines: sequence number -> [cursor, items left, lease, page number].
    in_flight: dict[int, list[Any]] = field(default_factory=dict)
    sequence: int = 0

    def snapshot(self) -> dict[str, Any]:
        """What a resumed crawl needs: where to restart, and whether there is anything left."""
        oldest = next(iter(self.in_flight.values()), None)
        finished = self.status in FINISHED and oldest is None
        cursor, page = (oldest[0], oldest[3]) if oldest else (self.next_cursor, self.next_page)
        # Cursors up to the restart point: the walk from there will visit the later ones again.
        visited = list(self.visited)
        visited = visited[: visited.index(cursor) + 1] if cursor in self.visited else []
        return {
            "cursor": cursor,
            "page": page,
            "reached": self.reached,
            "status": self.status if finished else "walking",
            "visited": visited,
        }

    @classmethod
    def restore(cls, query: Query, saved: dict[str, Any]) -> Chain:
        visited = list(saved.get("visited", ()))
        return cls(
            query,
            visited=dict(zip(visited, [None, *visited[:-1]])),
            next_cursor=saved.get("cursor"),
            next_page=saved.get("page", len(visited) + 1),
            reached=saved.get("reached", 0),
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
        self._filters = {q.key: api.ItemFilter.from_params(q.params) for q in self.crawl_args.queries}
        self._floors: dict[str, int] = {}  # chain key -> its early-stop floor (0: none)
        self._filter_ignored: dict[str, str] = {}  # chain key -> the filters the API ignored
        self._yielded_ids = IdSet()  # compact: a long walk does not grow memory by ~60 bytes an id
        self._item_pages: dict[int, tuple[Chain, int]] = {}  # image id -> its page in flight
        self._run = secrets.token_hex(4)  # marks this process' page requests
        self._state_file: Path | None = None
        self._state_saved_at = 0.0
        self._state_write: CallLaterResult | None = None  # a write due at the end of the interval
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
        spider._plan_early_stop(settings.getbool("CIVITAI_EARLY_STOP"))
        if any(q.params.get("nsfw") == "true" for q in spider.crawl_args.queries):
            logger.warning(
                "nsfw=true asks Civitai for R, X and XXX only: PG and PG-13 images are left out. "
                "For every level use browsing_level=PG+PG13+R+X+XXX (or nsfw=X)."
            )
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
        crawler.signals.connect(spider._idle, signal=signals.spider_idle)
        return spider

    def _plan_early_stop(self, enabled: bool) -> None:
        """Each chain's early-stop floor; the chains without one are logged once per reason."""
        without: dict[str, list[str]] = {}
        for query in self.crawl_args.queries:
            floor, why_not = self.crawl_args.early_stop(query) if enabled else (0, "CIVITAI_EARLY_STOP is off")
            self._floors[query.key] = floor
            if not floor and self.crawl_args.thresholds.minimum:
                without.setdefault(why_not, []).append(query.key)
        for why_not, keys in without.items():
            shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
            logger.info("No early stop for chain%s %s: %s; every page is walked",
                        "s" if len(keys) > 1 else "", shown, why_not)

    def _idle(self) -> None:
        """Everything else done: a chain whose filter the API ignored makes the run a failure."""
        if self._filter_ignored:
            raise CloseSpider("api_filter_ignored")

    async def start(self) -> AsyncIterator[Request]:
        state = getattr(self, "state", None)  # set by Scrapy's SpiderState when JOBDIR is on
        saved = state.get("chains", {}) if isinstance(state, dict) and self.shared is None else {}
        stats = self.crawler.stats
        if self.shared is not None:
            # The first pages were queued with the crawl (first_pages); pages of every chain may
            # come to this worker.
            if self.seeds_crawl:
                stats.inc_value("api/chains/started", len(self.crawl_args.queries))
                logger.info("Chains started: %s", ", ".join(q.key for q in self.crawl_args.queries))
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
                logger.info("Chain %s: resuming at page %d%s; the earlier run reached page %d", query.key,
                            chain.next_page, f", cursor {chain.next_cursor!r}" if chain.next_cursor else " (the first)",
                            chain.reached)
            else:
                stats.inc_value("api/chains/started")
                logger.info("Chain %s: starting", query.key)
            yield self.page_request(query.key, chain.next_cursor, chain.next_page)
        self._save_state(force=True)

    def first_pages(self) -> list[Request]:
        """A shared crawl's first page of every chain, queued in Redis as the crawl starts."""
        for query in self.crawl_args.queries:
            self._chains.setdefault(query.key, Chain(query))
        return [self.page_request(query.key, None, 1) for query in self.crawl_args.queries]

    def page_request(self, chain_key: str, cursor: str | None, page: int, floor: int | None = None) -> Request:
        """The request for page ``page`` of a chain; ``floor`` is its early-stop floor (default: the chain's plan)."""
        chain = self._chains[chain_key]
        floor = self._floors[chain_key] if floor is None else floor
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
                API_PAGE: True,  # the API key goes on this request (and on no other)
                "give_up_log_level": "INFO",  # a page given up on is the chain's to report (_end_chain)
                "chain": chain_key,
                "cursor": cursor,
                "page": page,
                "run": self._run,
                "floor": floor,
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
            self._end_chain(chain, f"http_{response.status}", response.request, f"HTTP {response.status}",
                            f"body starts {response.body[:200]!r}", lease=lease)
            return
        page = response.meta.pop(PAGE, None)  # parsed by the retry middleware, which retries a bad one
        if page is None:
            try:
                page = api.parse_page(response.body)
            except api.PageError as exc:  # still not a page after every retry
                self._end_chain(chain, "invalid_json", response.request, f"an answer that is {exc}",
                                f"body starts {response.body[:200]!r}", lease=lease)
                return

        stats = self.crawler.stats
        number = response.meta.get("page", 1)
        chain.pages += 1
        if number <= chain.reached and self.shared is None:
            chain.again += 1
            stats.inc_value("api/pages/again_after_resume")
        chain.reached = max(chain.reached, number)
        stats.inc_value("api/pages")
        stats.inc_value("api/items", len(page.items))
        if not page.items:
            stats.inc_value("api/pages/empty")

        items, matched, foreign = self._items(chain, page.items, number)
        if foreign and not matched:
            self._end_chain_filter_ignored(chain, foreign, number, lease)
            return
        if items:  # registered before any of them can finish
            chain.sequence += 1
            chain.in_flight[chain.sequence] = [response.meta["cursor"], len(items), lease, number]
            for item in items:
                self._item_pages[item["id"]] = (chain, chain.sequence)
        next_request = self._next_page(chain, page, response.meta["cursor"], number, response.meta.get("floor", 0))
        self._save_state()
        if next_request is not None:
            if lease is not None:  # this page stays leased while its next page cannot be queued
                next_request.meta[FROM_LEASE] = lease
            yield next_request
        yield from items
        if not items:  # runs once the next page request is scheduled
            self._release(lease)

    def _next_page(self, chain: Chain, page: api.Page, page_cursor: str | None, number: int,
                   floor: int) -> Request | None:
        stats = self.crawler.stats
        if floor:
            floor = self._early_stop(chain, page, number, floor)
            if floor < 0:
                return None
        cursor = page.next_cursor
        if cursor is None:
            logger.info("Chain %s: complete at page %d%s", chain.query.key, number, self._walked(chain, number))
            stats.inc_value("api/chains/completed")
            chain.status = "complete"
            self._shared_chain_status(chain)
            return None
        if cursor in chain.visited and chain.visited[cursor] == page_cursor:
            # The same page walked again (a shared crawl's page handed back to this worker):
            # asked for again, and the shared dupefilter drops it if it was queued already.
            stats.inc_value("api/pages/walked_again")
            return self.page_request(chain.query.key, cursor, number + 1, floor)
        if cursor in chain.visited:
            logger.warning(
                "Chain %s: page %d sent back cursor %r, already visited in this chain: "
                "ending the chain to avoid a loop%s",
                chain.query.key, number, cursor, self._walked(chain, number),
            )
            stats.inc_value("api/chains/loop")
            chain.status = "loop"
            self._shared_chain_status(chain)
            return None
        chain.visited[cursor] = page_cursor
        chain.next_cursor, chain.next_page = cursor, number + 1
        return self.page_request(chain.query.key, cursor, number + 1, floor)

    @staticmethod
    def _walked(chain: Chain, number: int) -> str:
        """How many of the chain's pages this process walked, when that is not simply 1..``number``."""
        if chain.pages == number and not chain.again:
            return ""
        again = f", {chain.again} of them again after the resume" if chain.again else ""
        return f" (this process walked {chain.pages}{again})"

    def _early_stop(self, chain: Chain, page: api.Page, number: int, floor: int) -> int:
        """-1 when ``page`` ends the chain early, else the floor for its next page (0: off)."""
        sort = self.crawl_args.sort
        values = [api.sort_value(raw.get("stats"), sort) for raw in page.items if isinstance(raw, dict)]
        if any(later > earlier for earlier, later in zip(values, values[1:])):
            logger.warning(
                "Chain %s: page %d is not in '%s' order: early stop is off for this chain; every page is walked",
                chain.query.key, number, sort,
            )
            self.crawler.stats.inc_value("api/chains/unsorted")
            return 0
        if not values or values[-1] >= floor:
            return floor
        logger.info(
            "Chain %s: early stop after page %d: '%s' puts every later image at or below this page's last "
            "one (%s %d), and the thresholds need at least %d%s",
            chain.query.key, number, sort, "+".join(api.SORT_COUNTERS[sort]), values[-1], floor,
            self._walked(chain, number),
        )
        self.crawler.stats.inc_value("api/chains/early_stop")
        chain.status = "early_stop"
        self._shared_chain_status(chain)
        return -1

    def _items(self, chain: Chain, raw_items: list[Any], number: int) -> tuple[list[CivitaiImage], int, dict[str, int]]:
        """The page's items to yield, how many matched the query, and the foreign ones by filter."""
        stats = self.crawler.stats
        item_filter = self._filters[chain.query.key]
        items: list[CivitaiImage] = []
        matched = 0
        foreign: dict[str, int] = {}
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
            mismatches = item_filter.mismatches(raw)
            if mismatches:
                foreign[mismatches[0]] = foreign.get(mismatches[0], 0) + 1
                stats.inc_value("api/items/foreign")
                stats.inc_value(f"api/items/foreign/{mismatches[0]}")
                continue
            matched += 1
            if image_id in self._yielded_ids or image_id in self._item_pages:
                stats.inc_value("api/items/duplicate")
                continue
            self._yielded_ids.add(image_id)
            item = CivitaiImage({k: raw[k] for k in API_FIELDS if k in raw})
            item["id"] = image_id
            item["meta"] = api.normalise_meta(raw.get("meta"))
            item["query"] = chain.query.key
            item["image_urls"] = [url]
            items.append(item)
        if foreign and matched:
            logger.warning(
                "Chain %s: page %d: %d of %d items do not match the query (%s): not stored",
                chain.query.key, number, sum(foreign.values()), len(raw_items), _counts(foreign),
            )
        return items, matched, foreign

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
        """Chain positions into ``spider.state``; with JOBDIR, also onto disk, at most every
        ``CIVITAI_STATE_SAVE_INTERVAL`` seconds: a change within the interval is written at its
        end (not at the next change, which may be long in coming while images download)."""
        state = getattr(self, "state", None)
        if not isinstance(state, dict):
            return
        state["chains"] = {key: chain.snapshot() for key, chain in self._chains.items()}
        if self._state_file is None:
            return
        wait = self._state_saved_at + self.state_save_interval - time.monotonic()
        if force or wait <= 0:
            self._write_state()
        elif self._state_write is None:
            self._state_write = call_later(wait, self._write_state)

    def _write_state(self) -> None:
        if self._state_write is not None:
            self._state_write.cancel()
            self._state_write = None
        self._state_saved_at = time.monotonic()
        assert self._state_file is not None
        write_atomically(self._state_file, pickle.dumps(self.state, protocol=4))

    def closed(self, reason: str) -> None:
        if self._state_write is not None:
            self._state_write.cancel()
            self._state_write = None
        self._save_state()  # into spider.state: Scrapy's SpiderState writes it at close

    def page_failed(self, failure: Failure) -> None:
        request = failure.request  # type: ignore[attr-defined]
        if self._is_stale(request):
            return
        chain = self._chains[request.meta["chain"]]
        self._end_chain(chain, failure.value.__class__.__name__, request, failure_words(failure.value),
                        lease=request.meta.get(LEASE))

    def _end_chain_filter_ignored(self, chain: Chain, foreign: dict[str, int], number: int, lease: str | None) -> None:
        """Every item of the page contradicts the query: the API ignored a filter; nothing of it is stored."""
        asked = ", ".join(f"{name}={chain.query.params[name]}" for name in foreign if name in chain.query.params)
        logger.error(
            "Chain %s: the API ignored the query's filter (%s): none of the %d items of page %d match it "
            "(%s): none stored; the chain ends and the run will close as failed (api_filter_ignored)",
            chain.query.key, asked, sum(foreign.values()), number, _counts(foreign),
        )
        chain.status = "failed"  # a later run of the job tries this chain again
        self._filter_ignored[chain.query.key] = ", ".join(foreign)
        stats = self.crawler.stats
        stats.inc_value(f"api/chains/failed/{FILTER_IGNORED}")
        stats.set_value(f"api/filter_ignored/{chain.query.key}", ", ".join(foreign))
        self._save_state()
        self._shared_chain_status(chain)
        self._release(lease)

    def _end_chain(self, chain: Chain, reason: str, request: Request, words: str, detail: str = "",
                   lease: str | None = None) -> None:
        """The chain's page failed for good (``words``: what went wrong, in words)."""
        number, tries = request.meta.get("page", 1), request.meta.get("retry_times", 0) + 1
        chain.status = "failed"  # a later run of the job tries this chain again
        stats = self.crawler.stats
        stats.inc_value(f"api/chains/failed/{reason}")
        self._save_state()
        if reason in ("http_401", "http_403"):
            # One line, the closing summary's: a shared crawl's other workers may have a key that
            # works, so this worker's page stays leased and goes back to the queue as it closes.
            stats.set_value("finish_detail", (
                f"the API refused the key ({words}) at page {number} of chain {chain.query.key}: it is missing, "
                "wrong or lacks access. Set CIVITAI_API_KEY (export CIVITAI_API_KEY=..., or -s CIVITAI_API_KEY=...)"))
            self._close("api_key_rejected")
            return
        self._shared_chain_status(chain)
        self._release(lease)
        all_started = len(self._chains) == len(self.crawl_args.queries)
        if all_started and not stats.get_value("api/pages") and all(
            c.status in ("failed", *FINISHED) for c in self._chains.values()
        ):
            # Nothing worked at all: one line, the closing summary's, with the cause and the fix.
            logger.info("Chain %s: ended at page %d: %s at %s%s", chain.query.key, number, words, request.url,
                        f" ({detail})" if detail else "")
            stats.set_value("finish_detail", (
                f"could not use the API at {self.api_url}: {words}{f' ({detail})' if detail else ''} on every try "
                f"({tries}). Check the address (CIVITAI_API_URL) and this machine's network"))
            self._close("api_unavailable")
            return
        logger.error(
            "Chain %s: ended at page %d after %d tr%s: %s at %s%s%s", chain.query.key, number, tries,
            "y" if tries == 1 else "ies", words, request.url, f" ({detail})" if detail else "",
            "; the other chains go on" if len(self._chains) > 1 else "",
        )

    def _close(self, reason: str) -> None:
        """Close the crawl with ``reason`` (from a callback or an errback, without a traceback)."""
        deferred_from_coro(self.crawler.engine.close_spider_async(reason=reason))


def _counts(by_name: dict[str, int]) -> str:
    """``{"username": 3}`` -> ``"3 with another username"``, for logs."""
    return ", ".join(f"{count} with another {name}" for name, count in by_name.items())
