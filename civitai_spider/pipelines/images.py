"""Images pipeline: download each image, store it as ``<id>.<ext>``, refuse bad files cleanly.

Built on Scrapy's ``ImagesPipeline`` (stores, ``IMAGES_*`` settings, thumbnails,
``images`` result field) with what Scrapy 2.19 gets wrong for us replaced:
the format decision is made on the bytes, not on ``image.format`` after
``exif_transpose`` (alpha stays alpha, JPEGs are not re-encoded), every store
gets the right Content-Type, and all Pillow work and hashing run in worker
threads (``civitai_spider.imaging``), so downloads keep flowing and both cores
are used.

A file that cannot be stored (HTTP error, unidentifiable or damaged bytes, a
bomb, a download over ``CIVITAI_IMAGE_MAX_BYTES``) fails its item: the item is
dropped with the reason, one JSON line goes to the ``failures.jsonl`` record at
the top of the store (id, url, reason, detail, UTC time; on ``s3://``/``gs://``
segment objects under ``failures.jsonl.d/``, see ``civitai_spider.stores``),
``images/failed/<reason>`` is counted, and the crawl goes on. Failed images are
not recorded as done, so the next run tries them again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from itemadapter import ItemAdapter
from PIL import Image
from scrapy.http import Request, Response
from scrapy.http.request import NO_CALLBACK
from scrapy.pipelines.files import FSFilesStore
from scrapy.pipelines.images import ImagesPipeline
from scrapy.pipelines.media import _MediaRequestFiltered
from scrapy.utils.asyncio import run_in_thread
from scrapy.utils.defer import ensure_awaitable

from civitai_spider.exceptions import RetryLater
from civitai_spider.imaging import (
    ImagePolicy,
    ImageRejected,
    StoredImage,
    process_image,
)
from civitai_spider.setting_checks import CHOICES, choice
from civitai_spider.shared_crawl.state import redis_url
from civitai_spider.store_pool import StoreProcessFailed, StorePool
from civitai_spider.store_worker import store_image
from civitai_spider.stores import (
    STORE_SCHEMES,
    AtomicFSFilesStore,
    StoreErrors,
    open_record,
    remove_partial_files,
)

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.pipelines.media import FileInfo, FileInfoOrError, MediaPipeline
    from twisted.python.failure import Failure

logger = logging.getLogger(__name__)

FORMATS = CHOICES["CIVITAI_IMAGE_FORMAT"]
FAILURES_FILE = "failures.jsonl"


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


class CivitaiImagesPipeline(ImagesPipeline):
    STORE_SCHEMES = {**ImagesPipeline.STORE_SCHEMES, **STORE_SCHEMES}

    def __init__(self, store_uri: str, download_func: None = None, *, crawler: Crawler) -> None:
        super().__init__(store_uri, crawler=crawler)
        settings = crawler.settings
        image_format = choice(settings, "CIVITAI_IMAGE_FORMAT")
        max_pixels = settings.getint("CIVITAI_MAX_IMAGE_PIXELS", 89_478_485)
        self.policy = ImagePolicy(
            format=image_format,
            jpeg_quality=settings.getint("CIVITAI_JPEG_QUALITY", 95),
            max_pixels=max_pixels if max_pixels > 0 else None,
            min_width=self.min_width,
            min_height=self.min_height,
            thumbs=tuple((name, tuple(size)) for name, size in self.thumbs.items()),
        )
        self.max_bytes = settings.getint("CIVITAI_IMAGE_MAX_BYTES")
        self.store_errors = StoreErrors(crawler)
        in_flight = settings.getint("CIVITAI_IMAGES_IN_FLIGHT")
        if in_flight <= 0:
            in_flight = max(1, settings.getint("CONCURRENT_REQUESTS") - 8)
        # Every queued download counts against CONCURRENT_REQUESTS; past it, Scrapy
        # stops handing out scheduled requests, API pages included. Gating images
        # below that limit keeps the walk going however large the image backlog.
        self._gate = asyncio.Semaphore(in_flight)
        self.local_root = Path(self.store.basedir) if isinstance(self.store, FSFilesStore) else None
        self.failures = open_record(self.store, FAILURES_FILE, settings, crawler.stats)
        self.pool = crawler.get_extension(StorePool)  # None: checked and written in threads

    def open_spider(self, spider: Any = None) -> None:
        super().open_spider()
        # The bomb check is done by civitai_spider.imaging with CIVITAI_MAX_IMAGE_PIXELS,
        # before any decode; Pillow's process-wide one (a warning we could not
        # catch per image from worker threads) is turned off for this process.
        Image.MAX_IMAGE_PIXELS = None
        if self.local_root is not None:
            # A shared crawl: other workers may be writing to this folder right now.
            shared = bool(redis_url(self.crawler.settings))
            removed = remove_partial_files(self.local_root, older_than=3600.0 if shared else 0.0)
            if removed:
                logger.info("Removed %d partial files left by an interrupted run", removed)

    async def close_spider(self, spider: Any = None) -> None:
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
        urls = ItemAdapter(item).get(self.images_urls_field) or []
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

    def thumb_path(
        self,
        request: Request,
        thumb_id: str,
        response: Response | None = None,
        info: MediaPipeline.SpiderInfo | None = None,
        *,
        item: Any = None,
    ) -> str:
        return f"thumbs/{thumb_id}/{self.file_path(request, item=item)}.jpg"

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
        thumb_paths = {thumb_id: self.thumb_path(request, thumb_id, item=item) for thumb_id, _ in self.policy.thumbs}
        if isinstance(self.store, AtomicFSFilesStore):
            # A local store: check/convert and write in one hop, to a store process or a thread.
            if self.pool is not None and self.pool.usable:
                stored, path, store_error = await self._store_in_pool(response.body, stem, thumb_paths)
            else:
                stored, path, store_error = await run_in_thread(self._store_locally, response.body, stem, thumb_paths)
            if store_error is not None:
                self._store_failed(store_error)
            self.store_errors.succeeded()
        else:
            stored = await run_in_thread(self._process, response.body)
            path = f"{stem}.{stored.ext}"
            await self._persist(path, stored.data, stored.content_type, stored)
            for thumb_id, data in stored.thumbs.items():
                await self._persist(thumb_paths[thumb_id], data, "image/jpeg", stored)
        self._count(stored, request, item)
        return {"url": request.url, "path": path, "checksum": stored.checksum, "status": "downloaded"}

    async def _store_in_pool(
        self, data: bytes, stem: str, thumb_paths: dict[str, str]
    ) -> tuple[StoredImage, str, Exception | None]:
        """``_store_locally`` done by a store process (``civitai_spider.store_pool``)."""
        assert self.pool is not None
        try:
            return await self.pool.store_image(data, stem, thumb_paths, self.policy)
        except ImageRejected as exc:
            raise ImageFailed(exc.reason, exc.detail) from None
        except StoreProcessFailed as exc:
            raise ImageFailed("store_process_died", str(exc)) from None

    def _process(self, data: bytes) -> StoredImage:
        """``process_image`` with its refusal as the pipeline's failure (in a worker thread)."""
        try:
            return process_image(data, self.policy)
        except ImageRejected as exc:
            raise ImageFailed(exc.reason, exc.detail) from None

    def _store_locally(
        self, data: bytes, stem: str, thumb_paths: dict[str, str]
    ) -> tuple[StoredImage, str, Exception | None]:
        """Process the bytes and write the image and its thumbnails (in a worker thread).

        Returns the store's error instead of raising it, so that the reactor thread
        tells a refused image (``ImageFailed``, raised) from a failing store.
        """
        assert isinstance(self.store, AtomicFSFilesStore)
        try:
            return store_image(data, stem, thumb_paths, self.policy, self.store.write_files)
        except ImageRejected as exc:
            raise ImageFailed(exc.reason, exc.detail) from None

    async def _persist(self, path: str, data: bytes, content_type: str, stored: StoredImage) -> None:
        try:
            await ensure_awaitable(
                self.store.persist_file(
                    path,
                    BytesIO(data),
                    self.spiderinfo,
                    meta={"width": stored.width, "height": stored.height},
                    headers={"Content-Type": content_type},
                )
            )
        except Exception as exc:
            self._store_failed(exc)
        self.store_errors.succeeded()

    def _store_failed(self, exc: Exception) -> NoReturn:
        self.store_errors.failed(exc)
        raise ImageFailed("store_error", f"{exc.__class__.__name__}: {exc}") from exc

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
        # URL); ours do not share URLs, and memory must not grow with the images stored.
        for url in adapter.get(self.images_urls_field) or []:
            info.downloaded.pop(self._fingerprinter.fingerprint(Request(url)), None)
        for ok, value in results:
            if ok:
                continue
            exc = value.value
            reason, detail = (exc.reason, exc.detail) if isinstance(exc, ImageFailed) else ("error", repr(exc))
            self._record_failure(adapter, reason, detail)
            raise RetryLater(f"image {adapter.get('id')} not stored: {reason} ({detail}) from {adapter.get('url')}")
        adapter[self.images_result_field] = [value for ok, value in results if ok]
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
