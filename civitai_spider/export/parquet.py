"""``parquet``: one row per stored image, one file, for pandas, DuckDB, Polars and ``datasets``.

The columns are ``samples.COLUMNS``; ``file`` is the image's name in the store
(its location is in the file's key-value metadata, ``civitai_spider.store``).
``--embed-images`` adds an ``image`` column holding the bytes (resized when asked)
as ``{"bytes", "path"}``, with the Hugging Face feature metadata that makes
``datasets`` load it as an ``Image``. Rows are written in row groups of
``row_group_size`` (fewer with embedded images: a group is flushed at
``max_group_bytes``), so memory stays flat however large the store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from civitai_spider.export.output import Writer
from civitai_spider.export.samples import COLUMNS, Sample

HF_TYPES = {"int64": "int64", "string": "string", "bool": "bool"}
#: ``samples.COLUMNS`` type names as pyarrow constructors (``pa.bool`` is ``pa.bool_``).
ARROW_TYPES = {"int64": "int64", "string": "string", "bool": "bool_"}


class ParquetWriter(Writer):
    directory = False

    def __init__(self, out: Path, *, store: str, embed_images: bool, row_group_size: int = 10_000,
                 max_group_bytes: int = 128 << 20) -> None:
        super().__init__(out)
        import pyarrow as pa

        self.pa = pa
        self.store = store
        self.embed_images = embed_images
        self.needs_bytes = embed_images
        self.row_group_size = row_group_size
        self.max_group_bytes = max_group_bytes
        fields = [pa.field(name, getattr(pa, ARROW_TYPES[kind])()) for name, kind in COLUMNS.items()]
        features: dict[str, Any] = {name: {"dtype": HF_TYPES[kind], "_type": "Value"} for name, kind in COLUMNS.items()}
        if embed_images:
            fields.append(pa.field("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])))
            features["image"] = {"_type": "Image"}
        metadata = {b"civitai_spider.store": store.encode("utf-8"),
                    b"huggingface": json.dumps({"info": {"features": features}}).encode("utf-8")}
        self.schema = pa.schema(fields, metadata=metadata)
        self._columns: dict[str, list[Any]] = {}
        self._buffered_bytes = 0
        self._writer: Any = None

    def _open(self) -> None:
        import pyarrow.parquet as pq

        self._writer = pq.ParquetWriter(self.temp, self.schema, compression="zstd")
        self._reset()

    def _reset(self) -> None:
        self._columns = {name: [] for name in self.schema.names}
        self._buffered_bytes = 0

    def write(self, sample: Sample) -> None:
        for name in COLUMNS:
            self._columns[name].append(sample.row[name])
        if self.embed_images:
            self._columns["image"].append({"bytes": sample.data, "path": sample.name})
            self._buffered_bytes += len(sample.data or b"")
        self.samples += 1
        if len(self._columns["id"]) >= self.row_group_size or self._buffered_bytes >= self.max_group_bytes:
            self._flush()

    def _flush(self) -> None:
        if self._columns and self._columns["id"]:
            self._writer.write_table(self.pa.table(self._columns, schema=self.schema))
        self._reset()

    def _finish(self) -> None:
        if self._writer is not None:
            self._flush()
            self._writer.close()
            self._writer = None
            self.bytes_written = self.temp.stat().st_size
