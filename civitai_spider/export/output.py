"""Where an export goes: built under a hidden temporary name beside ``OUT``
(``.OUT.<random>.part``, unique even when a container gives every run the same pid),
renamed to ``OUT`` only once complete, so that nothing half-written ever sits under the
final name (a failed or interrupted export removes its temporary; a killed one leaves it,
hidden). A file is put in place with a hard link, which fails if ``OUT`` appeared in the
meantime, so an export never replaces anything.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from civitai_spider.export.samples import Sample


class OutputError(Exception):
    """An output that cannot be written (exists already, a folder where a file is wanted...)."""


def check_out(out: Path, *, directory: bool) -> None:
    """Refuse an ``OUT`` that exists (an export never overwrites) or whose folder is missing."""
    if not out.name or out.name in (".", ".."):
        raise OutputError(f"{out}: OUT must name a new file or folder")
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
        self.temp: Path = out  # the temporary is made by open(); nothing touches it before
        self._opened = False
        self.samples = 0
        self.bytes_written = 0

    def open(self) -> None:
        check_out(self.out, directory=self.directory)
        prefix, parent = f".{self.out.name}.", str(self.out.parent)
        try:
            if self.directory:
                self.temp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".part", dir=parent))
            else:
                handle, name = tempfile.mkstemp(prefix=prefix, suffix=".part", dir=parent)
                os.close(handle)
                self.temp = Path(name)
        except OSError as exc:
            raise OutputError(f"cannot write in {self.out.parent}: {exc.strerror or exc}") from None
        self._opened = True
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
        if self.directory:
            self.temp.chmod(0o755)  # mkdtemp's 0700 would hide the export from everyone else
            os.rename(self.temp, self.out)  # fails if OUT became a folder with files meanwhile
        else:
            self.temp.chmod(0o644)
            try:
                os.link(self.temp, self.out)  # unlike a rename, never replaces an OUT made meanwhile
                self.temp.unlink()
            except OSError as exc:
                if exc.errno == errno.EEXIST:
                    raise OutputError(f"{self.out} appeared while exporting: nothing replaced, nothing written") from None
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.EXDEV):
                    raise
                os.replace(self.temp, self.out)  # a file system without hard links
        return self.describe()

    def abort(self) -> None:
        if not self._opened:
            return
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
