"""``webdataset``: tar shards for the ``webdataset`` library and ``datasets.load_dataset("webdataset")``.

``OUT/00000.tar``, ``OUT/00001.tar``...: at most ``shard_size`` samples each
(10,000 by default), in id order. A sample is keyed by the image id: ``N.<ext>``
(the image under its real extension, resized when asked), ``N.txt`` (its caption;
empty when it has none, so every sample has the same parts) and ``N.json`` (its
row, ``samples.COLUMNS``). Written straight into the tar, one sample at a time.

Civitai images come as PNG, JPEG and WebP and the store keeps them as they came,
so samples differ in their image part (``.png`` / ``.jpg`` / ``.webp``). The
``webdataset`` library takes that in its stride (``to_tuple("jpg;png;webp", "txt")``);
``datasets``' WebDataset builder guesses its columns from the first five samples
and fails on a part it did not see there (huggingface/datasets#6880). So the
export also writes ``OUT/README.md``, a dataset card whose ``dataset_info``
names every part the shards hold (one ``Image`` column per image extension, set
on the samples that have it, null on the others): ``datasets.load_dataset(OUT)``
reads it, and ``datasets.load_dataset("webdataset", data_files=...)`` gets the
same columns with ``features=datasets.load_dataset_builder(OUT).info.features``.
"""

from __future__ import annotations

import json
import tarfile
import time
from pathlib import Path
from typing import Any, BinaryIO

from civitai_spider.export.output import Writer
from civitai_spider.export.samples import COLUMNS, Sample
from civitai_spider.export.source import VIDEO_EXTS

#: ``samples.COLUMNS`` type names as ``datasets`` dtypes (the card's ``json`` struct).
CARD_DTYPES = {"int64": "int64", "string": "string", "bool": "bool"}


def dataset_card(image_exts: set[str], *, samples: int, store: str) -> str:
    """``README.md`` for the shards: the columns ``datasets`` should load (see the module's doc)."""
    lines = ["---", "dataset_info:", "  features:"]
    for ext in sorted(image_exts):
        lines += [f"  - name: {ext}", f"    dtype: {'binary' if ext in VIDEO_EXTS else 'image'}"]
    lines += ["  - name: txt", "    dtype: string", "  - name: json", "    struct:"]
    for name, kind in COLUMNS.items():
        lines += [f"    - name: {name}", f"      dtype: {CARD_DTYPES[kind]}"]
    lines += ["configs:", "- config_name: default", "  data_files:", "  - split: train", '    path: "*.tar"',
              "---", "", f"{samples} images exported by civitai-spider from {json.dumps(store)}.", "",
              "Each sample: `N.<png|jpg|webp>` (the image), `N.txt` (its caption), `N.json` (its record).", ""]
    return "\n".join(lines)


BLOCK = 512
RECORD = 20 * BLOCK  # a tar file's length is a multiple of this (what tar and tarfile write)
USTAR_MAX_SIZE = 8**11 - 1  # 11 octal digits; a larger member needs a PAX header


def member(name: str, data: bytes, mtime: int) -> bytes:
    """One regular file as tar bytes: its USTAR header, its data, zero padding to a block.

    Written by hand because ``tarfile``'s header builder costs ~50 us a member, half the
    export's time for small images (three members a sample); this is the same header (mode
    0644, owner 0:0, checksum over the header with blanks in its own field) for the names a
    sample has (ASCII, short). Anything else goes through ``tarfile`` (PAX).
    """
    encoded = name.encode("ascii", "replace")
    if len(encoded) > 100 or len(data) > USTAR_MAX_SIZE or not name.isascii():
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), mtime, 0o644
        header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    else:
        block = bytearray(BLOCK)
        block[0:len(encoded)] = encoded
        block[100:148] = b"0000644\x000000000\x000000000\x00%011o\x00%011o\x00" % (len(data), mtime)
        block[148:156] = b"        "
        block[156] = 0x30  # "0": a regular file
        block[257:265] = b"ustar\x0000"
        block[148:156] = b"%06o\x00 " % sum(block)
        header = bytes(block)
    return b"".join((header, data, bytes(-len(data) % BLOCK)))


class WebDatasetWriter(Writer):
    def __init__(self, out: Path, *, shard_size: int = 10_000, store: str = "") -> None:
        super().__init__(out)
        self.shard_size = shard_size
        self.store = store
        self.image_exts: set[str] = set()
        self.shards = 0
        self._shard: BinaryIO | None = None
        self._in_shard = 0
        self._shard_bytes = 0
        self._mtime = int(time.time())

    def _open(self) -> None:
        pass

    def _next_shard(self) -> BinaryIO:
        self._close_shard()
        self._shard = open(self.temp / f"{self.shards:05d}.tar", "wb")
        self.shards += 1
        self._in_shard = 0
        self._shard_bytes = 0
        return self._shard

    def _close_shard(self) -> None:
        if self._shard is not None:
            end = 2 * BLOCK  # two zero blocks end the archive, then padding to a whole record
            end += -(self._shard_bytes + end) % RECORD
            self._shard.write(bytes(end))
            self._shard.close()
            self.bytes_written += self._shard_bytes + end
            self._shard = None

    def write(self, sample: Sample) -> None:
        shard = self._shard if self._shard is not None and self._in_shard < self.shard_size else self._next_shard()
        key = str(sample.id)
        ext = sample.name.rpartition(".")[2]
        self.image_exts.add(ext)
        data = b"".join((
            member(f"{key}.{ext}", sample.data or b"", self._mtime),
            member(f"{key}.txt", (sample.row["caption"] or "").encode("utf-8"), self._mtime),
            member(f"{key}.json", json.dumps(sample.row, ensure_ascii=False).encode("utf-8"), self._mtime),
        ))
        shard.write(data)
        self._shard_bytes += len(data)
        self._in_shard += 1
        self.samples += 1

    def _finish(self) -> None:
        self._close_shard()
        if self.temp.is_dir():
            card = dataset_card(self.image_exts, samples=self.samples, store=self.store)
            (self.temp / "README.md").write_text(card, encoding="utf-8")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "shards": self.shards}
