"""Reaction-threshold filter: drops images below the spider's thresholds, and says why.

Thresholds are the spider's ``min_*``/``max_dislikes`` arguments (inclusive; a
stat missing from an item counts as 0), plus ``require_meta``: an image whose
meta is null or has no prompt is dropped unless ``require_meta=false``.

Each dropped item counts once under ``filter/dropped/<first reason>`` (reasons in
a fixed order: the thresholds as listed in ``civitai_spider.arguments``, then
``no_meta``), so the per-reason counts add up to ``filter/dropped``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from itemadapter import ItemAdapter
from scrapy.exceptions import DropItem

from civitai_spider import api
from civitai_spider.arguments import Thresholds

if TYPE_CHECKING:
    from scrapy.crawler import Crawler


class ReactionFilterPipeline:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.thresholds = Thresholds()
        self.require_meta = True

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ReactionFilterPipeline:
        return cls(crawler)

    def open_spider(self) -> None:
        crawl_args = getattr(self.crawler.spider, "crawl_args", None)
        if crawl_args is not None:
            self.thresholds = crawl_args.thresholds
            self.require_meta = crawl_args.require_meta

    def process_item(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        reasons = self.thresholds.failures(adapter.get("stats"))
        if self.require_meta and not api.has_prompt(adapter.get("meta")):
            reasons.append("no_meta")
        stats = self.crawler.stats
        if reasons:
            stats.inc_value("filter/dropped")
            stats.inc_value(f"filter/dropped/{reasons[0]}")
            raise DropItem(f"image {adapter.get('id')} fails {', '.join(reasons)}", log_level="DEBUG")
        stats.inc_value("filter/passed")
        return item
