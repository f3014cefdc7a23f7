"""Image id sets that stay small at millions of ids, and the done-ids file's parser.

``IdSet`` keeps its ids in one sorted ``numpy.int64`` array (8 bytes an id: 80 MB
at 10M, where a Python set takes ~60 bytes an id, ~600 MB); the newest ids wait in
a plain set until there are ``merge_at`` of them, then are merged into the array,
so that memory hardly grows with the ids added during a run either. Used for the
ids already stored (loaded at start, from the done-ids file) and for the ids the
spider has yielded. The file format is the original script's: one id per line.
Lines that are not a whole number are skipped and counted, never fatal.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

CHUNK = 8 << 20


def parse_ids(chunks: Iterable[bytes]) -> tuple[np.ndarray, int]:
    """Ids from the text of one or more id files (whitespace-separated); returns (ids, bad lines)."""
    arrays: list[np.ndarray] = []
    bad = 0
    rest = b""
    for chunk in chunks:
        block = rest + chunk
        cut = block.rfind(b"\n") + 1
        rest = block[cut:]
        ids, skipped = _parse_block(block[:cut])
        arrays.append(ids)
        bad += skipped
    ids, skipped = _parse_block(rest)
    arrays.append(ids)
    return np.concatenate(arrays), bad + skipped


def _parse_block(block: bytes) -> tuple[np.ndarray, int]:
    if not block.strip():
        return np.empty(0, dtype=np.int64), 0
    try:
        return np.fromstring(block, dtype=np.int64, sep=" "), 0  # fast path: all numbers
    except ValueError:
        pass
    good: list[int] = []
    bad = 0
    for line in block.split(b"\n"):
        token = line.strip()
        if not token:
            continue
        if token.isdigit():
            good.append(int(token))
        else:
            bad += 1
    return np.array(good, dtype=np.int64), bad


def read_chunks(path: str) -> Iterable[bytes]:
    with open(path, "rb") as source:
        while chunk := source.read(CHUNK):
            yield chunk


class IdSet:
    """Membership of image ids: a sorted array, plus the ids added since the last merge.

    ``merge_at`` (default 65,536) added ids are merged into the array at once: one
    ``searchsorted`` and one copy of the array (~50 ms at 10M ids), so a run adding
    N ids spends N / merge_at such copies, and holds at most ``merge_at`` ids as
    Python ints (~4 MB).
    """

    def __init__(self, loaded: np.ndarray | None = None, merge_at: int = 1 << 16) -> None:
        self._sorted = np.sort(loaded) if loaded is not None and len(loaded) else np.empty(0, dtype=np.int64)
        self._added: set[int] = set()
        self._merge_at = merge_at
        self.loaded_count = len(self._sorted)  # ids given at start

    def __contains__(self, image_id: int) -> bool:
        if image_id in self._added:
            return True
        index = int(self._sorted.searchsorted(image_id))
        return index < len(self._sorted) and int(self._sorted[index]) == image_id

    def __len__(self) -> int:
        return len(self._sorted) + len(self._added)

    def add(self, image_id: int) -> None:
        if image_id in self:
            return
        self._added.add(image_id)
        if len(self._added) >= self._merge_at:
            self._merge()

    def _merge(self) -> None:
        new = np.fromiter(self._added, dtype=np.int64, count=len(self._added))
        new.sort()
        self._sorted = np.insert(self._sorted, self._sorted.searchsorted(new), new)
        self._added = set()
