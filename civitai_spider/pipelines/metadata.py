"""Metadata pipeline: the prompt and the full ``meta`` beside every stored image.

For a stored image ``N.<ext>``, through the crawl's ``Storage`` (so ``s3://`` and
``gs://`` work too), each file written atomically:

- ``N_pos-prompt.txt``: ``meta.prompt`` exactly as given (UTF-8, nothing added),
  when it is a non-empty string;
- ``N_neg-prompt.txt``: ``meta.negativePrompt``, likewise;
- ``N_meta.json``: the whole ``meta`` dict (already un-nested by the spider),
  UTF-8, keys unchanged, non-ASCII not escaped; not written when meta is null;
- ``N.txt`` when ``CIVITAI_CAPTION_FILES`` is on: a caption for training tools,
  the prompt with ``<lora:...>``-style tags removed;
- ``N.json``, for every stored image, written last: its record
  (``metadata_files.image_record``): every field the API gave, the chain that found
  it, and what was stored (file, format, kept or converted, md5, bytes, pixel
  size, when). The store describes itself: exports (``civitai_spider.export``) and
  the gallery read it, no feed export needed.

A store error fails the item (dropped, counted under ``metadata/failed``), so the
image is not recorded as done and the next run completes it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

from itemadapter import ItemAdapter
from scrapy.exceptions import NotConfigured

from civitai_spider.config import CivitaiConfig
from civitai_spider.exceptions import RetryLater
from civitai_spider.pipelines.store_errors import StoreErrors
from civitai_spider.storage import Storage, StoreProcessFailed, StoreWriteError
from civitai_spider.storage.metadata_files import MetadataTooLarge, image_record

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


class MetadataPipeline:
    RESULT_FIELD = "images"  # where the images pipeline put the stored file's path

    def __init__(self, crawler: Crawler, storage: Storage) -> None:
        self.crawler = crawler
        config = CivitaiConfig.of(crawler)
        self.storage = storage
        self.captions = config.caption_files
        self.store_errors = StoreErrors(crawler)
        self.max_bytes = config.meta_max_bytes

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> MetadataPipeline:
        storage = crawler.get_extension(Storage)
        if storage is None:
            raise NotConfigured("no Storage extension (EXTENSIONS): nowhere to store metadata")
        return cls(crawler, storage)

    async def process_item(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        results = adapter.get(self.RESULT_FIELD) or []
        if not results:
            return item
        stem = results[0]["path"].rsplit(".", 1)[0]
        record = image_record(adapter, results[0], datetime.now(UTC).isoformat(timespec="seconds"))
        try:
            count, size = await self.storage.write_metadata(stem, adapter.get("meta"), self.captions, self.max_bytes,
                                                            record)
        except MetadataTooLarge as exc:
            self.crawler.stats.inc_value("metadata/too_large")
            raise RetryLater(
                f"image {adapter.get('id')}: metadata is {exc.size} bytes, over CIVITAI_META_MAX_BYTES={self.max_bytes}"
            ) from None
        except (StoreWriteError, StoreProcessFailed) as exc:
            self._failed(adapter, getattr(exc, "error", exc))
        self.store_errors.succeeded()
        self.crawler.stats.inc_value("metadata/files_written", count)
        self.crawler.stats.inc_value("metadata/bytes_written", size)
        return item

    def _failed(self, adapter: ItemAdapter, exc: BaseException) -> NoReturn:
        self.store_errors.failed(exc)
        self.crawler.stats.inc_value("metadata/failed")
        raise RetryLater(f"image {adapter.get('id')}: metadata files not stored: {exc}") from exc
