"""Resume start: how long from process start to the first API request, with 1,000,000 done ids in the store?

    python bench/resume_start.py [--ids 1000000] [--repeat 3]

The store's ``downloaded_ids.txt`` holds N ids (one per line, as the spider writes
it). Our nginx serves one API page of 200 items that are all in that record (no
``nextCursor``), and logs each API request with its arrival time (``$msec`` minus
``$request_time``). Each repetition runs ``scrapy crawl civitai -a min_hearts=10``
and reports: process start -> first API request reaching nginx (target < 2 s),
and the whole run. The same with an empty store is the baseline (Python, Scrapy
and the project's own start-up). Written: bench/results/resume-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

BENCH = Path(__file__).resolve().parent
TARGET_S = 2.0


def write_ids(path: Path, count: int) -> list[int]:
    rng = random.Random(count)
    ids = rng.sample(range(1, 200_000_000), count)
    with path.open("w") as out:
        for start in range(0, count, 100_000):
            out.write("".join(f"{i}\n" for i in ids[start:start + 100_000]))
    return ids[:200]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ids", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cache", help="cache dir (default $CIVITAI_BENCH_CACHE or /tmp/civitai-bench)")
    parser.add_argument("--results", default=str(BENCH / "results"))
    args = parser.parse_args()
    benchlib.interrupt_on_sigterm()

    cache = benchlib.cache_root(args.cache)
    stamp = datetime.now().strftime("%Y-%m-%dT%H%M%S")
    work = cache / "runs" / f"resume-{stamp}"
    work.mkdir(parents=True)
    ids_file = work / "downloaded_ids.txt"
    started = time.perf_counter()
    page_ids = write_ids(ids_file, args.ids)
    print(f"downloaded_ids.txt with {args.ids:,} ids ({ids_file.stat().st_size / 1e6:.1f} MB) written in "
          f"{time.perf_counter() - started:.1f} s", flush=True)
    (work / "img").mkdir()
    access_log = work / "api-access.log"
    nginx = benchlib.Nginx(work / "nginx", work / "pages", work / "img", api_log=access_log)
    rng = random.Random(7)
    items = []
    for index, image_id in enumerate(page_ids):
        meta = {"prompt": "a lighthouse, watercolor", "negativePrompt": "blurry"}
        stats = {"heartCount": 50, "likeCount": 10}
        items.append(benchlib._public_item(rng, index, image_id, 832, 1216, meta, stats))
    benchlib.render_pages(items, work / "pages", nginx.api_url, nginx.cdn_root)

    results: dict[str, list[dict[str, float]]] = {"empty store": [], f"{args.ids:,} done ids": []}
    with nginx:
        # One run first, not counted: later runs find Python's and the OS's caches warm, as every counted run should.
        warm = work / "store-warmup"
        warm.mkdir()
        subprocess.run([benchlib.scrapy_bin(), "crawl", "civitai", "-a", "min_hearts=10", "-s", f"CIVITAI_API_URL={nginx.api_url}",
                        "-s", f"IMAGES_STORE={warm}", "-s", "CIVITAI_PROGRESS=off"], cwd=benchlib.REPO,
                       capture_output=True, env=benchlib.clean_env(), timeout=300)
        shutil.rmtree(warm, ignore_errors=True)
        for repetition in range(args.repeat):
            for scenario in results:
                store = work / f"store-{repetition}-{'full' if 'done' in scenario else 'empty'}"
                store.mkdir()
                if "done" in scenario:
                    shutil.copyfile(ids_file, store / "downloaded_ids.txt")
                skip = len(access_log.read_text().splitlines()) if access_log.exists() else 0
                log_path = work / f"log-{store.name}.txt"
                argv = [benchlib.scrapy_bin(), "crawl", "civitai", "-a", "min_hearts=10",
                        "-s", f"CIVITAI_API_URL={nginx.api_url}", "-s", f"IMAGES_STORE={store}",
                        "-s", "LOG_LEVEL=INFO", "-s", "CIVITAI_PROGRESS=off"]
                with log_path.open("wb") as log:
                    t0 = time.time()
                    done = subprocess.run(argv, cwd=benchlib.REPO, stdout=log, stderr=subprocess.STDOUT,
                                          env=benchlib.clean_env(), timeout=300)
                    t_end = time.time()
                time.sleep(0.2)  # nginx writes its log line when the answer is sent
                arrivals = benchlib.read_arrivals(access_log, skip)
                text = log_path.read_text(errors="replace")
                skipped = "200 already done earlier (skipped)" in text
                run = {"first_request_s": (arrivals[0] - t0) if arrivals else float("nan"),
                       "run_s": t_end - t0, "returncode": done.returncode, "requests": len(arrivals),
                       "skipped_200": skipped}
                results[scenario].append(run)
                print(f"  {scenario:<22} run {repetition + 1}: first API request after {run['first_request_s']:.2f} s, "
                      f"whole run {run['run_s']:.2f} s, exit {done.returncode}"
                      + ("" if "done" not in scenario or skipped else "  WARN: the 200 were not skipped"), flush=True)
                shutil.rmtree(store, ignore_errors=True)

    print()
    summary = {}
    for scenario, runs in results.items():
        first = statistics.median(r["first_request_s"] for r in runs)
        whole = statistics.median(r["run_s"] for r in runs)
        summary[scenario] = {"first_request_s_median": first, "run_s_median": whole,
                             "first_request_s_max": max(r["first_request_s"] for r in runs)}
        print(f"{scenario:<22} start -> first API request: median {first:.2f} s (max "
              f"{summary[scenario]['first_request_s_max']:.2f} s); whole run {whole:.2f} s")
    full = summary[f"{args.ids:,} done ids"]["first_request_s_median"]
    empty = summary["empty store"]["first_request_s_median"]
    print(f"loading {args.ids:,} done ids adds {full - empty:.2f} s; target < {TARGET_S:.0f} s: "
          f"{'met' if full < TARGET_S else 'MISSED'}")
    report = {"date": datetime.now().isoformat(timespec="seconds"), "ids": args.ids, "target_s": TARGET_S,
              "machine": benchlib.machine(), "summary": summary, "runs": results}
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"resume-{stamp}.json"
    target.write_text(json.dumps(report, indent=1))
    print(f"results: {target}")
    ids_file.unlink()
    return 0 if full < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
