"""A local store whose images are checked and written by store processes (``pool``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from scrapy import signals

from civitai_spider.config import CivitaiConfig
from civitai_spider.storage.base import StoreWriteError
from civitai_spider.storage.local import LocalStorage
from civitai_spider.storage.pool import StorePool

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

    from civitai_spider.imaging import ImagePolicy, StoredImage


def process_count(config: CivitaiConfig) -> int:
    """``CIVITAI_STORE_PROCESSES``: -1 is one per CPU, at most 4; 0 is none (threads)."""
    count = config.store_processes
    return max(1, min(os.cpu_count() or 1, 4)) if count < 0 else count


class ProcessStorage(LocalStorage):
    """``LocalStorage`` with the work done by ``processes`` child processes (``CIVITAI_STORE_PROCESSES``):
    the crawl's process only downloads. They start when the spider opens (not waited for) and
    stop once it has closed; if none can be started, the work is done in threads, as
    ``LocalStorage`` does it."""

    def __init__(self, crawler: Crawler, uri: str) -> None:
        super().__init__(crawler, uri)
        config = CivitaiConfig.of(crawler)
        self.pool = StorePool(self.basedir, process_count(config), config.store_process_timeout, crawler.stats)
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    def spider_opened(self) -> None:
        self.pool.start()

    async def spider_closed(self) -> None:
        await self.pool.stop()

    async def store_image(
        self, data: bytes, stem: str, thumb_paths: dict[str, str], policy: ImagePolicy
    ) -> tuple[StoredImage, str]:
        if not self.pool.usable:
            return await super().store_image(data, stem, thumb_paths, policy)
        stored, path, error = await self.pool.store_image(data, stem, thumb_paths, policy)
        if error is not None:
            raise StoreWriteError(error)
        return stored, path

    async def write_metadata(
        self, stem: str, meta: Any, captions: bool, max_bytes: int, record: dict[str, Any] | None = None
    ) -> tuple[int, int]:
        if not self.pool.usable:
            return await super().write_metadata(stem, meta, captions, max_bytes, record)
        return await self.pool.write_metadata(stem, meta, captions, max_bytes, record)
