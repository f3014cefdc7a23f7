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
the cursor of its oldest page whose images are not all through the pipelines
yet, or did not all make it (or of its next page); ``extensions.chain_state``
writes it to JOBDIR and loads it back. A crawl stopped by Ctrl-C or killed
outright restarts each chain from there: images that were in flight are fetched
again, done ones are skipped by the done-id record.

The spider knows nothing of where else the walk may be shared: it says when a
page is through (``signals.page_finished``) and when a chain ends
(``signals.chain_ended``); a scheduler that queues the first pages itself (a
shared crawl's) takes them from ``first_pages``, and ``start`` then yields none.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import scrapy
from scrapy import signals
from scrapy.exceptions import CloseSpider
from scrapy.http import Request, Response
from scrapy.utils.defer import deferred_from_coro
from twisted.python.failure import Failure

from civitai_spider import api
from civitai_spider import signals as civitai_signals
from civitai_spider.arguments import CrawlArguments, parse_arguments
from civitai_spider.chains import FINISHED, Chain, PageInFlight
from civitai_spider.config import CivitaiConfig
from civitai_spider.done_ids import IdSet
from civitai_spider.exceptions import RetryLater
from civitai_spider.items import API_FIELDS, CivitaiImage
from civitai_spider.middlewares import API_PAGE, PAGE, failure_words

logger = logging.getLogger(__name__)


API_SLOT = "civitai-api"
KNOWN_KEYS = frozenset(API_FIELDS)
FILTER_IGNORED = "filter_ignored"


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
        self._first_pages_taken = False  # by a scheduler that queues them itself (first_pages)
        # An update run: chain key -> the images earlier update runs of it saw (extensions.update_runs).
        self.seen_before: dict[str, Any] = {}

    @classmethod
    def check_arguments(cls, kwargs: dict[str, Any]) -> CrawlArguments:
        """Parse and validate spider arguments; raises ``ArgumentError`` on a bad one."""
        return parse_arguments(kwargs)

    @classmethod
    def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> CivitaiSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        config = CivitaiConfig.of(crawler)
        spider.api_url = config.api_url
        spider.page_limit = config.page_limit
        spider._plan_early_stop(config.early_stop)
        if any(q.params.get("nsfw") == "true" for q in spider.crawl_args.queries):
            logger.warning(
                "nsfw=true asks Civitai for R, X and XXX only: PG and PG-13 images are left out. "
                "For every level use browsing_level=PG+PG13+R+X+XXX (or nsfw=X)."
            )
        hosts = config.image_hosts
        api_host = urlsplit(spider.api_url).hostname
        # The API's own host is trusted too (it is what the user pointed us at).
        spider.image_hosts = (*hosts, api_host) if hosts and api_host else hosts
        spider.max_meta_depth = config.meta_max_depth
        spider.update_stop_after = config.update_stop_after
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
        if self._first_pages_taken:  # queued by the scheduler (a shared crawl): nothing to yield
            return
        state = getattr(self, "state", None)  # loaded from JOBDIR by extensions.chain_state
        saved = state.get("chains", {}) if isinstance(state, dict) else {}
        stats = self.crawler.stats
        for query in self.crawl_args.queries:
            chain = Chain.restore(query, saved[query.key]) if query.key in saved else Chain(query)
            if chain.status in FINISHED and self.crawl_args.update:
                # The job's last update run got to the end: this one is the next, from the top.
                logger.info("Chain %s: the job's last update run ended (%s): walking from the newest again",
                            query.key, chain.status)
                stats.inc_value("api/chains/update_again")
                chain = Chain(query)
                saved.pop(query.key)
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
        self._save_state()

    def first_pages(self) -> list[Request]:
        """The first page of every chain, for a scheduler that queues them itself (a shared
        crawl's, as it starts the crawl); ``start`` then yields nothing."""
        self._first_pages_taken = True
        for query in self.crawl_args.queries:
            self._chains.setdefault(query.key, Chain(query))
        return [self.page_request(query.key, None, 1) for query in self.crawl_args.queries]

    def page_request(self, chain_key: str, cursor: str | None, page: int, floor: int | None = None,
                     seen_run: int = 0) -> Request:
        """The request for page ``page`` of a chain; ``floor`` is its early-stop floor (default: the
        chain's plan), ``seen_run`` how many images in a row before it earlier update runs saw."""
        chain = self._chains[chain_key]
        floor = self._floors[chain_key] if floor is None else floor
        url = api.page_url(self.api_url, chain.query.params, cursor, self.page_limit)
        return Request(
            url,
            callback=self.parse_page,
            errback=self.page_failed,
            # Loops are caught per chain below, and a resumed crawl asks for pages again. (A
            # shared crawl's scheduler fingerprints every new page request all the same.)
            dont_filter=True,
            meta={
                API_PAGE: True,  # the API key goes on this request (and on no other)
                "give_up_log_level": "INFO",  # a page given up on is the chain's to report (_end_chain)
                "chain": chain_key,
                "cursor": cursor,
                "page": page,
                "floor": floor,
                "seen_run": seen_run,
                "handle_httpstatus_all": True,
                # Its own download slot: API pages never queue behind image downloads.
                "download_slot": API_SLOT,
            },
        )

    def _chain_of(self, request: Request) -> Chain | None:
        chain = self._chains.get(request.meta.get("chain"))
        if chain is None:  # not a chain of these arguments (a request from elsewhere): nothing to do
            self.crawler.stats.inc_value("api/pages/unknown_chain")
        return chain

    def parse_page(self, response: Response) -> Iterator[Request | CivitaiImage]:
        chain = self._chain_of(response.request)
        if chain is None:
            return
        if response.status != 200:
            self._end_chain(chain, f"http_{response.status}", response.request, f"HTTP {response.status}",
                            f"body starts {response.body[:200]!r}")
            return
        page = response.meta.pop(PAGE, None)  # parsed by the retry middleware, which retries a bad one
        if page is None:
            try:
                page = api.parse_page(response.body)
            except api.PageError as exc:  # still not a page after every retry
                self._end_chain(chain, "invalid_json", response.request, f"an answer that is {exc}",
                                f"body starts {response.body[:200]!r}")
                return

        stats = self.crawler.stats
        number = response.meta.get("page", 1)
        chain.pages += 1
        if number <= chain.reached_before:
            chain.again += 1
            stats.inc_value("api/pages/again_after_resume")
        chain.reached = max(chain.reached, number)
        stats.inc_value("api/pages")
        stats.inc_value("api/items", len(page.items))
        if not page.items:
            stats.inc_value("api/pages/empty")

        items, ids, foreign = self._items(chain, page.items, number)
        if foreign and not ids:
            self._end_chain_filter_ignored(chain, foreign, number, response.request)
            return
        if items:  # registered before any of them can finish
            chain.sequence += 1
            chain.in_flight[chain.sequence] = PageInFlight(response.request, len(items), ids=ids)
            for item in items:
                self._item_pages[item["id"]] = (chain, chain.sequence)
        next_request = self._next_page(chain, page, ids, response)
        self._save_state()
        if next_request is not None:
            yield next_request
        yield from items
        if not items:  # runs once the next page request is scheduled
            self._page_finished(response.request, complete=True, ids=ids)

    def _next_page(self, chain: Chain, page: api.Page, ids: list[int], response: Response) -> Request | None:
        stats = self.crawler.stats
        page_cursor, number = response.meta["cursor"], response.meta.get("page", 1)
        floor, seen_run = response.meta.get("floor", 0), response.meta.get("seen_run", 0)
        if floor:
            floor = self._early_stop(chain, page, number, floor)
            if floor < 0:
                return None
        seen = self.seen_before.get(chain.query.key)
        if seen is not None:  # an update run: caught up with the earlier ones?
            for image_id in ids:
                seen_run = seen_run + 1 if image_id in seen else 0
            if seen_run >= self.update_stop_after:
                logger.info(
                    "Chain %s: caught up after page %d: its last %d images were all seen by earlier update "
                    "runs (CIVITAI_UPDATE_STOP_AFTER=%d)%s",
                    chain.query.key, number, seen_run, self.update_stop_after, self._walked(chain, number),
                )
                stats.inc_value("api/chains/caught_up")
                self._chain_ended(chain, "caught_up")
                return None
        cursor = page.next_cursor
        if cursor is None:
            logger.info("Chain %s: complete at page %d%s", chain.query.key, number, self._walked(chain, number))
            stats.inc_value("api/chains/completed")
            self._chain_ended(chain, "complete")
            return None
        if cursor in chain.visited and chain.visited[cursor] == page_cursor:
            # The same page walked again (a shared crawl's page handed back to this worker):
            # asked for again, and the shared dupefilter drops it if it was queued already.
            stats.inc_value("api/pages/walked_again")
            return self.page_request(chain.query.key, cursor, number + 1, floor, seen_run)
        if cursor in chain.visited:
            logger.warning(
                "Chain %s: page %d sent back cursor %r, already visited in this chain: "
                "ending the chain to avoid a loop%s",
                chain.query.key, number, cursor, self._walked(chain, number),
            )
            stats.inc_value("api/chains/loop")
            self._chain_ended(chain, "loop")
            return None
        chain.visited[cursor] = page_cursor
        chain.next_cursor, chain.next_page = cursor, number + 1
        return self.page_request(chain.query.key, cursor, number + 1, floor, seen_run)

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
        self._chain_ended(chain, "early_stop")
        return -1

    def _items(self, chain: Chain, raw_items: list[Any], number: int) -> tuple[list[CivitaiImage], list[int], dict[str, int]]:
        """The page's items to yield, the ids (in page order) of all that matched the query
        (duplicates of another chain's too), and the foreign ones by filter."""
        stats = self.crawler.stats
        item_filter = self._filters[chain.query.key]
        items: list[CivitaiImage] = []
        ids: list[int] = []
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
            ids.append(image_id)
            if image_id in self._yielded_ids or image_id in self._item_pages:
                stats.inc_value("api/items/duplicate")
                continue
            self._yielded_ids.add(image_id)
            item = CivitaiImage({k: raw[k] for k in API_FIELDS if k in raw})
            item["id"] = image_id
            item["meta"] = api.normalise_meta(raw.get("meta"))
            extra = {k: v for k, v in raw.items() if k not in KNOWN_KEYS}
            if extra:
                item["extra"] = extra
            item["query"] = chain.query.key
            item["image_urls"] = [url]
            items.append(item)
        if foreign and ids:
            logger.warning(
                "Chain %s: page %d: %d of %d items do not match the query (%s): not stored",
                chain.query.key, number, sum(foreign.values()), len(raw_items), _counts(foreign),
            )
        return items, ids, foreign

    def _item_left_pipelines(self, item: Any, exception: Any = None, failure: Any = None, **kwargs: Any) -> None:
        """An item left the pipelines: its page is one item closer to finished. Stored, or
        dropped for good (filtered, already done), it made it; failed (``RetryLater``) or
        broken by an error, it did not, and a resumed job walks its page again. One left by
        a stopping crawl keeps its page unfinished: no ``page_finished`` for that page."""
        image_id = item.get("id") if isinstance(item, (dict, CivitaiImage)) else None
        entry = self._item_pages.pop(image_id, None) if isinstance(image_id, int) else None
        if entry is None:
            return
        chain, sequence = entry
        page = chain.in_flight[sequence]
        page.left -= 1
        if isinstance(exception, RetryLater) or failure is not None:
            page.failed = True
            if not self.crawler.engine.running:
                page.left = -1  # never finished in this process: left for whoever walks it again
        if page.left == 0:
            if not page.failed:
                del chain.in_flight[sequence]
                self._save_state()
            self._page_finished(page.request, complete=not page.failed, ids=page.ids)

    def _page_finished(self, request: Request, complete: bool, ids: list[int] | None = None) -> None:
        self.crawler.signals.send_catch_log(civitai_signals.page_finished, request=request, complete=complete,
                                            ids=ids or [])

    def _chain_ended(self, chain: Chain, status: str) -> None:
        chain.status = status
        self.crawler.signals.send_catch_log(civitai_signals.chain_ended, chain=chain.query.key, status=status)

    def _save_state(self) -> None:
        """Chain positions into ``spider.state`` (with JOBDIR, ``extensions.chain_state`` writes them)."""
        state = getattr(self, "state", None)
        if not isinstance(state, dict):
            return
        state["chains"] = {key: chain.snapshot() for key, chain in self._chains.items()}
        self.crawler.signals.send_catch_log(civitai_signals.chains_changed)

    def page_failed(self, failure: Failure) -> None:
        request = failure.request  # type: ignore[attr-defined]
        chain = self._chain_of(request)
        if chain is not None:
            self._end_chain(chain, failure.value.__class__.__name__, request, failure_words(failure.value))

    def _end_chain_filter_ignored(self, chain: Chain, foreign: dict[str, int], number: int, request: Request) -> None:
        """Every item of the page contradicts the query: the API ignored a filter; nothing of it is stored."""
        asked = ", ".join(f"{name}={chain.query.params[name]}" for name in foreign if name in chain.query.params)
        logger.error(
            "Chain %s: the API ignored the query's filter (%s): none of the %d items of page %d match it "
            "(%s): none stored; the chain ends and the run will close as failed (api_filter_ignored)",
            chain.query.key, asked, sum(foreign.values()), number, _counts(foreign),
        )
        self._filter_ignored[chain.query.key] = ", ".join(foreign)
        stats = self.crawler.stats
        stats.inc_value(f"api/chains/failed/{FILTER_IGNORED}")
        stats.set_value(f"api/filter_ignored/{chain.query.key}", ", ".join(foreign))
        self._chain_ended(chain, "failed")  # a later run of the job tries this chain again
        self._save_state()
        self._page_finished(request, complete=False)

    def _end_chain(self, chain: Chain, reason: str, request: Request, words: str, detail: str = "") -> None:
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
        self._chain_ended(chain, "failed")
        self._page_finished(request, complete=False)
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
