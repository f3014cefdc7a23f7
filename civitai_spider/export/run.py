"""The export loop: the store's listing -> samples (read in worker threads, in id order)
-> the format's writer. Memory is bounded by the window of samples in flight
(``workers`` x 4), not by the store's size.

Threads, not processes: the work is reading files (or objects) and, when resizing,
Pillow's decoding, resampling and encoding, which release the interpreter lock.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from civitai_spider.export.output import Writer
from civitai_spider.export.samples import Sample, SampleOptions, Skipped, load_sample
from civitai_spider.export.source import StoreError, StoreSource

logger = logging.getLogger(__name__)

#: Skip reasons that are problems with the store (warned about), not choices (filtered, video).
PROBLEMS = ("image_missing", "record_unreadable", "image_unreadable", "file_unreadable", "image_changed")
WARN_EACH = 5  # lines per problem kind; then only the count


@dataclass
class ExportResult:
    exported: int = 0
    listed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    without_record: int = 0
    records_without_image: int = 0
    ignored: int = 0  # names like 3.JPG or 007.jpg (see Listing.ignored)
    ignored_examples: tuple[str, ...] = ()
    seconds: float = 0.0
    output: dict[str, Any] = field(default_factory=dict)

    @property
    def problems(self) -> int:
        return sum(count for reason, count in self.skipped.items() if reason in PROBLEMS)


def export(
    source: StoreSource,
    writer: Writer,
    options: SampleOptions,
    *,
    workers: int = 8,
    progress: Callable[[ExportResult], None] | None = None,
) -> ExportResult:
    """Export every image of ``source`` through ``writer``; the writer is closed (its output
    renamed into place) on success, aborted (its temporary removed) on any exception."""
    started = time.perf_counter()
    result = ExportResult()
    options = replace(options, with_bytes=writer.needs_bytes)
    writer.open()
    try:
        listing = source.list()
        result.listed = listing.images
        if not result.listed:
            raise StoreError(f"{source.location} holds no image (N.jpg, N.png...): is it a crawl's IMAGES_STORE?")
        result.records_without_image = listing.records_without_media()
        result.ignored, result.ignored_examples = listing.ignored, listing.ignored_examples
        if listing.ignored:
            logger.warning("%d files not exported: not named as a crawl names them (<id>.<jpg|png|webp|...>, "
                           "lower case, no leading zero), e.g. %s", listing.ignored, ", ".join(listing.ignored_examples))
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="export") as pool:
            window: deque[Future[Sample]] = deque()
            try:
                for entry in listing.entries():
                    window.append(pool.submit(load_sample, source, entry, options))
                    if len(window) >= workers * 4:
                        _take(window.popleft(), writer, result, progress)
                while window:
                    _take(window.popleft(), writer, result, progress)
            except BaseException:
                for future in window:
                    future.cancel()
                raise
        if result.exported == 0 and result.problems:
            raise StoreError(f"nothing exported: every image of {source.location} that was not left out by "
                             f"choice had a problem ({result.problems}; see the warnings above)")
        result.output = writer.close()
    except BaseException:
        writer.abort()
        raise
    result.seconds = time.perf_counter() - started
    return result


def _take(future: Future[Sample], writer: Writer, result: ExportResult,
          progress: Callable[[ExportResult], None] | None) -> None:
    try:
        sample = future.result()
        writer.write(sample)
    except Skipped as skipped:
        result.skipped[skipped.reason] += 1
        if skipped.reason in PROBLEMS and result.skipped[skipped.reason] <= WARN_EACH:
            logger.warning("skipped: %s", skipped)
    else:
        result.exported += 1
        result.without_record += not sample.row["has_record"]
    if progress is not None:
        progress(result)
