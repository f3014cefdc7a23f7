"""The ``civitai`` spider: spider arguments -> queries -> cursor chains -> one item per image.

Each query (see ``civitai_spider.arguments``) is one cursor chain over
``/api/v1/images``. A chain asks for its next page as soon as a page is parsed,
before that page's items go down the pipelines, and ends when a page has no
``nextCursor``, when a cursor comes back that the chain already visited (a
loop), on early stop, or when the API keeps failing for that page. Chains run
concurrently; an image id yielded by one chain is not yielded again.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import scrapy
from scrapy.downloadermiddlewares.retry import get_retry_request
from scrapy.http import Request, Response
from twisted.python.failure import Failure

from civitai_spider import api
from civitai_spider.arguments import CrawlArguments, Query, parse_arguments
from civitai_spider.items import API_FIELDS, CivitaiImage

logger = logging.getLogger(__name__)


@dataclass
class Chain:
    """The walking state of one cursor chain."""

    query: Query
    visited: set[str] = field(default_factory=set)
    pages: int = 0
    barren_pages: int = 0  # consecutive pages with no image meeting the minimum thresholds


class CivitaiSpider(scrapy.Spider):
    name = "civitai"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Arguments are parsed here, not set as attributes: a bad one stops the
        # crawl before any request is made.
        self.crawl_args: CrawlArguments = self.check_arguments(kwargs)
        super().__init__(*args, name=kwargs.pop("name", None))
        self._chains: dict[str, Chain] = {}
        self._yielded_ids: set[int] = set()

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
        return spider

    async def start(self) -> AsyncIterator[Request]:
        for query in self.crawl_args.queries:
            self._chains[query.key] = Chain(query)
            self.crawler.stats.inc_value("api/chains/started")
            logger.info("Chain %s: starting", query.key)
            yield self.page_request(query.key, cursor=None)

    def page_request(self, chain_key: str, cursor: str | None) -> Request:
        chain = self._chains[chain_key]
        url = api.page_url(self.api_url, chain.query.params, cursor, self.page_limit)
        return Request(
            url,
            callback=self.parse_page,
            errback=self.page_failed,
            # Loops are caught per chain below; the dupefilter must not drop a
            # page that a resumed crawl asks for again.
            dont_filter=True,
            meta={"chain": chain_key, "cursor": cursor, "handle_httpstatus_all": True},
        )

    def parse_page(self, response: Response) -> Iterator[Request | CivitaiImage]:
        chain = self._chains[response.meta["chain"]]
        if response.status != 200:
            self._end_chain(chain, f"http_{response.status}", response)
            return
        try:
            page = api.parse_page(response.body)
        except api.PageError as exc:
            retry = get_retry_request(response.request, spider=self, reason="api_invalid_json")
            if retry is not None:
                yield retry
            else:
                self._end_chain(chain, "invalid_json", response, detail=str(exc))
            return

        stats = self.crawler.stats
        chain.pages += 1
        stats.inc_value("api/pages")
        stats.inc_value("api/items", len(page.items))
        if not page.items:
            stats.inc_value("api/pages/empty")

        next_request = self._next_page(chain, page)
        if next_request is not None:
            yield next_request
        yield from self._items(chain, page.items)

    def _next_page(self, chain: Chain, page: api.Page) -> Request | None:
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
                return None
        cursor = page.next_cursor
        if cursor is None:
            logger.info("Chain %s: complete after %d pages", chain.query.key, chain.pages)
            stats.inc_value("api/chains/completed")
            return None
        if cursor in chain.visited:
            logger.warning(
                "Chain %s: the API sent back cursor %r, already visited in this chain: "
                "ending the chain to avoid a loop (%d pages walked)",
                chain.query.key, cursor, chain.pages,
            )
            stats.inc_value("api/chains/loop")
            return None
        chain.visited.add(cursor)
        return self.page_request(chain.query.key, cursor)

    def _items(self, chain: Chain, raw_items: list[Any]) -> Iterator[CivitaiImage]:
        stats = self.crawler.stats
        for raw in raw_items:
            try:
                if not isinstance(raw, dict):
                    raise api.InvalidItem("not_an_object", type(raw).__name__)
                image_id = api.image_id(raw)
                url = api.image_url(raw)
            except api.InvalidItem as exc:
                logger.warning("Chain %s: skipping an API item: %s", chain.query.key, exc)
                stats.inc_value(f"api/items/invalid/{exc.reason}")
                continue
            if image_id in self._yielded_ids:
                stats.inc_value("api/items/duplicate")
                continue
            self._yielded_ids.add(image_id)
            item = CivitaiImage({k: raw[k] for k in API_FIELDS if k in raw})
            item["id"] = image_id
            item["meta"] = api.normalise_meta(raw.get("meta"))
            item["query"] = chain.query.key
            item["image_urls"] = [url]
            yield item

    def page_failed(self, failure: Failure) -> None:
        request = failure.request  # type: ignore[attr-defined]
        chain = self._chains[request.meta["chain"]]
        self._end_chain(chain, failure.value.__class__.__name__, None, detail=str(failure.value), url=request.url)

    def _end_chain(
        self,
        chain: Chain,
        reason: str,
        response: Response | None,
        detail: str = "",
        url: str = "",
    ) -> None:
        if response is not None:
            url = response.url
            detail = "; ".join(filter(None, [detail, f"body starts {response.body[:200]!r}"]))
        logger.error(
            "Chain %s: ended after %d pages: %s at %s (%s); other chains go on",
            chain.query.key, chain.pages, reason, url, detail,
        )
        self.crawler.stats.inc_value(f"api/chains/failed/{reason}")
