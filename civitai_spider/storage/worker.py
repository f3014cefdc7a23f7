"""A store process: checks or converts downloaded images and writes files to a local store.

Started by ``civitai_spider.storage.pool.StorePool`` as ``python -c "...; main()"``,
it imports Pillow and our imaging code, nothing of Scrapy. It reads jobs from its
stdin and answers each one, in order, on its stdout (fd 1 is pointed at stderr
once the process starts, so that nothing but answers ever goes there).

Every message, both ways, is a frame: ``!II`` (header length, data length), a
JSON header (a list), then the data bytes (an image, or nothing). JSON, not
pickle: this process has just parsed hostile bytes, and the crawl's process must
not unpickle what it sends. Jobs:

- ``["init", basedir, shared]``: ``shared`` is null or [fd, size] of the memory shared
  with the crawl's process (``pool._Ring``). Answered ``["ready", pid]``.
- ``["image", stem, thumb_paths, policy]`` + the downloaded bytes, or
  ``["image", stem, thumb_paths, policy, [offset, length]]``, the bytes being at that
  place in the shared memory (no longer needed once answered): ``process_image`` then
  the image (``<stem>.<ext>``) and its thumbnails written atomically. ``policy`` is
  ``ImagePolicy.to_json()``. Answered ``["stored", summary]`` (``StoredImage.summary()``),
  ``["rejected", reason, detail]``, or ``["store_error", summary, error]``.
- ``["metadata", stem, meta, captions, max_bytes, record]``: the image's metadata files
  (``metadata_files``, the record ``N.json`` last, when not null) written atomically, in order. Answered ``["written", files,
  bytes]``, ``["too_large", bytes]`` (over ``max_bytes``: none written) or
  ``["store_error", null, error]``.

An error is ``[class name, errno or null, message, filename or null]``; any
other exception in a job is answered ``["error", traceback text]``. End of input
ends the process (exit 0): the crawl closing, or the crawl's process gone.
"""

from __future__ import annotations

import json
import mmap
import os
import signal
import struct
import sys
import traceback
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO

from PIL import Image

from civitai_spider.imaging import ImagePolicy, ImageRejected, StoredImage, process_image
from civitai_spider.storage.atomic import AtomicWriter
from civitai_spider.storage.metadata_files import MetadataTooLarge, sized_metadata_files

FRAME = struct.Struct("!II")


def encode_header(header: list[Any]) -> bytes:
    return json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode_header(meta: bytes) -> list[Any]:
    header = json.loads(meta)
    if not isinstance(header, list) or not header:
        raise ValueError(f"not a message: {meta[:80]!r}")
    return header


def write_frame(out: BinaryIO, header: list[Any], data: bytes = b"") -> None:
    meta = encode_header(header)
    out.write(FRAME.pack(len(meta), len(data)) + meta)
    if data:
        out.write(data)
    out.flush()


def read_frame(source: BinaryIO) -> tuple[list[Any], bytes] | None:
    """The next frame, or None at end of input (a frame cut short also ends the input)."""
    head = source.read(FRAME.size)
    if len(head) < FRAME.size:
        return None
    meta_len, data_len = FRAME.unpack(head)
    meta = source.read(meta_len)
    data = source.read(data_len) if data_len else b""
    if len(meta) < meta_len or len(data) < data_len:
        return None
    return decode_header(meta), data


def describe_error(exc: BaseException) -> list[Any]:
    if isinstance(exc, OSError):
        filename = exc.filename if isinstance(exc.filename, str) else None
        return [type(exc).__name__, exc.errno, exc.strerror or str(exc), filename]
    return [type(exc).__name__, None, str(exc), None]


def store_image(
    data: bytes,
    stem: str,
    thumb_paths: dict[str, str],
    policy: ImagePolicy,
    write_files: Callable[[Iterable[tuple[str, bytes]]], None],
) -> tuple[StoredImage, str, Exception | None]:
    """``process_image``, then the image (``<stem>.<ext>``) and its thumbnails written.

    Blocking: in a store process, or in a worker thread of the crawl's process (the
    images pipeline without store processes). Returns (what was stored, without its
    bytes, its path, None), or the store's error in place of None; raises
    ``ImageRejected`` for bytes that are not stored.
    """
    stored = process_image(data, policy)
    path = f"{stem}.{stored.ext}"
    files = [(path, stored.data), *((thumb_paths[thumb_id], thumb) for thumb_id, thumb in stored.thumbs.items())]
    stored.data = b""  # written: neither sent back nor kept
    stored.thumbs = {}
    try:
        write_files(files)
    except Exception as exc:
        return stored, path, exc
    return stored, path, None


def run_job(header: list[Any], data: bytes, writer: AtomicWriter, shared: mmap.mmap | None) -> list[Any]:
    kind = header[0]
    if kind == "image":
        _, stem, thumb_paths, policy, *where = header
        if where:
            if shared is None:
                raise ValueError("bytes in shared memory, but none was given")
            offset, length = where[0]
            data = shared[offset:offset + length]
        try:
            stored, _, error = store_image(data, stem, thumb_paths, ImagePolicy.from_json(policy), writer.write_files)
        except ImageRejected as exc:
            return ["rejected", exc.reason, exc.detail]
        if error is not None:
            return ["store_error", stored.summary(), describe_error(error)]
        return ["stored", stored.summary()]
    if kind == "metadata":
        _, stem, meta, captions, max_bytes, record = header
        try:
            files, size = sized_metadata_files(stem, meta, captions, max_bytes, record)
        except MetadataTooLarge as exc:
            return ["too_large", exc.size]
        try:
            writer.write_files((name, data) for name, (data, _) in files.items())
        except Exception as exc:
            return ["store_error", None, describe_error(exc)]
        return ["written", len(files), size]
    raise ValueError(f"unknown job {kind!r}")


def serve(source: BinaryIO, out: BinaryIO) -> int:
    first = read_frame(source)
    if first is None:
        return 0
    (kind, basedir, ring), _ = first
    if kind != "init":
        raise ValueError(f"expected the init job first, got {kind!r}")
    shared = mmap.mmap(ring[0], ring[1], prot=mmap.PROT_READ) if ring is not None else None
    # The images pipeline checks bombs itself, with the configured limit (see imaging).
    Image.MAX_IMAGE_PIXELS = None
    writer = AtomicWriter(basedir)
    write_frame(out, ["ready", os.getpid()])
    while (frame := read_frame(source)) is not None:
        header, data = frame
        try:
            answer = run_job(header, data, writer, shared)
        except Exception:
            answer = ["error", traceback.format_exc(limit=8)]
        write_frame(out, answer)
    return 0


def main() -> int:
    # Ctrl-C in a terminal reaches the whole process group: the crawl decides when this
    # process ends (by closing its input), so that jobs in hand are finished, not lost.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print() or a library's output goes to stderr, not into the answers
    try:
        return serve(sys.stdin.buffer, answers)
    except BrokenPipeError:  # the crawl's process is gone
        return 0
