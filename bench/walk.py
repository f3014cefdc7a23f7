"""Walk: does memory stay flat over a long harvest? 100,000 small images through ``scrapy crawl civitai``.

    python bench/walk.py [--items 100000] [--interval 1]

Our nginx serves 500 API pages of 200 items (every item with a prompt) and 64x64
JPEGs (4096 distinct files; an image's uuid picks one). ``scrapy crawl civitai
-a min_hearts=0`` stores them all (image + prompt files + meta.json + done id),
while this script samples the RSS of the crawl's process tree every second and
counts the lines of the store's ``downloaded_ids.txt``. Printed: RSS when 10k, 25k,
50k, 75k and 100k images are done, and the growth from 10k to the end. Written:
bench/results/walk-<date>.json (the whole series).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid as uuidlib
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

BENCH = Path(__file__).resolve().parent
TINY = 4096  # distinct small images
# The last 3 hex digits of the uuid name the file: /<uuid>/original=true/<uuid>.jpeg -> /<xyz>.jpeg
CDN_REGEX = r"^/[0-9a-f-]{33}([0-9a-f]{3})/original=true/[0-9a-f-]{36}\.jpeg$"


def _tiny(index: int) -> bytes:
    from PIL import Image

    rng = random.Random(index)
    picture = Image.effect_noise((64, 64), rng.uniform(10, 60)).convert("RGB")
    tint = Image.new("RGB", (64, 64), tuple(rng.randrange(256) for _ in range(3)))
    out = io.BytesIO()
    Image.blend(picture, tint, 0.6).save(out, "JPEG", quality=90)
    return out.getvalue()


def tiny_images(folder: Path) -> Path:
    img = folder / "img"
    if (folder / ".done").exists():
        return img
    img.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(os.cpu_count() or 2) as pool:
        for index, data in enumerate(pool.map(_tiny, range(TINY), chunksize=256)):
            (img / f"{index:03x}.jpeg").write_bytes(data)
    (folder / ".done").write_text("ok")
    return img


def walk_items(count: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    ids = rng.sample(range(1_000_000, 150_000_000), count)
    items = []
    for index, image_id in enumerate(ids):
        meta = {"prompt": f"{rng.choice(benchlib.SUBJECTS)}, {rng.choice(benchlib.STYLES)}, highly detailed",
                "negativePrompt": rng.choice(benchlib.NEGATIVES), "seed": rng.getrandbits(32), "steps": 30,
                "sampler": "Euler a", "cfgScale": 7, "Size": "64x64"}
        stats = {"cryCount": 0, "laughCount": 1, "likeCount": 5, "dislikeCount": 0,
                 "heartCount": rng.randrange(0, 500), "commentCount": 0}
        item = benchlib._public_item(rng, index, image_id, 64, 64, meta, stats)
        item["uuid"] = str(uuidlib.UUID(int=rng.getrandbits(128), version=4))
        items.append(item)
    return items


def count_lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return f.read().count(b"\n")
    except OSError:
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--cache", help="cache dir (default $CIVITAI_BENCH_CACHE or /tmp/civitai-bench)")
    parser.add_argument("--keep", action="store_true", help="keep the store")
    parser.add_argument("--results", default=str(BENCH / "results"))
    args = parser.parse_args()
    benchlib.interrupt_on_sigterm()

    cache = benchlib.cache_root(args.cache)
    images = tiny_images(cache / "walk-tiny-v1")
    stamp = datetime.now().strftime("%Y-%m-%dT%H%M%S")
    work = cache / "runs" / f"walk-{stamp}"
    work.mkdir(parents=True)
    nginx = benchlib.Nginx(work / "nginx", work / "pages", images, cdn_regex=CDN_REGEX, cdn_file="/$1.jpeg")
    items = walk_items(args.items)
    pages = benchlib.render_pages(items, work / "pages", nginx.api_url, nginx.cdn_root)
    print(f"{args.items} items on {pages} pages; 64x64 JPEGs from {images}", flush=True)
    marks = [m for m in (10_000, 25_000, 50_000, 75_000, 100_000) if m <= args.items] or [args.items]
    if marks[-1] != args.items:
        marks.append(args.items)
    store = work / "store"
    done_file = store / "downloaded_ids.txt"
    log_path = work / "log-walk.txt"
    series: list[dict] = []
    with nginx, log_path.open("wb") as log:
        argv = [benchlib.scrapy_bin(), "crawl", "civitai", "-a", "min_hearts=0", "-s", f"CIVITAI_API_URL={nginx.api_url}",
                "-s", f"IMAGES_STORE={store}", "-s", "LOG_LEVEL=INFO", "-s", "CIVITAI_PROGRESS=off"]
        started = time.perf_counter()
        process = subprocess.Popen(argv, cwd=benchlib.REPO, stdout=log, stderr=subprocess.STDOUT,
                                   env=benchlib.clean_env(), start_new_session=True)
        next_mark = 0
        print(f"{'images done':>12} {'elapsed s':>10} {'RSS MB':>8} {'images/s':>9}", flush=True)
        try:
            while True:
                finished = process.poll() is not None
                rss = 0 if finished else benchlib.tree_rss(process.pid)
                done = count_lines(done_file)
                elapsed = time.perf_counter() - started
                if rss:
                    series.append({"t": round(elapsed, 2), "done": done, "rss_mb": round(rss / 2**20, 1)})
                while next_mark < len(marks) and series and series[-1]["done"] >= marks[next_mark]:
                    last = series[-1]
                    print(f"{marks[next_mark]:>12,} {last['t']:>10.1f} {last['rss_mb']:>8.1f} {last['done'] / last['t']:>9.1f}"
                          f"   (sample at {last['done']:,} done)", flush=True)
                    next_mark += 1
                if finished:
                    for mark in marks[next_mark:]:
                        if series and done >= mark:
                            last = series[-1]
                            print(f"{mark:>12,} {last['t']:>10.1f} {last['rss_mb']:>8.1f} {last['done'] / last['t']:>9.1f}"
                                  f"   (last sample before exit, at {last['done']:,} done; {done:,} at exit)", flush=True)
                    break
                time.sleep(args.interval)
        except BaseException:  # Ctrl-C / SIGTERM: take the crawl down with us
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
        wall = time.perf_counter() - started
    done = count_lines(done_file)
    after_10k = [s["rss_mb"] for s in series if s["done"] >= min(10_000, args.items // 2)]
    peak = max((s["rss_mb"] for s in series), default=0.0)
    first = after_10k[0] if after_10k else 0.0
    print(f"\nexit {process.returncode}; {done:,} images done in {wall:.0f} s ({done / wall:.0f} images/s); "
          f"peak RSS {peak:.0f} MB; from {min(10_000, args.items // 2):,} done on: {first:.0f} -> max {max(after_10k, default=0):.0f} MB, "
          f"last sample {series[-1]['rss_mb'] if series else 0:.0f} MB")
    problems, firsts = benchlib.log_problems(log_path)
    if problems:
        print(f"{problems} error lines in {log_path}: {firsts[:3]}")
    report = {"date": datetime.now().isoformat(timespec="seconds"), "items": args.items, "pages": pages,
              "returncode": process.returncode, "done": done, "wall_s": wall, "peak_rss_mb": peak,
              "machine": benchlib.machine(), "series": series, "log": str(log_path)}
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    target = results / f"walk-{stamp}.json"
    target.write_text(json.dumps(report, indent=1))
    print(f"results: {target}")
    if not args.keep:
        shutil.rmtree(store, ignore_errors=True)
    return 0 if process.returncode == 0 and done == args.items else 1


if __name__ == "__main__":
    sys.exit(main())
