"""Atomic file writes for a local store, without Scrapy (the store processes import this).

Each file is written to a hidden ``.<name>.<prefix><n>.part`` beside its final
name and renamed into place (``os.replace``): a crash never leaves a partial file
under a final name. ``remove_partial_files`` cleans up the ``.part`` files a
killed process leaves behind.
"""

from __future__ import annotations

import itertools
import os
import secrets
import time
from collections.abc import Iterable
from pathlib import Path

PART_SUFFIX = ".part"


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either absent, old, or complete."""
    _write_atomically(str(path), f".{path.name}.{secrets.token_hex(4)}{PART_SUFFIX}", data)


def _write_atomically(path: str, temp_name: str, data: bytes) -> None:
    """``write_atomically`` with the temporary file's name given; the folder is created if missing.

    Plain ``os`` calls (no ``pathlib``, no buffered file object): this runs for every
    stored file.
    """
    folder = os.path.dirname(path)
    temp = os.path.join(folder, temp_name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(temp, flags, 0o666)
    except FileNotFoundError:  # the folder does not exist yet (first file in it, or removed since)
        os.makedirs(folder or ".", exist_ok=True)
        fd = os.open(temp, flags, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


class AtomicWriter:
    """Writes files under ``basedir`` atomically; blocking (call it off the reactor thread).

    The temporary names are unique among this writer's files (a counter) and among
    other writers sharing the folder, in this process or another (a random prefix
    per writer), without a ``urandom`` call per file.
    """

    def __init__(self, basedir: str) -> None:
        self.basedir = basedir
        self._prefix = secrets.token_hex(4)
        self._seq = itertools.count()

    def write_files(self, files: Iterable[tuple[str, bytes]]) -> None:
        """Write each (store-relative path, bytes) in order; the first failure stops, and raises."""
        for path, data in files:
            final = os.path.join(self.basedir, *path.split("/"))
            name = os.path.basename(final)
            _write_atomically(final, f".{name}.{self._prefix}{next(self._seq):x}{PART_SUFFIX}", data)


def remove_partial_files(folder: Path, older_than: float = 0.0) -> int:
    """Delete ``.*.part`` files left in ``folder`` by a process that died mid-write.

    With ``older_than`` (seconds), only files not modified for that long: other
    processes writing to the same folder (a shared crawl) keep their files. A file
    that is gone by the time it is looked at (its writer renamed it into place, as
    another worker starting at the same moment does with its write probe) is skipped.
    """
    removed = 0
    cutoff = time.time() - older_than
    if folder.is_dir():
        for entry in os.scandir(folder):
            if entry.name.startswith(".") and entry.name.endswith(PART_SUFFIX):
                try:
                    if older_than and entry.stat().st_mtime > cutoff:
                        continue
                    os.unlink(entry.path)
                except FileNotFoundError:
                    continue
                removed += 1
    return removed
