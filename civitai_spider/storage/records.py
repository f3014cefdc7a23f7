"""Append-only records at the top of a store: ``downloaded_ids.txt``, ``failures.jsonl``.

A ``Record`` is read whole at start (``read_chunks``/``read_lines``, blocking: run
them in a thread), appended to during the run, and closed at the end. Each kind
of storage makes its own (``Storage.record``):

- ``FileRecord`` (a local store): one file ``<store>/<name>``, appended to and
  flushed line by line (the original script's format: one id a line).
- ``SegmentRecord`` (``s3://``, ``gs://``): objects cannot be appended to, so
  each run writes segment objects ``<name>.d/<run-token>-<seq:06d>`` (run token:
  UTC start time and 6 random hex digits), each holding the lines appended since
  the previous one. A segment is written once ``CIVITAI_RECORD_FLUSH_LINES``
  lines wait, or ``CIVITAI_RECORD_FLUSH_SECONDS`` after the first waiting line,
  and at close, through the store's own ``persist_file`` (a worker thread).
  Reading gives the plain ``<name>`` object first (an old file uploaded by
  hand), then every segment in key order. Lines still waiting when the process
  is killed are lost: for done ids that only means downloading them again.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from scrapy.utils.asyncio import CallLaterResult, call_later
from scrapy.utils.defer import deferred_from_coro, ensure_awaitable, maybe_deferred_to_future
from twisted.internet.defer import Deferred, DeferredList

if TYPE_CHECKING:
    from scrapy.pipelines.files import FilesStoreProtocol, GCSFilesStore, S3FilesStore
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)

READ_CHUNK = 8 << 20  # bytes per chunk when reading a record file or the plain object
READ_AHEAD = 8  # segment objects fetched at once on reading (botocore keeps 10 connections)
RETRY_SECONDS = 10.0  # after a failed segment upload, wait this long before trying again
CLOSE_ATTEMPTS = 3  # segment uploads tried at close before the waiting lines are given up
RECORD_CONTENT_TYPE = "text/plain; charset=utf-8"


class Record(ABC):
    """A line-oriented append-only record at the top of a store."""

    location: str  # for logs: a path or an s3:// / gs:// address

    @abstractmethod
    def read_chunks(self) -> Iterator[bytes]:
        """The record's bytes in order, in chunks; each file or object ends with a newline. Blocking."""

    def read_lines(self) -> list[str]:
        """Every line of the record, in order. Blocking; for small records."""
        return b"".join(self.read_chunks()).decode("utf-8", errors="replace").splitlines()

    @abstractmethod
    def append(self, line: str) -> None:
        """Add one line (a trailing newline is added); never blocks the reactor for long."""

    def extend(self, lines: list[str]) -> None:
        """Add many lines at once, in order (one write; on an object store, one segment)."""
        for line in lines:
            self.append(line)

    @abstractmethod
    async def close(self) -> None:
        """Write whatever is still waiting; the record is not appended to afterwards."""


