"""A plain Scrapy spider over the Civitai images API, for the stock FilesPipeline / ImagesPipeline contenders.

Walks the same cursor pages as ``scrapy crawl civitai`` (same query string), keeps
the images with ``heartCount >= min_hearts`` and a non-empty ``meta.prompt``, and
yields ``file_urls`` and ``image_urls`` (each stock pipeline reads its own field).
No metadata files, no done-id record: what a first attempt with stock Scrapy does.

Run it OUTSIDE the repository (no scrapy.cfg above the working directory, or the
project's settings would load), e.g. for the stock FilesPipeline::

    scrapy runspider bench/stock_spider.py -a api=http://127.0.0.1:PORT/api/v1/images -a min_hearts=10 \
        -s 'ITEM_PIPELINES={"scrapy.pipelines.files.FilesPipeline": 1}' -s FILES_STORE=out \
        -s CONCURRENT_REQUESTS=32 -s CONCURRENT_REQUESTS_PER_DOMAIN=16 \
        -s REMOTE_CONTROL_ENABLED=False -s TELNETCONSOLE_ENABLED=False
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlencode

import scrapy
from scrapy.http import Request, Response

PARAMS = {"limit": "200", "withMeta": "true", "sort": "Most Reactions", "period": "AllTime", "type": "image"}


class StockSpider(scrapy.Spider):
    name = "stock"

    def __init__(self, api: str = "", min_hearts: str = "10", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not api:
            raise ValueError("-a api=http://HOST:PORT/api/v1/images is required")
        self.api = api
        self.min_hearts = int(min_hearts)

    def page(self, cursor: str | None = None) -> Request:
        params = dict(PARAMS, **({"cursor": cursor} if cursor else {}))
        return Request(f"{self.api}?{urlencode(params)}", callback=self.parse, dont_filter=True)

    async def start(self) -> AsyncIterator[Request]:
        yield self.page()

    def parse(self, response: Response) -> Iterator[Any]:
        data = response.json()
        cursor = (data.get("metadata") or {}).get("nextCursor")
        if cursor:
            yield self.page(cursor)
        for item in data.get("items") or []:
            stats = item.get("stats") or {}
            meta = item.get("meta") or {}
            prompt = meta.get("prompt")
            if (stats.get("heartCount") or 0) >= self.min_hearts and isinstance(prompt, str) and prompt.strip():
                yield {"id": item["id"], "file_urls": [item["url"]], "image_urls": [item["url"]], "meta": meta}
