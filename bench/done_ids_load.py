"""Load time and memory of the done-id record at N ids (default 1M and 10M).

    python bench/done_ids_load.py [N ...]

Each size runs in a fresh process: writes a downloaded_ids.txt of N random ids
(one per line, as the spider writes it), then loads it the way the spider does
at start, and prints the load time, the RSS growth and the peak RSS.
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import sys, time, resource
from civitai_spider.done_ids import IdSet, parse_ids, read_chunks
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
before = rss_mb()
started = time.perf_counter()
ids, bad = parse_ids(read_chunks(sys.argv[1]))
done = IdSet(ids)
del ids
elapsed = time.perf_counter() - started
assert (int(sys.argv[2]) in done) and bad == 0
print(f"{done.loaded_count}\t{elapsed:.2f}\t{rss_mb() - before:.0f}\t{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
"""


def main(sizes: list[int]) -> None:
    print("ids\tload_s\tresident_MB\tpeak_RSS_MB")
    for size in sizes:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder, "downloaded_ids.txt")
            rng = random.Random(size)
            with path.open("w") as out:
                for start in range(0, size, 1_000_000):
                    out.write("".join(f"{rng.randrange(1, 200_000_000)}\n" for _ in range(min(1_000_000, size - start))))
            probe = path.read_text().split("\n", 1)[0]
            done = subprocess.run([sys.executable, "-c", CHILD, str(path), probe], capture_output=True, text=True, check=True,
                                  cwd=Path(__file__).resolve().parents[1])
            print(done.stdout.strip())


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1_000_000, 10_000_000])
