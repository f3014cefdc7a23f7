"""Where an export goes: built under a hidden temporary name beside ``OUT``, renamed to
``OUT`` only once complete, so that nothing half-written ever sits under the final name
(a failed, interrupted or killed export leaves at most the temporary, removed on failure).
"""

from __future__ import annotations

import os
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from civitai_spider.export.samples import Sample


class OutputError(Exception):
    """An output that cannot be written (exists already, a folder where a file is wanted...)."""


def check_out(out: Path, *, directory: bool) -> None:
    """Refuse an ``OUT`` that exists (an export never overwrites) or whose folder is missing."""
    if out.exists() or out.is_symlink():
        raise OutputError(f"{out} exists: an export never overwrites; remove it or choose another OUT")
    if not out.parent.is_dir():
        raise OutputError(f"folder not found: {out.parent}")


class Writer(ABC):
    """One export format: ``write`` each sample, then ``close`` (or ``abort``)."""

    directory = True  # OUT is a folder (else a file)
    #: Whether samples need their bytes read (a writer that only lists files does not).
    needs_bytes = True

    def __init__(self, out: Path) -> None:
        self.out = out
        self.temp = out.with_name(f".{out.name}.{os.getpid()}.part")
        self.samples = 0
        self.bytes_written = 0

    def open(self) -> None:
        check_out(self.out, directory=self.directory)
        if self.directory:
            self.temp.mkdir()
        self._open()

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def write(self, sample: Sample) -> None: ...

    @abstractmethod
    def _finish(self) -> None:
        """Write whatever is still buffered and close every file (under the temporary name)."""

    def close(self) -> dict[str, Any]:
        self._finish()
        os.replace(self.temp, self.out)
        return self.describe()

    def abort(self) -> None:
        try:
            self._finish()
        except Exception:  # noqa: BLE001 - whatever is left goes anyway
            pass
        if self.temp.is_dir():
            shutil.rmtree(self.temp, ignore_errors=True)
        else:
            self.temp.unlink(missing_ok=True)

    def describe(self) -> dict[str, Any]:
        return {"samples": self.samples, "bytes": self.bytes_written}
