"""Reading a harvest's store for an export: which images it holds, and their files.

A store is a folder, ``s3://bucket/prefix/`` or ``gs://bucket/prefix/`` (the
``IMAGES_STORE`` of a crawl). Its top level is listed once, streaming
(``os.scandir``; a delimited listing on an object store, so ``thumbs/`` and
``seen/`` are never walked): ``N.<ext>`` are the images and videos,
``N.json`` their records. What is kept of the listing is two compact id
arrays (8 bytes an image), so memory does not grow with the store's size
beyond that; entries come out sorted by id.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from civitai_spider.storage.base import store_scheme

#: Extensions of a store's images and videos, in the order a duplicate (one id, two files:
#: a store filled under two format policies) is picked when the record does not say.
MEDIA_EXTS = ("jpg", "png", "webp", "gif", "jpeg", "avif", "mp4", "webm")
VIDEO_EXTS = frozenset({"mp4", "webm"})
_EXT_CODE = {ext: code for code, ext in enumerate(MEDIA_EXTS)}
_SHIFT = 4  # an entry key is id << 4 | extension code


#: Ids are kept as ``id << 4`` in an int64: a name of more digits is not a Civitai id.
MAX_ID_DIGITS = 17


class StoreError(Exception):
    """A store that cannot be read as a harvest (missing, not a folder, unreachable)."""


class FileUnreadable(Exception):
    """One file of the store that is there but cannot be read (a folder, no permission...)."""


@dataclass(frozen=True)
class Entry:
    """One image of the store: its id, its files (usually one), and whether it has a record."""

    id: int
    files: tuple[str, ...]
    has_record: bool


@dataclass
class Listing:
    keys: np.ndarray  # sorted id << 4 | extension code, one per media file
    records: np.ndarray  # sorted ids that have N.json
    #: Names that look like a harvest's but are not as a crawl writes them (``3.JPG``, ``007.jpg``,
    #: an id of more than 17 digits): not exported, counted; a few kept to name them.
    ignored: int = 0
    ignored_examples: tuple[str, ...] = ()

    @property
    def images(self) -> int:
        return len(np.unique(self.keys >> _SHIFT))

    def entries(self) -> Iterator[Entry]:
        keys, records = self.keys, self.records
        index = 0
        while index < len(keys):
            image_id = int(keys[index] >> _SHIFT)
            files = []
            while index < len(keys) and int(keys[index] >> _SHIFT) == image_id:
                files.append(f"{image_id}.{MEDIA_EXTS[int(keys[index]) & ((1 << _SHIFT) - 1)]}")
                index += 1
            position = np.searchsorted(records, image_id)
            has_record = bool(position < len(records) and records[position] == image_id)
            yield Entry(image_id, tuple(files), has_record)

    def records_without_media(self) -> int:
        return int(np.setdiff1d(self.records, self.keys >> _SHIFT, assume_unique=False).size)


class StoreSource(ABC):
    """A store to export from: its listing, and any of its top-level files by name."""

    location: str

    @abstractmethod
    def names(self) -> Iterator[str]:
        """Every top-level name of the store, streaming, in no particular order."""

    @abstractmethod
    def read(self, name: str) -> bytes | None:
        """A top-level file's bytes, or None if there is none by that name."""

    def close(self) -> None:  # noqa: B027 (most sources hold nothing)
        """Release what the source holds."""

    def list(self) -> Listing:
        keys: list[int] = []
        records: list[int] = []
        key_chunks: list[np.ndarray] = []
        record_chunks: list[np.ndarray] = []
        ignored: list[str] = []
        ignored_count = 0
        for name in self.names():
            stem, dot, ext = name.rpartition(".")
            if not dot or not (stem.isascii() and stem.isdigit()):
                continue
            lower = ext.lower()
            if lower != "json" and lower not in _EXT_CODE:
                continue  # N.txt (captions) and other files that are not images or records
            if ext != lower or stem != str(int(stem)) or len(stem) > MAX_ID_DIGITS:
                ignored_count += 1  # 3.JPG, 007.jpg: a crawl never writes these; the name cannot be rebuilt
                if len(ignored) < 3:
                    ignored.append(name)
                continue
            if ext == "json":
                records.append(int(stem))
            elif ext in _EXT_CODE:
                keys.append(int(stem) << _SHIFT | _EXT_CODE[ext])
            if len(keys) >= 65536:
                key_chunks.append(np.array(keys, dtype=np.int64))
                keys.clear()
            if len(records) >= 65536:
                record_chunks.append(np.array(records, dtype=np.int64))
                records.clear()
        key_chunks.append(np.array(keys, dtype=np.int64))
        record_chunks.append(np.array(records, dtype=np.int64))
        return Listing(np.sort(np.concatenate(key_chunks)), np.sort(np.concatenate(record_chunks)),
                       ignored_count, tuple(ignored))


