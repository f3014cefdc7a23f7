"""Where files go: Scrapy's media stores, made atomic, plus append-only record files.

``AtomicFSFilesStore`` is Scrapy's ``FSFilesStore`` that writes each file to a
hidden ``.<name>.<random>.part`` beside its final name and renames it into place
(``os.replace``), in a worker thread: a crash never leaves a partial file under a
final name, and disk writes never block the reactor. Object stores (``s3://``,
``gs://``) are atomic per object already and are used as Scrapy provides them.

``RecordFile`` is a line-oriented append-only file at the top of a store
(``failures.jsonl``, ``downloaded_ids.txt``).
"""

from __future__ import annotations

import os
import secrets
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from scrapy.pipelines.files import FilesStoreProtocol, FSFilesStore, GCSFilesStore, S3FilesStore
from scrapy.pipelines.images import ImagesPipeline
from scrapy.settings import BaseSettings
from scrapy.utils.asyncio import run_in_thread
from scrapy.utils.defer import deferred_from_coro
from twisted.internet.defer import Deferred

PART_SUFFIX = ".part"


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either absent, old, or complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{PART_SUFFIX}")
    try:
        with open(temp, "wb") as out:
            out.write(data)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def remove_partial_files(folder: Path) -> int:
    """Delete ``.*.part`` files left in ``folder`` by a process that died mid-write."""
    removed = 0
    if folder.is_dir():
        for entry in os.scandir(folder):
            if entry.name.startswith(".") and entry.name.endswith(PART_SUFFIX):
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
    return removed


class AtomicFSFilesStore(FSFilesStore):
    def persist_file(  # type: ignore[override]
        self,
        path: str,
        buf: BytesIO,
        info: Any,
        meta: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Deferred[None]:
        return deferred_from_coro(run_in_thread(write_atomically, self._get_filesystem_path(path), buf.getvalue()))


class RecordFile:
    """An append-only text file in a filesystem store, flushed after every append."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: Any = None

    def read_lines(self) -> list[str]:
        try:
            return self.path.read_text("utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def append(self, line: str) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
        self._handle.write(line.rstrip("\n") + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


STORE_SCHEMES: dict[str, type[Any]] = {
    "": AtomicFSFilesStore,
    "file": AtomicFSFilesStore,
    "s3": S3FilesStore,
    "gs": GCSFilesStore,
}


def open_store(uri: str, settings: BaseSettings) -> FilesStoreProtocol:
    """The store for ``uri`` as the images pipeline opens it (same credentials, ACLs, atomicity)."""
    # Scrapy configures its S3/GCS store classes from settings (AWS_*, GCS_*, *_ACL) here.
    ImagesPipeline._update_stores(settings)
    scheme = "file" if Path(uri).is_absolute() else urlparse(uri).scheme
    if scheme not in STORE_SCHEMES:
        raise ValueError(f"unsupported store {uri!r}: use a path, file://, s3:// or gs://")
    return STORE_SCHEMES[scheme](uri)
