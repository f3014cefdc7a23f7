"""How long the gallery takes, and how large its page is, for a harvest of 100,000 images.

    python bench/gallery_size.py [--images N]

Builds a harvest folder of N one-pixel PNGs (hard links), every other one with a
prompt file and items for half of them (``tests/test_gallery.make_big_harvest``),
then times ``build_gallery`` on it. Prints the time, the page's size and its bytes a
card; the folder is removed at the end.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from civitai_spider import gallery  # noqa: E402
from tests.test_gallery import make_big_harvest  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gallery-size-") as work:
        folder = Path(work, "harvest")
        started = time.perf_counter()
        make_big_harvest(folder, args.images)
        made = time.perf_counter() - started
        result = gallery.build_gallery(folder)
        print(f"{args.images} images: harvest made in {made:.1f} s; gallery in {result.seconds:.2f} s, "
              f"{result.bytes_written / 1e6:.1f} MB ({result.bytes_written / args.images:.0f} bytes a card)")
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