class LocalSource(StoreSource):
    def __init__(self, path: str) -> None:
        path = path[len("file://"):] if path.startswith("file://") else path
        self.path = os.path.abspath(path)
        self.location = self.path
        if not os.path.exists(self.path):
            raise StoreError(f"store not found: {self.path}")
        if not os.path.isdir(self.path):
            raise StoreError(f"not a folder: {self.path}")

    def names(self) -> Iterator[str]:
        try:
            with os.scandir(self.path) as entries:
                for entry in entries:
                    if not entry.name.startswith("."):  # hidden, and writes in progress (.N.ext.xxx.part)
                        yield entry.name
        except OSError as exc:
            raise StoreError(f"cannot list {self.path}: {exc.strerror or exc}") from None

    def read(self, name: str) -> bytes | None:
        try:
            with open(os.path.join(self.path, name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise FileUnreadable(f"{name}: {exc.strerror or exc}") from None

    def file_path(self, name: str) -> str:
        """The local path of a top-level file (for hard links)."""
        return os.path.join(self.path, name)


class S3Source(StoreSource):
    def __init__(self, uri: str, settings: Any) -> None:
        from botocore.exceptions import BotoCoreError

        from civitai_spider.storage.objects import s3_store_class

        try:
            store = s3_store_class(settings)(uri)
        except (BotoCoreError, ValueError) as exc:  # a bad profile, config file or endpoint
            raise StoreError(f"cannot use {uri}: {exc}") from None
        self.client = store.s3_client  # type: ignore[attr-defined]
        self.bucket, self.prefix = store.bucket, store.prefix
        self.location = f"s3://{self.bucket}/{self.prefix}"

    def names(self) -> Iterator[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix, Delimiter="/")
            for page in pages:
                for entry in page.get("Contents", ()):
                    yield entry["Key"][len(self.prefix):]
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"cannot list {self.location}: {exc}") from None

    def read(self, name: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                return None
            raise FileUnreadable(f"{name}: {code or exc}") from None
        try:
            return body.read()
        finally:
            body.close()


class GCSSource(StoreSource):
    def __init__(self, uri: str, settings: Any) -> None:
        from civitai_spider.storage.objects import gcs_store_class

        store = gcs_store_class(settings)(uri)
        self.bucket, self.prefix = store.bucket, store.prefix
        self.location = f"gs://{self.bucket.name}/{self.prefix}"

    def names(self) -> Iterator[str]:
        from google.api_core.exceptions import GoogleAPIError

        try:
            for blob in self.bucket.list_blobs(prefix=self.prefix, delimiter="/"):
                yield blob.name[len(self.prefix):]
        except GoogleAPIError as exc:
            raise StoreError(f"cannot list {self.location}: {exc}") from None

    def read(self, name: str) -> bytes | None:
        from google.api_core.exceptions import GoogleAPIError, NotFound

        try:
            return self.bucket.blob(self.prefix + name).download_as_bytes()
        except NotFound:
            return None
        except GoogleAPIError as exc:
            raise FileUnreadable(f"{name}: {exc}") from None


def open_source(uri: str, settings: Any) -> StoreSource:
    """The store at ``uri`` (a path, ``file://``, ``s3://`` or ``gs://``), with the crawl's
    settings for credentials (``AWS_*``, ``GCS_PROJECT_ID``)."""
    from civitai_spider.storage.base import storage_problem

    problem = storage_problem(uri)
    if problem:
        raise StoreError(problem.replace("IMAGES_STORE", "STORE").replace("is not a store this project can write",
                                                                            "is not a store this project can read"))
    scheme = store_scheme(uri)
    if scheme == "s3":
        return S3Source(uri, settings)
    if scheme == "gs":
        return GCSSource(uri, settings)
    return LocalSource(uri)
