"""Images pipeline: download each image, store it as ``<id>.<ext>``, refuse bad files cleanly.

Built on Scrapy's ``MediaPipeline`` (its download scheduling and result
plumbing); what is stored, and how, is the crawl's ``Storage``
(``civitai_spider.storage``): the format is decided on the bytes (alpha stays
alpha, JPEGs are not re-encoded), and the work runs off the reactor thread, in
store processes or worker threads. Scrapy's ``IMAGES_MIN_WIDTH``,
``IMAGES_MIN_HEIGHT`` and ``IMAGES_THUMBS`` keep working.

A file that cannot be stored (HTTP error, unidentifiable or damaged bytes, a
bomb, a download over ``CIVITAI_IMAGE_MAX_BYTES``, a store that cannot write)
fails its item: the item is dropped with the reason, one JSON line goes to the
``failures.jsonl`` record at the top of the store (id, url, reason, detail, UTC
time), ``images/failed/<reason>`` is counted, and the crawl goes on. Failed
images are not recorded as done, so the next run tries them again. A store
failing ``CIVITAI_STORE_ERRORS_MAX`` writes in a row stops the crawl
(``store_errors``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

from itemadapter import ItemAdapter
from PIL import Image
from scrapy.exceptions import NotConfigured
from scrapy.http import Request, Response
from scrapy.http.request import NO_CALLBACK
from scrapy.pipelines.media import MediaPipeline, _MediaRequestFiltered

from civitai_spider.config import CivitaiConfig
from civitai_spider.exceptions import RetryLater
from civitai_spider.imaging import ImagePolicy, ImageRejected, StoredImage
from civitai_spider.pipelines.store_errors import StoreErrors
from civitai_spider.storage import Storage, StoreProcessFailed, StoreWriteError, layout

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.pipelines.media import FileInfo, FileInfoOrError
    from twisted.python.failure import Failure

logger = logging.getLogger(__name__)

class ImageFailed(_MediaRequestFiltered):
    """An image that was not stored; ``reason`` names why (``images/failed/<reason>``).

    Derived from Scrapy's (private) "filtered media" exception, the one kind of
    media failure Scrapy does not log with a full traceback: our failures are
    expected, counted, recorded, and logged once, in one line, by the item drop.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def download_failure_reason(exc: BaseException) -> str:
    name = exc.__class__.__name__
    return {
        "DownloadCancelledError": "too_large",
        "DownloadTimeoutError": "timeout",
        "TimeoutError": "timeout",
        "ResponseDataLossError": "incomplete_download",
        "IgnoreRequest": "filtered",
    }.get(name, f"download_error/{name}")


