"""A leased page's next page keeps it leased until that one is queued (``FROM_LEASE``).

A spider middleware: each page request the spider yields from a leased page
carries that page's lease, so that the scheduler pins the lease while the new
request cannot be queued (Redis away): if this worker dies first, the page goes
back to the queue and whoever walks it queues the next page.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from scrapy.http import Request, Response

from civitai_spider.shared_crawl.scheduler import FROM_LEASE, LEASE


class LeaseMiddleware:
    def process_spider_output(self, response: Response, result: Iterable[Any]) -> Iterable[Any]:
        lease = response.meta.get(LEASE)
        for output in result:
            yield _marked(output, lease)

    async def process_spider_output_async(self, response: Response, result: AsyncIterator[Any]) -> AsyncIterator[Any]:
        lease = response.meta.get(LEASE)
        async for output in result:
            yield _marked(output, lease)


def _marked(output: Any, lease: str | None) -> Any:
    if lease is not None and isinstance(output, Request):
        output.meta[FROM_LEASE] = lease
    return output
