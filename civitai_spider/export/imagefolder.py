"""``imagefolder``: the images and a ``metadata.jsonl``, for ``datasets.load_dataset("imagefolder", data_dir=OUT)``.

``OUT/N.<ext>`` for every image, and ``OUT/metadata.jsonl``: one line per image,
``file_name`` first, then its row (``samples.COLUMNS``), so each loaded example
has the image with its prompt, caption and reactions.

The images are hard links to the store's files by default (``link="hard"``): no
second copy of a harvest on the disk, and still real files (moving or deleting
the store leaves the export whole, which a symbolic link would not). They are
copies when a link cannot be made (another file system, an ``s3://`` store) or
when resized; ``link="copy"`` always copies (an export to edit in place without
touching the store), ``link="symlink"`` makes symbolic links.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from civitai_spider.export.output import Writer
from civitai_spider.export.samples import Sample, Skipped

LINKS = ("hard", "copy", "symlink")


class ImageFolderWriter(Writer):
    def __init__(self, out: Path, *, link: str = "hard", local_store: str | None = None, resized: bool = False) -> None:
        super().__init__(out)
        self.link = link
        self.local_store = local_store
        # The bytes are read (and written here) for a resized image or an object store's.
        self.needs_bytes = resized or local_store is None
        self.linked = 0
        self.copied = 0
        self._metadata: Any = None

    def _open(self) -> None:
        self._metadata = open(self.temp / "metadata.jsonl", "w", encoding="utf-8", newline="\n")

    def write(self, sample: Sample) -> None:
        target = self.temp / sample.name
        if self.needs_bytes:
            assert sample.data is not None, "the image's bytes were not read"
            with open(target, "wb") as f:
                f.write(sample.data)
            self.copied += 1
            self.bytes_written += len(sample.data)
        else:
            self._link_or_copy(self._store_file(sample.name), target)
        self._metadata.write(json.dumps({"file_name": sample.name, **sample.row}, ensure_ascii=False) + "\n")
        self.samples += 1

    def _store_file(self, name: str) -> str:
        """The store's file to link: itself, or (a store put together by hand) what its symbolic
        link points to, since a hard link to a symbolic link would dangle from its new place.
        One ``lstat`` an image; ``realpath`` only for a link."""
        path = os.path.join(str(self.local_store), name)
        try:
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                path = os.path.realpath(path)
                mode = os.stat(path).st_mode
        except FileNotFoundError:
            raise Skipped("image_missing", f"{name}: not found") from None
        except OSError as exc:
            raise Skipped("file_unreadable", f"{name}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(mode):
            raise Skipped("file_unreadable", f"{name}: not a file")
        return path

    def _link_or_copy(self, source: str, target: Path) -> None:
        if self.link != "copy":
            try:
                if self.link == "symlink":
                    os.symlink(source, target)
                else:
                    os.link(source, target)
                self.linked += 1
                return
            except OSError as exc:
                if self.link != "hard" or exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
                self.link = "copy"  # another file system (or one without links): copies from here on
        shutil.copyfile(source, target)
        self.copied += 1
        self.bytes_written += target.stat().st_size

    def _finish(self) -> None:
        if self._metadata is not None:
            self._metadata.close()
            self._metadata = None
            self.bytes_written += (self.temp / "metadata.jsonl").stat().st_size

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "linked": self.linked, "copied": self.copied, "link": self.link}
