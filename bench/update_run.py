"""Update run over a large archive: what keeping it current costs, against walking it all.

    python bench/update_run.py [--archive 100000] [--new 150] [--repeat 3]

An archive of N images (default 100,000) already harvested with ``min_hearts=10
sort=Newest update=true``: the store holds its seen record (``seen/<query>.ids``,
N ids, as that first update run writes it) and ``downloaded_ids.txt`` (the ones
that qualified). Our nginx serves the feed as it is a day later: ``--new`` images
on top, newest first, 200 a page. Side by side, alternating, each on a fresh copy
of the store:

- ``update``: ``scrapy crawl civitai -a min_hearts=10 -a sort=Newest -a update=true``
- ``walk all``: the same without ``update`` (what keeping the archive current cost
  before update runs: every page again, every stored image skipped).

Reported per run: API requests (nginx's log), process start -> first API request,
whole run, peak RSS of the process tree, images stored. Written:
bench/results/update-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402

from civitai_spider.arguments import parse_arguments  # noqa: E402
from civitai_spider.storage import layout  # noqa: E402

BENCH = Path(__file__).resolve().parent
ARGS = {"min_hearts": "10", "sort": "Newest", "update": "true"}


def feed(archive: int, new: int) -> list[dict]:
    """Newest first: ids archive+new .. 1; half of them have 10 hearts or more."""
    rng = random.Random(archive)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    items = []
    for index, image_id in enumerate(range(archive + new, 0, -1)):
        meta = {"prompt": f"a lighthouse {image_id}, watercolor", "negativePrompt": "blurry", "seed": image_id}
        item = benchlib._public_item(rng, index, image_id, 832, 1216, meta, {"heartCount": image_id % 20})
        item["createdAt"] = (start + timedelta(seconds=image_id)).isoformat().replace("+00:00", ".000Z")
        items.append(item)
    return items


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archive", type=int, default=100_000)
    parser.add_argument("--new", type=int, default=150)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cache", help="cache dir (default $CIVITAI_BENCH_CACHE or /tmp/civitai-bench)")
    parser.add_argument("--results", default=str(BENCH / "results"))
    args = parser.parse_args()
    benchlib.interrupt_on_sigterm()

    cache = benchlib.cache_root(args.cache)
    stamp = datetime.now().strftime("%Y-%m-%dT%H%M%S")
    work = cache / "runs" / f"update-{stamp}"
    work.mkdir(parents=True)
    items = feed(args.archive, args.new)
    old = [it for it in items if it["id"] <= args.archive]
    crawl_args = parse_arguments(ARGS)
    seen_name = crawl_args.seen_name(crawl_args.queries[0])
    archive_store = work / "archive-store"
    (archive_store / "seen").mkdir(parents=True)
    # As the first update run writes them: the seen record oldest page first, the done ids as stored.
    (archive_store / layout.seen_file(seen_name)).write_text("".join(f"{it['id']}\n" for it in reversed(old)))
    done = [it["id"] for it in old if it["stats"]["heartCount"] >= 10]
    (archive_store / "downloaded_ids.txt").write_text("".join(f"{i}\n" for i in done))
    qualifying_new = sum(1 for it in items if it["id"] > args.archive and it["stats"]["heartCount"] >= 10)

    images = work / "img"
    images.mkdir()
    picture = benchlib._encode("jpeg", benchlib._picture(832, 1216, 1), {})
    for it in items[:args.new]:
        (images / f"{it['uuid']}.jpeg").write_bytes(picture)
    access_log = work / "api-access.log"
    nginx = benchlib.Nginx(work / "nginx", work / "pages", images, api_log=access_log)
    pages = benchlib.render_pages(items, work / "pages", nginx.api_url, nginx.cdn_root)
    print(f"archive: {args.archive:,} images seen ({len(done):,} stored), {args.new} new on top; "
          f"the feed is {pages} pages", flush=True)

    kinds = {"update": [f"{k}={v}" for k, v in ARGS.items()],
             "walk all": [f"{k}={v}" for k, v in ARGS.items() if k != "update"]}
    results: dict[str, list[dict]] = {kind: [] for kind in kinds}
    with nginx:
        for repetition in range(args.repeat):
            order = list(kinds) if repetition % 2 == 0 else list(reversed(kinds))
            for kind in order:
                store = work / f"store-{repetition}-{kind.replace(' ', '-')}"
                shutil.copytree(archive_store, store)
                skip = len(access_log.read_text().splitlines()) if access_log.exists() else 0
                argv = [benchlib.scrapy_bin(), "crawl", "civitai", *(x for a in kinds[kind] for x in ("-a", a)),
                        "-s", f"CIVITAI_API_URL={nginx.api_url}", "-s", f"IMAGES_STORE={store}",
                        "-s", "LOG_LEVEL=INFO", "-s", "CIVITAI_PROGRESS=off"]
                t0 = time.time()
                measured = benchlib.run_measured(argv, cwd=benchlib.REPO, log=work / f"log-{store.name}.txt",
                                                 env=benchlib.clean_env(), timeout=1800)
                time.sleep(0.2)  # nginx writes its log line when the answer is sent
                arrivals = benchlib.read_arrivals(access_log, skip)
                stored = sum(1 for p in store.glob("*.jpg"))
                run = {"api_requests": len(arrivals), "first_request_s": (arrivals[0] - t0) if arrivals else None,
                       "run_s": measured.wall_s, "peak_rss_mb": measured.peak_rss / 2**20,
                       "stored": stored, "returncode": measured.returncode}
                results[kind].append(run)
                print(f"  {kind:<8} run {repetition + 1}: {run['api_requests']} API requests, first after "
                      f"{run['first_request_s']:.2f} s, whole run {run['run_s']:.2f} s, peak RSS "
                      f"{run['peak_rss_mb']:.0f} MB, {stored} stored (want {qualifying_new}), exit {run['returncode']}",
                      flush=True)
                shutil.rmtree(store, ignore_errors=True)

    print()
    summary = {}
    for kind, runs in results.items():
        summary[kind] = {key: statistics.median(r[key] for r in runs)
                         for key in ("api_requests", "first_request_s", "run_s", "peak_rss_mb")}
        s = summary[kind]
        print(f"{kind:<8} median: {s['api_requests']:.0f} API requests, first after {s['first_request_s']:.2f} s, "
              f"whole run {s['run_s']:.2f} s, peak RSS {s['peak_rss_mb']:.0f} MB")
    u, w = summary["update"], summary["walk all"]
    print(f"update / walk all: API requests {u['api_requests'] / w['api_requests']:.4f}, whole run "
          f"{u['run_s'] / w['run_s']:.3f}, time to first request {u['first_request_s'] / w['first_request_s']:.2f}, "
          f"peak RSS {u['peak_rss_mb'] / w['peak_rss_mb']:.2f}")
    ok = all(r["returncode"] == 0 and r["stored"] == qualifying_new for runs in results.values() for r in runs)
    report = {"date": datetime.now().isoformat(timespec="seconds"), "archive": args.archive, "new": args.new,
              "pages": pages, "machine": benchlib.machine(), "summary": summary, "runs": results, "ok": ok}
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"update-{stamp}.json"
    target.write_text(json.dumps(report, indent=1))
    print(f"results: {target}")
    shutil.rmtree(work / "pages", ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
