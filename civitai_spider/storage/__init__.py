"""Storage: where a harvest's images, metadata files and records go.

One ``Storage`` per crawl, picked by the scheme of ``IMAGES_STORE`` as Scrapy
picks its media stores (``storages()``), built once (an extension) and used by
the pipelines:

- ``LocalStorage`` (a path, ``file://``): files written atomically in worker threads;
- ``ProcessStorage``: the same folder, the work done by store processes
  (``CIVITAI_STORE_PROCESSES``, the default for a local store);
- ``ObjectStorage`` (``s3://``, ``gs://``): Scrapy's S3 and GCS stores.

Modules without Scrapy, which the store processes import: ``atomic`` (atomic
writes), ``metadata_files`` (an image's metadata files), ``worker`` (a store
process). ``records``: append-only records (``downloaded_ids.txt``, ``failures.jsonl``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from civitai_spider.config import CivitaiConfig

    from civitai_spider.storage.base import Storage, StoreWriteError, storage_problem
    from civitai_spider.storage.local import LocalStorage
    from civitai_spider.storage.objects import ObjectStorage
    from civitai_spider.storage.pool import StoreProcessFailed
    from civitai_spider.storage.processes import ProcessStorage

__all__ = [
    "LocalStorage", "ObjectStorage", "ProcessStorage", "Storage", "StoreProcessFailed", "StoreWriteError",
    "storage_class", "storage_problem", "storages",
]

# Imported on first use (PEP 562), not with the package: a store process imports
# ``storage.worker``, and must not pay for Scrapy, which the implementations import.
_PUBLIC = {
    "Storage": "base", "StoreWriteError": "base", "storage_problem": "base", "LocalStorage": "local",
    "ObjectStorage": "objects", "StoreProcessFailed": "pool", "ProcessStorage": "processes",
}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def storages() -> dict[str, type[Storage]]:
    """URI scheme -> the kind of storage ("" is a relative path)."""
    from civitai_spider.storage.local import LocalStorage
    from civitai_spider.storage.objects import ObjectStorage

    return {"": LocalStorage, "file": LocalStorage, "s3": ObjectStorage, "gs": ObjectStorage}


def storage_class(uri: str, config: CivitaiConfig) -> type[Storage]:
    """The kind of storage for ``uri``: by its scheme; a local one with store processes unless
    ``CIVITAI_STORE_PROCESSES`` is 0."""
    from civitai_spider.storage.base import store_scheme
    from civitai_spider.storage.local import LocalStorage
    from civitai_spider.storage.processes import ProcessStorage, process_count

    cls = storages()[store_scheme(uri)]
    if cls is LocalStorage and process_count(config):
        return ProcessStorage
    return cls
