"""A local store (a path or ``file://``): every file written atomically, in worker threads."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrapy.utils.asyncio import run_in_thread

from civitai_spider.config import CivitaiConfig
from civitai_spider.storage.atomic import AtomicWriter, remove_partial_files
from civitai_spider.storage.base import WRITE_PROBE, Storage, StoreWriteError
from civitai_spider.storage.metadata_files import sized_metadata_files
from civitai_spider.storage.records import FileRecord
from civitai_spider.storage.worker import store_image

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

    from civitai_spider.imaging import ImagePolicy, StoredImage

logger = logging.getLogger(__name__)


class LocalStorage(Storage):
    """Files under a folder, each written to a hidden ``.part`` file and renamed into place
    (``atomic``); the work (Pillow, hashing, writes) in a worker thread. At open, the
    ``.part`` files a killed run left are removed (only those older than
    ``CIVITAI_PARTIAL_FILES_MIN_AGE`` seconds: a shared crawl's other workers may be
    writing theirs)."""

    def __init__(self, crawler: Crawler, uri: str) -> None:
        super().__init__(crawler, uri)
        path = uri[len("file://"):] if uri.startswith("file://") else uri
        self.basedir = os.path.abspath(path)
        self.location = self.basedir
        self.writer = AtomicWriter(self.basedir)
        self.partial_min_age = CivitaiConfig.of(crawler).partial_files_min_age

    async def _open(self) -> None:
        removed = await run_in_thread(self._prepare)
        if removed:
            logger.info("Removed %d partial files left by an interrupted run", removed)

    def _prepare(self) -> int:
        self.writer.write_files([(WRITE_PROBE, b"ok\n")])
        Path(self.basedir, WRITE_PROBE).unlink(missing_ok=True)
        return remove_partial_files(Path(self.basedir), older_than=self.partial_min_age)

    async def store_image(
        self, data: bytes, stem: str, thumb_paths: dict[str, str], policy: ImagePolicy
    ) -> tuple[StoredImage, str]:
        stored, path, error = await run_in_thread(store_image, data, stem, thumb_paths, policy, self.writer.write_files)
        if error is not None:
            raise StoreWriteError(error)
        return stored, path

    async def write_metadata(
        self, stem: str, meta: Any, captions: bool, max_bytes: int, record: dict[str, Any] | None = None
    ) -> tuple[int, int]:
        return await run_in_thread(self._write_metadata, stem, meta, captions, max_bytes, record)

    def _write_metadata(
        self, stem: str, meta: Any, captions: bool, max_bytes: int, record: dict[str, Any] | None
    ) -> tuple[int, int]:
        files, size = sized_metadata_files(stem, meta, captions, max_bytes, record)
        try:
            self.writer.write_files((name, data) for name, (data, _) in files.items())
        except Exception as exc:
            raise StoreWriteError(exc) from exc
        return len(files), size

    def record(self, name: str) -> FileRecord:
        return FileRecord(Path(self.basedir) / name)
