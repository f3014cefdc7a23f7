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

import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

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


class WebDatasetWriter(Writer):
    def __init__(self, out: Path, *, shard_size: int = 10_000, store: str = "") -> None:
        super().__init__(out)
        self.shard_size = shard_size
        self.store = store
        self.image_exts: set[str] = set()
        self.shards = 0
        self._tar: tarfile.TarFile | None = None
        self._in_shard = 0
        self._mtime = int(time.time())

    def _open(self) -> None:
        pass

    def _next_shard(self) -> tarfile.TarFile:
        self._close_shard()
        path = self.temp / f"{self.shards:05d}.tar"
        self.shards += 1
        self._in_shard = 0
        self._tar = tarfile.open(path, "w", format=tarfile.USTAR_FORMAT)
        return self._tar

    def _close_shard(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self.bytes_written += Path(self._tar.name).stat().st_size  # type: ignore[arg-type]
            self._tar = None

    def _add(self, tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = self._mtime
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))

    def write(self, sample: Sample) -> None:
        tar = self._tar if self._tar is not None and self._in_shard < self.shard_size else self._next_shard()
        key = str(sample.id)
        ext = sample.name.rpartition(".")[2]
        self.image_exts.add(ext)
        self._add(tar, f"{key}.{ext}", sample.data or b"")
        self._add(tar, f"{key}.txt", (sample.row["caption"] or "").encode("utf-8"))
        self._add(tar, f"{key}.json", json.dumps(sample.row, ensure_ascii=False).encode("utf-8"))
        self._in_shard += 1
        self.samples += 1

    def _finish(self) -> None:
        self._close_shard()
        if self.temp.is_dir():
            card = dataset_card(self.image_exts, samples=self.samples, store=self.store)
            (self.temp / "README.md").write_text(card, encoding="utf-8")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "shards": self.shards}