class FileRecord(Record):
    """An append-only text file in a filesystem store, flushed after every append."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)
        self._handle: Any = None

    def read_chunks(self) -> Iterator[bytes]:
        try:
            source = open(self.path, "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            return
        with source:
            yield from _ending_in_newline(iter(lambda: source.read(READ_CHUNK), b""))

    def append(self, line: str) -> None:
        if self._handle is None:
            self._handle = self._open()
        self._handle.write(line.rstrip("\n") + "\n")
        self._handle.flush()

    def _open(self) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mid_line = _ends_mid_line(self.path)
        handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
        if mid_line:  # a file dropped in without a final newline: do not glue our first id to its last
            handle.write("\n")
        return handle

    def extend(self, lines: list[str]) -> None:
        if self._handle is None:
            self._handle = self._open()
        self._handle.write("".join(f"{line.rstrip(chr(10))}\n" for line in lines))
        self._handle.flush()

    async def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _ends_mid_line(path: Path) -> bool:
    try:
        with open(path, "rb") as source:
            source.seek(-1, os.SEEK_END)
            return source.read(1) != b"\n"
    except OSError:  # missing, or empty (cannot seek before the start)
        return False


def _ending_in_newline(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """``chunks`` as they are, plus a newline when the last one does not end with one."""
    last = b"\n"
    for chunk in chunks:
        if chunk:
            yield chunk
            last = chunk[-1:]
    if last != b"\n":
        yield b"\n"


class ObjectReader(Protocol):
    """Blocking listing, reading and removal of objects under an object store's prefix."""

    root: str  # the store's address, ending with its prefix

    def keys(self, start: str) -> list[str]:
        """Keys (relative to the store's prefix) that begin with ``start``."""
        ...

    def chunks(self, key: str) -> Iterator[bytes]:
        """The bytes of one object (``key`` relative to the store's prefix)."""
        ...

    def delete(self, key: str) -> None:
        """Remove one object (``key`` relative to the store's prefix)."""
        ...


class S3Objects:
    """``ObjectReader`` over Scrapy's ``S3FilesStore`` (its botocore client, bucket and prefix)."""

    def __init__(self, store: S3FilesStore) -> None:
        self.client: Any = store.s3_client  # type: ignore[attr-defined]
        self.bucket = store.bucket
        self.prefix = store.prefix
        self.root = f"s3://{store.bucket}/{store.prefix}"

    def keys(self, start: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + start)
        return [entry["Key"][len(self.prefix):] for page in pages for entry in page.get("Contents", ())]

    def chunks(self, key: str) -> Iterator[bytes]:
        body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"]
        try:
            yield from body.iter_chunks(READ_CHUNK)
        finally:
            body.close()

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)


class GCSObjects:
    """``ObjectReader`` over Scrapy's ``GCSFilesStore`` (its bucket and prefix)."""

    def __init__(self, store: GCSFilesStore) -> None:
        self.bucket = store.bucket
        self.prefix = store.prefix
        self.root = f"gs://{store.bucket.name}/{store.prefix}"

    def keys(self, start: str) -> list[str]:
        return [blob.name[len(self.prefix):] for blob in self.bucket.list_blobs(prefix=self.prefix + start)]

    def chunks(self, key: str) -> Iterator[bytes]:
        yield self.bucket.blob(self.prefix + key).download_as_bytes()

    def delete(self, key: str) -> None:
        self.bucket.blob(self.prefix + key).delete()


