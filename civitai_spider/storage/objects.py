"""An object store (``s3://``, ``gs://``): Scrapy's media stores, each object written whole."""

from __future__ import annotations

from io import BytesIO
from typing import TYPE_CHECKING, Any

from scrapy.pipelines.files import GCSFilesStore, S3FilesStore
from scrapy.utils.asyncio import run_in_thread
from scrapy.utils.defer import ensure_awaitable

from civitai_spider.config import CivitaiConfig
from civitai_spider.imaging import process_image
from civitai_spider.storage.base import WRITE_PROBE, Storage, StoreWriteError, store_scheme
from civitai_spider.storage.metadata_files import sized_metadata_files
from civitai_spider.storage.records import RECORD_CONTENT_TYPE, GCSObjects, ObjectReader, S3Objects, SegmentRecord

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.pipelines.files import FilesStoreProtocol
    from scrapy.settings import BaseSettings

    from civitai_spider.imaging import ImagePolicy, StoredImage


def s3_store_class(settings: BaseSettings) -> type[S3FilesStore]:
    """Scrapy's ``S3FilesStore`` with this crawl's credentials and ACL (``AWS_*``,
    ``IMAGES_STORE_S3_ACL``): what its images pipeline sets on the class itself
    (``_update_stores``), on a subclass of our own instead."""
    attributes = {name: settings[name] for name in (
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
        "AWS_REGION_NAME", "AWS_USE_SSL", "AWS_VERIFY")}
    attributes["AWS_MAX_POOL_CONNECTIONS"] = (
        settings.getint("AWS_MAX_POOL_CONNECTIONS") or settings.getint("REACTOR_THREADPOOL_MAXSIZE") or None)
    attributes["POLICY"] = settings["IMAGES_STORE_S3_ACL"]
    return type("CrawlS3FilesStore", (S3FilesStore,), attributes)


def gcs_store_class(settings: BaseSettings) -> type[GCSFilesStore]:
    """Scrapy's ``GCSFilesStore`` with this crawl's project and ACL (``GCS_PROJECT_ID``, ``IMAGES_STORE_GCS_ACL``)."""
    attributes = {"GCS_PROJECT_ID": settings["GCS_PROJECT_ID"], "POLICY": settings["IMAGES_STORE_GCS_ACL"] or None}
    return type("CrawlGCSFilesStore", (GCSFilesStore,), attributes)


class ObjectStorage(Storage):
    """``s3://bucket/prefix/`` or ``gs://bucket/prefix/``: images checked or converted in a
    worker thread, then each file put as one object (atomic by nature); records as
    segment objects (``records.SegmentRecord``)."""

    def __init__(self, crawler: Crawler, uri: str) -> None:
        super().__init__(crawler, uri)
        settings = crawler.settings
        self.files: FilesStoreProtocol
        self.objects: ObjectReader
        if store_scheme(uri) == "s3":
            s3 = s3_store_class(settings)(uri)
            self.files, self.objects = s3, S3Objects(s3)
        else:
            gcs = gcs_store_class(settings)(uri)
            self.files, self.objects = gcs, GCSObjects(gcs)
        self.location = self.objects.root
        config = CivitaiConfig.of(crawler)
        self.flush_lines = config.record_flush_lines
        self.flush_seconds = config.record_flush_seconds

    async def _open(self) -> None:
        await self._put(WRITE_PROBE, b"ok\n", RECORD_CONTENT_TYPE)
        await run_in_thread(self.objects.delete, WRITE_PROBE)

    async def _put(self, path: str, data: bytes, content_type: str, meta: dict[str, Any] | None = None) -> None:
        await ensure_awaitable(self.files.persist_file(
            path, BytesIO(data), None, meta=meta, headers={"Content-Type": content_type}))  # type: ignore[arg-type]

    async def store_image(
        self, data: bytes, stem: str, thumb_paths: dict[str, str], policy: ImagePolicy
    ) -> tuple[StoredImage, str]:
        stored = await run_in_thread(process_image, data, policy)
        path = f"{stem}.{stored.ext}"
        files = [(path, stored.data, stored.content_type),
                 *((thumb_paths[thumb_id], thumb, "image/jpeg") for thumb_id, thumb in stored.thumbs.items())]
        stored.data, stored.thumbs = b"", {}  # neither kept nor handed on
        try:
            for name, body, content_type in files:
                await self._put(name, body, content_type, meta={"width": stored.width, "height": stored.height})
        except Exception as exc:
            raise StoreWriteError(exc) from exc
        return stored, path

    async def write_metadata(
        self, stem: str, meta: Any, captions: bool, max_bytes: int, record: dict[str, Any] | None = None
    ) -> tuple[int, int]:
        files, size = await run_in_thread(sized_metadata_files, stem, meta, captions, max_bytes, record)
        try:
            for name, (data, content_type) in files.items():
                await self._put(name, data, content_type)
        except Exception as exc:
            raise StoreWriteError(exc) from exc
        return len(files), size

    def record(self, name: str) -> SegmentRecord:
        return SegmentRecord(self.files, self.objects, name, flush_lines=self.flush_lines,
                             flush_seconds=self.flush_seconds, stats=self.crawler.stats)
