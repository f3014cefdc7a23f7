"""The storage interface: what the pipelines ask of a store, whatever kind it is."""

from __future__ import annotations

import asyncio
import importlib.util
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

    from civitai_spider.imaging import ImagePolicy, StoredImage
    from civitai_spider.storage.records import Record

#: What each object-store scheme needs installed: (module, the pip package that has it).
STORE_MODULES = {"s3": ("botocore", "botocore"), "gs": ("google.cloud.storage", "google-cloud-storage")}
WRITE_PROBE = ".civitai-spider-write-test"


class StoreWriteError(Exception):
    """The store could not write (a full disk, a permission, the network); ``error`` is what it raised."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(f"{error.__class__.__name__}: {error}")
        self.error = error


def store_scheme(uri: str) -> str:
    """``file`` for a path, else the URI's scheme ("" for a relative path)."""
    return "file" if Path(uri).is_absolute() else urlparse(uri).scheme


def storage_problem(uri: str) -> str | None:
    """Why ``uri`` cannot be used as IMAGES_STORE here (empty, a scheme we have no storage for,
    a package its storage needs that is not installed), or None."""
    from civitai_spider.storage import storages  # the scheme -> class map (its modules import this one)

    if not uri.strip():
        return "IMAGES_STORE is empty: give a path, file://, s3:// or gs://"
    scheme = store_scheme(uri)
    if scheme not in storages():
        return f"IMAGES_STORE={uri!r} is not a store this project can write: use a path, file://, s3:// or gs://"
    module, package = STORE_MODULES.get(scheme, (None, None))
    if module is not None:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a parent package (google) is missing
            found = False
        if not found:
            return f"IMAGES_STORE={uri!r} needs the {package} package, which is not installed: pip install {package}"
    return None


class Storage(ABC):
    """Where a harvest goes: images (checked or converted, then written), their metadata
    files, and append-only records.

    One per crawl: an extension (``EXTENSIONS``), built from ``IMAGES_STORE`` by
    ``from_crawler``, which picks the kind by the URI's scheme (``storages()``, as
    Scrapy picks its media stores); the pipelines get it with
    ``crawler.get_extension(Storage)``. ``open`` readies it once, whoever asks
    first. Failures: ``imaging.ImageRejected`` for bytes that are not stored,
    ``StoreWriteError`` when the store cannot write, ``pool.StoreProcessFailed``
    when no store process could do the job. What to do about a failing store is
    the pipelines' call.
    """

    location: str  # for logs: a path or an s3:// / gs:// address

    def __init__(self, crawler: Crawler, uri: str) -> None:
        self.crawler = crawler
        self.uri = uri
        self._opening: asyncio.Future[None] | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Storage:
        from civitai_spider.config import CivitaiConfig
        from civitai_spider.storage import storage_class  # the scheme -> class map

        uri = str(crawler.settings.get("IMAGES_STORE") or "")
        problem = storage_problem(uri)
        if problem:
            raise ValueError(problem)
        return storage_class(uri, CivitaiConfig.of(crawler))(crawler, uri)

    async def open(self) -> None:
        """Ready the store for this crawl (once: a later call waits for the first); raises when
        it cannot be written."""
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())
        await asyncio.shield(self._opening)

    @abstractmethod
    async def _open(self) -> None:
        """Check that the store can be written (a probe file, written then removed)."""

    @abstractmethod
    async def store_image(
        self, data: bytes, stem: str, thumb_paths: dict[str, str], policy: ImagePolicy
    ) -> tuple[StoredImage, str]:
        """Check or convert ``data`` (``imaging.process_image``) and write it as ``<stem>.<ext>``
        with its thumbnails; (what was stored, without its bytes, its store-relative path)."""

    @abstractmethod
    async def write_metadata(
        self, stem: str, meta: Any, captions: bool, max_bytes: int, record: dict[str, Any] | None = None
    ) -> tuple[int, int]:
        """Write an image's metadata files (``metadata_files``), its ``record`` (``N.json``) last;
        (files, bytes) written. Raises ``MetadataTooLarge`` over ``max_bytes`` (nothing written)."""

    @abstractmethod
    def record(self, name: str) -> Record:
        """The append-only record ``name`` at the top of the store (its owner closes it)."""
