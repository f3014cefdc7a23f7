"""Metadata pipeline: the prompt and the full ``meta`` beside every stored image.

For a stored image ``N.<ext>``, through the same store as the image (so ``s3://``
and ``gs://`` work too), each file written atomically:

- ``N_pos-prompt.txt``: ``meta.prompt`` exactly as given (UTF-8, nothing added),
  when it is a non-empty string;
- ``N_neg-prompt.txt``: ``meta.negativePrompt``, likewise;
- ``N_meta.json``: the whole ``meta`` dict (already un-nested by the spider),
  UTF-8, keys unchanged, non-ASCII not escaped; not written when meta is null;
- ``N.txt`` when ``CIVITAI_CAPTION_FILES`` is on: a caption for training tools,
  the prompt with ``<lora:...>``-style tags removed.

A store error fails the item (dropped, counted under ``metadata/failed``), so the
image is not recorded as done and the next run completes it.
"""

from __future__ import annotations

import logging
from io import BytesIO
from typing import TYPE_CHECKING, Any, NoReturn

from itemadapter import ItemAdapter
from scrapy.utils.defer import ensure_awaitable

from civitai_spider.exceptions import RetryLater
from civitai_spider.metadata_files import MetadataTooLarge, sized_metadata_files
from civitai_spider.store_pool import StorePool
from civitai_spider.stores import AtomicFSFilesStore, StoreErrors, open_store

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

class MetadataPipeline:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        settings = crawler.settings
        self.store = open_store(str(settings.get("IMAGES_STORE")), settings)
        self.captions = settings.getbool("CIVITAI_CAPTION_FILES")
        self.result_field = settings.get("IMAGES_RESULT_FIELD", "images")
        self.store_errors = StoreErrors(crawler)
        self.max_bytes = settings.getint("CIVITAI_META_MAX_BYTES", 16 * 1024 * 1024)
        self.pool = crawler.get_extension(StorePool)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> MetadataPipeline:
        return cls(crawler)

    async def process_item(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        results = adapter.get(self.result_field) or []
        if not results:
            return item
        stem = results[0]["path"].rsplit(".", 1)[0]
        stats = self.crawler.stats
        if self.pool is not None and self.pool.usable and isinstance(self.store, AtomicFSFilesStore):
            # Built (JSON encoding and all) and written by a store process.
            try:
                count, size = await self.pool.write_metadata(stem, adapter.get("meta"), self.captions, self.max_bytes)
            except MetadataTooLarge as exc:
                self._too_large(adapter, exc.size)
            except Exception as exc:
                self._failed(adapter, "files", exc)
            self.store_errors.succeeded()
            stats.inc_value("metadata/files_written", count)
            stats.inc_value("metadata/bytes_written", size)
            return item
        try:
            files, size = sized_metadata_files(stem, adapter.get("meta"), self.captions, self.max_bytes)
        except MetadataTooLarge as exc:
            self._too_large(adapter, exc.size)
        if isinstance(self.store, AtomicFSFilesStore):  # a local store: every file in one worker-thread hop
            try:
                await self.store.persist_files((name, data) for name, (data, _) in files.items())
            except Exception as exc:
                self._failed(adapter, "files", exc)
            self.store_errors.succeeded()
            stats.inc_value("metadata/files_written", len(files))
            stats.inc_value("metadata/bytes_written", size)
            return item
        for name, (data, content_type) in files.items():
            try:
                await ensure_awaitable(
                    self.store.persist_file(name, BytesIO(data), None, headers={"Content-Type": content_type})
                )
            except Exception as exc:
                self._failed(adapter, f"file {name}", exc)
            self.store_errors.succeeded()
            stats.inc_value("metadata/files_written")
            stats.inc_value("metadata/bytes_written", len(data))
        return item

    def _too_large(self, adapter: ItemAdapter, size: int) -> NoReturn:
        self.crawler.stats.inc_value("metadata/too_large")
        raise RetryLater(
            f"image {adapter.get('id')}: metadata is {size} bytes, over CIVITAI_META_MAX_BYTES={self.max_bytes}"
        )

    def _failed(self, adapter: ItemAdapter, what: str, exc: Exception) -> NoReturn:
        self.store_errors.failed(exc)
        self.crawler.stats.inc_value("metadata/failed")
        raise RetryLater(f"image {adapter.get('id')}: metadata {what} not stored: {exc}") from exc
