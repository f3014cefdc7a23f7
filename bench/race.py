"""Race: our spider against stock Scrapy pipelines, img2dataset and a threads script, on one local corpus.

    python bench/race.py [--images N] [--rounds R] [--corpus DIR] [--only NAME,...] [--keep] [--serve]

A corpus of N Civitai-like images (default 3000; cached by parameters under
$CIVITAI_BENCH_CACHE or /tmp/civitai-bench) is served by our own nginx: the API
pages as static JSON files chained by cursor, the images at CDN-like paths. Each
contender then harvests the same images (hearts >= 10 and a prompt), each run a
separate process into a fresh output dir, contenders interleaved over R rounds
(default 3) with the order rotated each round:

    ours         scrapy crawl civitai -a min_hearts=10 (the full pipeline: walk, filter,
                 images kept or converted, metadata files, done ids)
    ours-2w      the same crawl as 2 workers sharing it through scrapy-redis (bench/workers.py:
                 a private redis-server, worker 1 "new", worker 2 "resume"), one machine
    files        bench/stock_spider.py + scrapy.pipelines.files.FilesPipeline
    images       bench/stock_spider.py + scrapy.pipelines.images.ImagesPipeline
    img2dataset  img2dataset (own venv, pinned) over the list of the URLs ours keeps, download only
    threads      bench/threads_script.py: requests + 16 threads + Pillow (RGB JPEG q95)

Measured per run: wall time, images stored (checked against the expected count),
images/s, CPU seconds of the process tree (user+sys), CPU s/image, peak RSS of the
process tree, bytes written. Printed: medians over the rounds and ratios to ours;
written to bench/results/race-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

BENCH = Path(__file__).resolve().parent
IMG2DATASET_VERSION = "1.47.0"
SCRAPY_COMMON = ["-s", "CONCURRENT_REQUESTS=32", "-s", "CONCURRENT_REQUESTS_PER_DOMAIN=16",
                 "-s", "REMOTE_CONTROL_ENABLED=False", "-s", "TELNETCONSOLE_ENABLED=False", "-s", "LOG_LEVEL=INFO"]
LABELS = {
    "ours": "ours (scrapy crawl civitai)",
    "ours-2w": "ours, 2 workers (scrapy-redis)",
    "files": "stock FilesPipeline spider",
    "images": "stock ImagesPipeline spider",
    "img2dataset": f"img2dataset {IMG2DATASET_VERSION}",
    "threads": "threads+requests+Pillow",
}
OURS_FILE = re.compile(r"^(\d+)\.(jpg|png|webp)$")


def log(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------------------
# img2dataset in a venv of its own


def ensure_img2dataset(cache: Path) -> tuple[Path | None, str]:
    """(path of the img2dataset command, "") or (None, why it cannot be used)."""
    venv = cache / f"img2dataset-{IMG2DATASET_VERSION}-venv"
    command = venv / "bin" / "img2dataset"
    marker = venv / ".installed"
    if marker.exists() and command.exists():
        return command, ""
    log(f"installing img2dataset=={IMG2DATASET_VERSION} into {venv} (once)")
    shutil.rmtree(venv, ignore_errors=True)
    steps = [[sys.executable, "-m", "venv", str(venv)],
             [str(venv / "bin" / "pip"), "install", "-q", f"img2dataset=={IMG2DATASET_VERSION}"]]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=1200)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"{' '.join(step[:3])}: {exc}"
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return None, f"{' '.join(step[:3])} failed: {' | '.join(tail)}"
    check = subprocess.run([str(venv / "bin" / "python"), "-c", "import img2dataset"], capture_output=True, text=True,
                           env=benchlib.clean_env(NO_ALBUMENTATIONS_UPDATE="1"))
    if check.returncode != 0:
        return None, "import img2dataset failed: " + check.stderr.strip().splitlines()[-1]
    freeze = subprocess.run([str(venv / "bin" / "pip"), "freeze"], capture_output=True, text=True)
    (venv / "freeze.txt").write_text(freeze.stdout)
    marker.write_text(IMG2DATASET_VERSION)
    return command, ""


# --------------------------------------------------------------------------------------
# Contenders: how to run each, how to count what it stored


def count_ours(out: Path, expected: list[dict[str, Any]]) -> tuple[int, str]:
    ids, metas = set(), 0
    for name in os.listdir(out) if out.exists() else []:
        found = OURS_FILE.match(name)
        if found:
            ids.add(int(found.group(1)))
        elif name.endswith("_meta.json"):
            metas += 1
    want = {item["id"] for item in expected}
    notes = []
    if ids != want:
        notes.append(f"{len(want - ids)} missing, {len(ids - want)} unexpected ids")
    if metas != len(want):
        notes.append(f"{metas} meta files")
    done = out / "downloaded_ids.txt"
    recorded = len(done.read_text().split()) if done.exists() else 0
    if recorded != len(want):
        notes.append(f"{recorded} done ids")
    return len(ids), "; ".join(notes)


def count_dir(folder: Path, suffixes: tuple[str, ...] = ()) -> int:
    total = 0
    for _base, _dirs, names in os.walk(folder):
        total += sum(1 for n in names if not suffixes or n.endswith(suffixes))
    return total


def count_img2dataset(out: Path) -> tuple[int, str]:
    images = count_dir(out, (".jpg",))
    successes = failures = 0
    for stats in out.glob("*_stats.json") if out.exists() else []:
        data = json.loads(stats.read_text())
        successes += data.get("successes", 0)
        failures += data.get("failed_to_download", 0) + data.get("failed_to_resize", 0)
    return images, (f"stats: {successes} ok, {failures} failed" if failures or successes != images else "")


def count_threads(out: Path) -> tuple[int, str]:
    if not out.exists():
        return 0, ""
    images = sum(1 for n in os.listdir(out) if re.match(r"^\d+\.jpg$", n))
    metas = sum(1 for n in os.listdir(out) if n.endswith("_meta.json"))
    return images, "" if metas == images else f"{metas} meta files"


def build_contenders(api: str, urls_file: Path, expected: list[dict[str, Any]], img2dataset: Path | None,
                     ) -> dict[str, tuple[Callable[[Path, Path], tuple[list[str], Path, dict[str, str]]],
                                        Callable[[Path], tuple[int, str]]]]:
    scrapy = benchlib.scrapy_bin()
    env = benchlib.clean_env()

    def ours(out: Path, run_dir: Path) -> tuple[list[str], Path, dict[str, str]]:
        return ([scrapy, "crawl", "civitai", "-a", "min_hearts=10", "-s", f"CIVITAI_API_URL={api}",
                 "-s", f"IMAGES_STORE={out}", "-s", "LOG_LEVEL=INFO", "-s", "CIVITAI_PROGRESS=off"], benchlib.REPO, env)

    def ours_workers(out: Path, run_dir: Path) -> tuple[list[str], Path, dict[str, str]]:
        crawl, where, env_ = ours(out, run_dir)
        return [sys.executable, str(BENCH / "workers.py"), "--workers", "2", "--", *crawl], where, env_

    def stock(pipeline: str, store_setting: str) -> Callable[[Path, Path], tuple[list[str], Path, dict[str, str]]]:
        def command(out: Path, run_dir: Path) -> tuple[list[str], Path, dict[str, str]]:
            # Run outside the repository: no scrapy.cfg, so no project settings load.
            return ([scrapy, "runspider", str(BENCH / "stock_spider.py"), "-a", f"api={api}", "-a", "min_hearts=10",
                     "-s", f"ITEM_PIPELINES={{\"{pipeline}\": 1}}", "-s", f"{store_setting}={out}", *SCRAPY_COMMON],
                    run_dir, env)
        return command

    def i2d(out: Path, run_dir: Path) -> tuple[list[str], Path, dict[str, str]]:
        per_shard = max(25, math.ceil(len(expected) / 10))  # ~10 shards: both processes busy to the end
        return ([str(img2dataset), "--url_list", str(urls_file), "--input_format", "txt", "--output_folder", str(out),
                 "--output_format", "files", "--resize_mode", "no", "--disable_all_reencoding", "True",
                 "--encode_format", "jpg", "--processes_count", "2", "--thread_count", "32",
                 "--number_sample_per_shard", str(per_shard), "--extract_exif", "False", "--compute_hash", "None",
                 "--timeout", "60", "--retries", "0"],
                run_dir, benchlib.clean_env(NO_ALBUMENTATIONS_UPDATE="1", WANDB_MODE="disabled"))

    def threads(out: Path, run_dir: Path) -> tuple[list[str], Path, dict[str, str]]:
        return ([sys.executable, str(BENCH / "threads_script.py"), "--api", api, "--out", str(out),
                 "--min-hearts", "10"], run_dir, env)

    found: dict[str, Any] = {
        "ours": (ours, lambda out: count_ours(out, expected)),
        "ours-2w": (ours_workers, lambda out: count_ours(out, expected)),
        "files": (stock("scrapy.pipelines.files.FilesPipeline", "FILES_STORE"), lambda out: (count_dir(out / "full"), "")),
        "images": (stock("scrapy.pipelines.images.ImagesPipeline", "IMAGES_STORE"),
                   lambda out: (count_dir(out / "full"), "")),
        "threads": (threads, count_threads),
    }
    if img2dataset is not None:
        found["img2dataset"] = (i2d, count_img2dataset)
    return found


# --------------------------------------------------------------------------------------
# Report


def versions(img2dataset: Path | None) -> dict[str, str]:
    from importlib.metadata import version

    out = {"python": sys.version.split()[0], "nginx": benchlib.nginx_version()}
    for name in ("Scrapy", "Twisted", "Pillow", "requests", "numpy"):
        try:
            out[name] = version(name)
        except Exception:  # noqa: BLE001
            out[name] = "?"
    if img2dataset is not None:
        freeze = img2dataset.parent.parent / "freeze.txt"
        pins = dict(line.split("==", 1) for line in freeze.read_text().split() if "==" in line) if freeze.exists() else {}
        out["img2dataset"] = pins.get("img2dataset", IMG2DATASET_VERSION)
        for name in ("opencv-python-headless", "albumentations", "pyarrow", "fsspec"):
            if name in pins:
                out[f"img2dataset:{name}"] = pins[name]
    return out


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(runs: list[dict[str, Any]], names: list[str]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for name in names:
        mine = [r for r in runs if r["contender"] == name]
        if not mine:
            continue
        summary[name] = {
            "rounds": len(mine),
            "images_per_s": median([r["images_per_s"] for r in mine]),
            "cpu_s_per_image": median([r["cpu_s_per_image"] for r in mine]),
            "peak_rss_mb": median([r["peak_rss_mb"] for r in mine]),
            "bytes_written": median([r["bytes_written"] for r in mine]),
            "wall_s": median([r["wall_s"] for r in mine]),
            "cpu_s": median([r["cpu_s"] for r in mine]),
            "nginx_cpu_s": median([r["nginx_cpu_s"] for r in mine]),
            "stored": [r["stored"] for r in mine],
            "expected": mine[0]["expected"],
            "all_ok": all(r["ok"] for r in mine),
            "warnings": sorted({w for r in mine for w in r["warnings"]}),
            "log_problem_lines": max(r["log_problem_lines"] for r in mine),
        }
    ours = summary.get("ours")
    for name, s in summary.items():
        if ours and name != "ours":
            s["ours_ratio"] = {  # ours / theirs
                "images_per_s": ours["images_per_s"] / s["images_per_s"] if s["images_per_s"] else None,
                "cpu_s_per_image": ours["cpu_s_per_image"] / s["cpu_s_per_image"] if s["cpu_s_per_image"] else None,
                "peak_rss_mb": ours["peak_rss_mb"] / s["peak_rss_mb"] if s["peak_rss_mb"] else None,
                "bytes_written": ours["bytes_written"] / s["bytes_written"] if s["bytes_written"] else None,
            }
    return summary


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(summary: dict[str, dict[str, Any]], skipped: dict[str, str]) -> str:
    head = (f"{'contender':<30} {'images/s':>9} {'CPU s/img':>10} {'peak RSS MB':>12} {'written MB':>11} "
            f"{'stored/expected':>16}  {'ours/them: img/s':>16} {'CPU/img':>8} {'RSS':>7} {'bytes':>7}  warnings")
    lines = [head, "-" * len(head)]
    for name, s in summary.items():
        stored = s["stored"]
        stored_text = f"{min(stored)}/{s['expected']}" if min(stored) == max(stored) else \
            f"{min(stored)}-{max(stored)}/{s['expected']}"
        r = s.get("ours_ratio", {})
        warn = "; ".join(s["warnings"]) or ("" if s["log_problem_lines"] == 0 else f"{s['log_problem_lines']} error lines in log")
        if not s["all_ok"]:
            warn = "COUNT MISMATCH " + warn
        lines.append(
            f"{LABELS[name]:<30} {s['images_per_s']:>9.1f} {s['cpu_s_per_image']:>10.4f} {s['peak_rss_mb']:>12.0f} "
            f"{s['bytes_written'] / 1e6:>11.1f} {stored_text:>16}  "
            f"{ratio(r.get('images_per_s')) if r else '(ours)':>16} {ratio(r.get('cpu_s_per_image')) if r else '':>8} "
            f"{ratio(r.get('peak_rss_mb')) if r else '':>7} {ratio(r.get('bytes_written')) if r else '':>7}  {warn}")
    for name, why in skipped.items():
        lines.append(f"{LABELS[name]:<30} {'n/a':>9}  not run: {why}")
    return "\n".join(lines)


def sentences(summary: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    for name, s in summary.items():
        r = s.get("ours_ratio")
        if not r or not r["images_per_s"]:
            continue
        out.append(f"ours is {r['images_per_s']:.2f}x the {LABELS[name]} in images/s, uses "
                   f"{r['cpu_s_per_image']:.2f}x its CPU per image and {r['peak_rss_mb']:.2f}x its peak RSS, "
                   f"and writes {r['bytes_written']:.2f}x its bytes")
    return out


# --------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=3000, help="corpus size (default 3000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpus", help="corpus directory (reused when it holds the same parameters)")
    parser.add_argument("--cache", help="cache dir (default $CIVITAI_BENCH_CACHE or /tmp/civitai-bench)")
    parser.add_argument("--only", help="comma-separated contenders: " + ",".join(LABELS))
    parser.add_argument("--keep", action="store_true", help="keep every output dir (default: delete after measuring)")
    parser.add_argument("--serve", action="store_true", help="only serve the corpus (print the URLs) until Ctrl-C")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds before a run is killed")
    parser.add_argument("--results", default=str(BENCH / "results"))
    args = parser.parse_args()
    benchlib.interrupt_on_sigterm()

    cache = benchlib.cache_root(args.cache)
    corpus = benchlib.make_corpus(args.images, args.seed, args.corpus, str(cache), log=log)
    expected = corpus.expected(10)
    stamp = datetime.now().strftime("%Y-%m-%dT%H%M%S")
    work = cache / "runs" / stamp
    work.mkdir(parents=True)
    nginx = benchlib.Nginx(work / "nginx", work / "pages", corpus.img_dir)
    pages = benchlib.render_pages(corpus.items, work / "pages", nginx.api_url, nginx.cdn_root)
    urls_file = work / "urls.txt"  # exactly the images ours keeps
    urls_file.write_text("".join(benchlib.api_item(it, nginx.cdn_root)["url"] + "\n" for it in expected))
    log(f"corpus: {len(corpus.items)} images in {corpus.root}, {pages} API pages; expected after the filter: "
        f"{len(expected)} (hearts >= 10 and a prompt)")

    names = [n.strip() for n in args.only.split(",")] if args.only else list(LABELS)
    unknown = set(names) - set(LABELS)
    if unknown:
        parser.error(f"unknown contenders: {sorted(unknown)}")
    skipped: dict[str, str] = {}
    img2dataset: Path | None = None
    if "img2dataset" in names and not args.serve:
        img2dataset, why = ensure_img2dataset(cache)
        if img2dataset is None:
            skipped["img2dataset"] = why
            names.remove("img2dataset")
            log(f"img2dataset cannot run here: {why}")
    if "ours-2w" in names and shutil.which("redis-server") is None:
        skipped["ours-2w"] = "redis-server is not installed (apt-get install redis-server)"
        names.remove("ours-2w")
        log(f"ours-2w cannot run here: {skipped['ours-2w']}")

    with nginx:
        log(f"nginx {benchlib.nginx_version()}: API {nginx.api_url}  CDN {nginx.cdn_root}")
        if args.serve:
            log(f"try: scrapy crawl civitai -a min_hearts=10 -s CIVITAI_API_URL={nginx.api_url}")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                return 0
        contenders = build_contenders(nginx.api_url, urls_file, expected, img2dataset)
        warmed = benchlib.warm_cache(corpus.img_dir)
        log(f"page cache warmed: {warmed / 1e6:.0f} MB read")
        runs: list[dict[str, Any]] = []
        for round_no in range(args.rounds):
            order = names[round_no % len(names):] + names[:round_no % len(names)]
            log(f"round {round_no + 1}/{args.rounds}: {', '.join(order)}")
            for name in order:
                command, counter = contenders[name]
                out = work / f"out-{name}-r{round_no + 1}"
                run_dir = work / f"cwd-{name}-r{round_no + 1}"
                run_dir.mkdir()
                argv, cwd, env = command(out, run_dir)
                nginx_cpu = nginx.cpu_seconds()
                measured = benchlib.run_measured(argv, cwd=cwd, log=work / f"log-{name}-r{round_no + 1}.txt", env=env,
                                                 timeout=args.timeout)
                nginx_cpu = nginx.cpu_seconds() - nginx_cpu
                stored, note = counter(out)
                written, files = benchlib.dir_bytes(out)
                problems, first = benchlib.log_problems(work / f"log-{name}-r{round_no + 1}.txt")
                warnings = []
                if stored != len(expected):
                    warnings.append(f"stored {stored} != expected {len(expected)}")
                if note:
                    warnings.append(note)
                if measured.returncode != 0:
                    warnings.append(f"exit status {measured.returncode}")
                if measured.timed_out:
                    warnings.append("timed out")
                run = {
                    "contender": name, "round": round_no + 1, "position": order.index(name) + 1,
                    "argv": argv, "cwd": str(cwd), "returncode": measured.returncode,
                    "wall_s": measured.wall_s, "cpu_s": measured.cpu_s, "cpu_user_s": measured.cpu_user_s,
                    "cpu_sys_s": measured.cpu_sys_s, "peak_rss_mb": measured.peak_rss / 2**20,
                    "rss_samples": measured.rss_samples, "stored": stored, "expected": len(expected),
                    "ok": stored == len(expected) and not note and measured.returncode == 0,
                    "images_per_s": stored / measured.wall_s if measured.wall_s else 0.0,
                    "cpu_s_per_image": measured.cpu_s / stored if stored else float("nan"),
                    "bytes_written": written, "files_written": files, "nginx_cpu_s": nginx_cpu,
                    "warnings": warnings, "log_problem_lines": problems, "log_problem_first": first,
                }
                runs.append(run)
                log(f"  {LABELS[name]:<30} {measured.wall_s:7.1f} s  {run['images_per_s']:7.1f} img/s  "
                    f"CPU {measured.cpu_s:6.1f} s ({run['cpu_s_per_image']:.4f} s/img)  "
                    f"peak RSS {run['peak_rss_mb']:6.0f} MB  {written / 1e6:7.1f} MB in {files} files  "
                    f"stored {stored}/{len(expected)}  nginx CPU {nginx_cpu:.1f} s"
                    + (f"  WARN: {'; '.join(warnings)}" if warnings else "")
                    + (f"  [{problems} error lines in log]" if problems else ""))
                if not args.keep:
                    shutil.rmtree(out, ignore_errors=True)
                shutil.rmtree(run_dir, ignore_errors=True)
                os.sync()  # this run's writes leave the page cache before the next run starts
                time.sleep(1)

    summary = summarize(runs, list(LABELS))
    report = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "params": {"images": args.images, "rounds": args.rounds, "seed": args.seed, "min_hearts": 10,
                   "expected": len(expected), "api_pages": pages},
        "machine": benchlib.machine(),
        "versions": versions(img2dataset),
        "corpus": {"root": str(corpus.root), "mix": benchlib.corpus_summary(corpus)},
        "skipped": skipped,
        "summary": summary,
        "runs": runs,
        "logs": str(work),
    }
    machine, vers = report["machine"], report["versions"]
    log("")
    log(f"machine: {machine['nproc']} CPUs ({machine['cpu_model']}), {machine['ram_gib']} GiB RAM, "
        f"Linux {machine['kernel']}")
    log("versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()))
    log(f"corpus: {len(corpus.items)} images, {len(expected)} kept by the filter, {pages} pages of 200; "
        f"median of {args.rounds} round(s); logs in {work}")
    log("")
    log(table(summary, skipped))
    log("")
    for line in sentences(summary):
        log(line)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    target = results / f"race-{stamp}.json"
    target.write_text(json.dumps(report, indent=1, default=str))
    log(f"\nresults: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
