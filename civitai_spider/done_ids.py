"""The set of image ids already stored: small and fast to load at millions of ids.

Ids loaded at start live in one sorted ``numpy.int64`` array (8 bytes an id: 80 MB
at 10M, where a Python set would take ~600 MB); ids added during the run live in
a plain set. The file format is the original script's: one id per line. Lines
that are not a whole number are skipped and counted, never fatal.
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


class DoneIds:
    """Membership of image ids: a sorted array of loaded ids plus the ids added since."""

    def __init__(self, loaded: np.ndarray | None = None) -> None:
        self._loaded = np.sort(loaded) if loaded is not None and len(loaded) else np.empty(0, dtype=np.int64)
        self._added: set[int] = set()

    def __contains__(self, image_id: int) -> bool:
        if image_id in self._added:
            return True
        index = int(self._loaded.searchsorted(image_id))
        return index < len(self._loaded) and int(self._loaded[index]) == image_id

    def add(self, image_id: int) -> None:
        self._added.add(image_id)

    @property
    def loaded_count(self) -> int:
        return len(self._loaded)