class CivitaiImagesPipeline(MediaPipeline):
    URLS_FIELD = "image_urls"  # CivitaiImage's fields
    RESULT_FIELD = "images"

    def __init__(self, download_func: None = None, *, crawler: Crawler, storage: Storage) -> None:
        super().__init__(crawler=crawler)
        settings = crawler.settings
        config = CivitaiConfig.of(crawler)
        self.storage = storage
        self.policy = ImagePolicy(
            format=config.image_format,
            jpeg_quality=config.jpeg_quality,
            max_pixels=config.max_image_pixels or None,
            min_width=settings.getint("IMAGES_MIN_WIDTH"),
            min_height=settings.getint("IMAGES_MIN_HEIGHT"),
            thumbs=tuple((name, (int(size[0]), int(size[1]))) for name, size in settings.getdict("IMAGES_THUMBS").items()),
        )
        self.max_bytes = config.image_max_bytes
        self.store_errors = StoreErrors(crawler)
        in_flight = config.images_in_flight or max(1, settings.getint("CONCURRENT_REQUESTS") - 8)
        # Every queued download counts against CONCURRENT_REQUESTS; past it, Scrapy
        # stops handing out scheduled requests, API pages included. Gating images
        # below that limit keeps the walk going however large the image backlog.
        self._gate = asyncio.Semaphore(in_flight)
        self.failures = storage.record(layout.FAILURES_FILE)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> CivitaiImagesPipeline:
        storage = crawler.get_extension(Storage)
        if storage is None:
            raise NotConfigured("no Storage extension (EXTENSIONS): nowhere to store images")
        return cls(crawler=crawler, storage=storage)

    async def open_spider(self) -> None:
        super().open_spider()
        # The bomb check is done by civitai_spider.imaging with CIVITAI_MAX_IMAGE_PIXELS,
        # before any decode; Pillow's process-wide one (a warning we could not
        # catch per image from worker threads) is turned off for this process.
        Image.MAX_IMAGE_PIXELS = None
        await self.storage.open()

    async def close_spider(self) -> None:
        await self.failures.close()

    async def process_item(self, item: Any, spider: Any = None) -> Any:
        async with self._gate:
            if not self.crawler.engine.running:
                # Stopping (Ctrl-C): finish what is downloading, leave the rest for the
                # resumed run (not done, so fetched then), instead of draining the backlog.
                self.crawler.stats.inc_value("images/left_for_next_run")
                raise RetryLater(f"image {ItemAdapter(item).get('id')}: left for the next run (stopping)", log_level="DEBUG")
            return await super().process_item(item)

    def get_media_requests(self, item: Any, info: MediaPipeline.SpiderInfo) -> list[Request]:
        urls = ItemAdapter(item).get(self.URLS_FIELD) or []
        return [Request(url, callback=NO_CALLBACK, meta={"download_maxsize": self.max_bytes}) for url in urls]

    def media_to_download(self, request: Request, info: MediaPipeline.SpiderInfo, *, item: Any = None) -> None:
        # Whether an image is already stored is decided by the done-id record
        # before the item gets here, not by a stat (and a full read) of a file
        # whose extension is only known from the bytes.
        return None

    def file_path(
        self,
        request: Request,
        response: Response | None = None,
        info: MediaPipeline.SpiderInfo | None = None,
        *,
        item: Any = None,
    ) -> str:
        """``<id>``: the stem of the stored file; the extension comes from the bytes.

        Only the numeric id of the item is used: nothing from the API (user
        name, URL, meta) ever becomes part of a path.
        """
        return str(int(ItemAdapter(item)["id"]))

    async def media_downloaded(
        self,
        response: Response,
        request: Request,
        info: MediaPipeline.SpiderInfo,
        *,
        item: Any = None,
    ) -> FileInfo:
        if response.status != 200:
            raise ImageFailed(f"http_{response.status}", f"body starts {response.body[:80]!r}")
        stem = self.file_path(request, item=item)
        thumb_paths = {thumb_id: layout.thumb_file(thumb_id, stem) for thumb_id, _ in self.policy.thumbs}
        try:
            stored, path = await self.storage.store_image(response.body, stem, thumb_paths, self.policy)
        except ImageRejected as exc:
            raise ImageFailed(exc.reason, exc.detail) from None
        except StoreProcessFailed as exc:
            raise ImageFailed("store_process_died", str(exc)) from None
        except StoreWriteError as exc:
            self.store_errors.failed(exc.error)
            raise ImageFailed("store_error", str(exc)) from exc
        self.store_errors.succeeded()
        self._count(stored, request, item)
        return {"url": request.url, "path": path, "checksum": stored.checksum, "status": "downloaded",
                "format": stored.ext, "kept": stored.kept, "source_format": stored.source_format,
                "size": stored.size, "width": stored.width, "height": stored.height}

    def _count(self, stored: StoredImage, request: Request, item: Any) -> None:
        stats = self.crawler.stats
        stats.inc_value("images/stored")
        stats.inc_value("images/bytes_written", stored.size)
        if stored.kept:
            stats.inc_value("images/stored/kept_as_served")
        else:
            stats.inc_value(f"images/stored/converted/{stored.source_format or 'unknown'}_to_{stored.ext}")
        for note in stored.notes:
            stats.inc_value(f"images/{note}")
            if note == "decompression_bomb_warning":
                logger.warning(
                    "Image %s (%s): %dx%d is over CIVITAI_MAX_IMAGE_PIXELS=%s; kept",
                    ItemAdapter(item).get("id"), request.url, stored.width, stored.height, self.policy.max_pixels,
                )

    def media_failed(self, failure: Failure, request: Request, info: MediaPipeline.SpiderInfo) -> NoReturn:
        exc = failure.value
        if isinstance(exc, ImageFailed):  # raised by media_downloaded
            raise exc
        raise ImageFailed(download_failure_reason(exc), f"{exc.__class__.__name__}: {exc}")

    def item_completed(self, results: list[FileInfoOrError], item: Any, info: MediaPipeline.SpiderInfo) -> Any:
        adapter = ItemAdapter(item)
        # Scrapy keeps every download's result for the whole run (for items sharing a
        # URL), keyed by the crawler's request fingerprint; ours do not share URLs, and
        # memory must not grow with the images stored.
        for url in adapter.get(self.URLS_FIELD) or []:
            info.downloaded.pop(self.crawler.request_fingerprinter.fingerprint(Request(url)), None)
        for ok, value in results:
            if ok:
                continue
            exc = value.value
            reason, detail = (exc.reason, exc.detail) if isinstance(exc, ImageFailed) else ("error", repr(exc))
            self._record_failure(adapter, reason, detail)
            raise RetryLater(f"image {adapter.get('id')} not stored: {reason} ({detail}) from {adapter.get('url')}")
        adapter[self.RESULT_FIELD] = [value for ok, value in results if ok]
        return item

    def _record_failure(self, adapter: ItemAdapter, reason: str, detail: str) -> None:
        self.crawler.stats.inc_value("images/failed")
        self.crawler.stats.inc_value(f"images/failed/{reason}")
        record = {
            "id": adapter.get("id"),
            "url": adapter.get("url"),
            "reason": reason,
            "detail": detail[:300],
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self.failures.append(json.dumps(record, ensure_ascii=False))