def new_run_token() -> str:
    """``<UTC now>-<6 random hex>``: segments sort by the start of their run, and runs never collide."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _whole_object(objects: ObjectReader, key: str) -> bytes:
    return b"".join(_ending_in_newline(objects.chunks(key)))


def _objects_in_order(objects: ObjectReader, keys: list[str], ahead: int = READ_AHEAD) -> Iterator[bytes]:
    """Each object of ``keys`` whole, in that order, up to ``ahead`` fetched at once in threads."""
    if not keys:
        return
    with ThreadPoolExecutor(max_workers=min(ahead, len(keys)), thread_name_prefix="record-read") as pool:
        window: deque[Future[bytes]] = deque()
        for key in keys:
            window.append(pool.submit(_whole_object, objects, key))
            if len(window) >= ahead:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


class SegmentRecord(Record):
    """A record in an object store: the plain ``<name>`` object plus this and earlier runs' segments."""

    def __init__(
        self,
        store: FilesStoreProtocol,
        objects: ObjectReader,
        name: str,
        *,
        flush_lines: int = 500,
        flush_seconds: float = 30.0,
        stats: StatsCollector | None = None,
        run_token: str | None = None,
    ) -> None:
        self.store = store
        self.objects = objects
        self.name = name
        self.location = objects.root + name
        self.flush_lines = max(1, flush_lines)
        self.flush_seconds = max(0.0, flush_seconds)
        self.stats = stats
        self.run_token = run_token or new_run_token()
        self._pending: list[str] = []
        self._first_pending: float | None = None  # time.monotonic() of the oldest waiting line
        self._retry_at = 0.0  # after a failed upload, appends flush nothing before this (the timer retries)
        self._timer: CallLaterResult | None = None
        self._seq = 0
        self._uploads: set[Deferred[None]] = set()
        self._closed = False

    @property
    def segments_prefix(self) -> str:
        return f"{self.name}.d/"

    def segment_key(self, seq: int) -> str:
        return f"{self.segments_prefix}{self.run_token}-{seq:06d}"

    def read_chunks(self) -> Iterator[bytes]:
        keys = self.objects.keys(self.name)
        if self.name in keys:
            yield from _ending_in_newline(self.objects.chunks(self.name))
        segments = sorted(key for key in keys if key.startswith(self.segments_prefix))
        yield from _objects_in_order(self.objects, segments)

    def append(self, line: str) -> None:
        if self._closed:
            raise RuntimeError(f"{self.location}: appended to after close")
        now = time.monotonic()
        self._pending.append(line.rstrip("\n"))
        if self._first_pending is None:
            self._first_pending = now
            self._arm_timer(self.flush_seconds)
        if now >= self._retry_at and (
            len(self._pending) >= self.flush_lines
            or (self.flush_seconds and now - self._first_pending >= self.flush_seconds)
        ):
            self.flush()

    def extend(self, lines: list[str]) -> None:
        if self._closed:
            raise RuntimeError(f"{self.location}: appended to after close")
        self._pending.extend(line.rstrip("\n") for line in lines)
        self.flush()  # one segment, written whole (a PUT): all of them or none

    def flush(self) -> None:
        """Start writing the waiting lines as the next segment (the upload runs in a thread)."""
        self._cancel_timer()
        if not self._pending:
            return
        lines, self._pending, self._first_pending = self._pending, [], None
        self._seq += 1
        upload = deferred_from_coro(self._upload(self.segment_key(self._seq), lines))
        self._uploads.add(upload)
        upload.addBoth(lambda _: self._uploads.discard(upload))

    async def wait_uploads(self) -> None:
        """Wait until every segment upload started so far has finished (written or failed)."""
        while self._uploads:
            await maybe_deferred_to_future(DeferredList(list(self._uploads), consumeErrors=True))

    async def close(self) -> None:
        self._closed = True
        for _ in range(CLOSE_ATTEMPTS):
            self.flush()
            await self.wait_uploads()
            if not self._pending:
                break
        self._cancel_timer()
        if self._pending:
            logger.error("%s: %d lines could not be written and are lost", self.location, len(self._pending))
            self._count("lines_lost", len(self._pending))
            self._pending = []

    async def _upload(self, key: str, lines: list[str]) -> None:
        data = "".join(f"{line}\n" for line in lines).encode("utf-8")
        try:
            await ensure_awaitable(
                self.store.persist_file(key, BytesIO(data), None, headers={"Content-Type": RECORD_CONTENT_TYPE})  # type: ignore[arg-type]
            )
        except Exception as exc:
            logger.warning(
                "%s: segment %s not written (%s: %s); its %d lines wait for the next one",
                self.location, key, exc.__class__.__name__, exc, len(lines),
            )
            self._count("upload_errors")
            self._requeue(lines)
        else:
            self._count("segments_written")

    def _requeue(self, lines: list[str]) -> None:
        self._pending[:0] = lines
        now = time.monotonic()
        self._first_pending = now if self._first_pending is None else min(self._first_pending, now)
        if not self._closed:
            self._retry_at = now + RETRY_SECONDS
            self._cancel_timer()
            self._arm_timer(RETRY_SECONDS)

    def _arm_timer(self, delay: float) -> None:
        if delay > 0 and self._timer is None and not self._closed:
            self._timer = call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _count(self, what: str, count: int = 1) -> None:
        if self.stats is not None:
            self.stats.inc_value(f"records/{self.name}/{what}", count)
