"""Export: how fast, and in how much memory, does ``python -m civitai_spider.export`` turn a
100,000-image harvest into a training set; and its webdataset against img2dataset's.

    python bench/walk.py --keep                       # once: the 100,000-image walk store
    python bench/export.py [--store DIR] [--smaller 10000,50000] [--repeats 2] [--no-img2dataset]

STORE is a crawl's store (default: the newest ``<cache>/runs/walk-*/store`` that walk.py
kept). Smaller stores hold its first 10,000 and 50,000 images (``--smaller``, hard
links), so that peak memory can be compared at 10,000, 50,000 and 100,000 images: it must
not grow with the store. Each export runs as its own process (``-q``), measured as a process tree
(wall time, CPU, peak RSS sampled every 50 ms), its output checked (samples counted),
then deleted. The formats: parquet, parquet with the images embedded, webdataset,
webdataset resized to 32 px (center_crop), imagefolder (hard links).

img2dataset (pinned, in its own venv as race.py installs it) writes webdataset from the
same images: its input is a Parquet list of ``file://`` URLs of the store's images with
their captions (built before the timing: the most favourable case for it, no network),
``--resize_mode no --disable_all_reencoding True`` (so it keeps the bytes, as ours
does), 2 processes (the machine's cores) x 16 threads, 10,000 samples a shard. Ours and
img2dataset alternate, ``--repeats`` times each. Results: bench/results/export-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tarfile
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # the project, for its caption rule
import benchlib  # noqa: E402
import race  # noqa: E402

BENCH = Path(__file__).resolve().parent
FORMATS = {  # name: (export arguments, output name)
    "parquet": (["parquet"], "out.parquet"),
    "parquet+images": (["parquet", "--embed-images"], "out.parquet"),
    "webdataset": (["webdataset"], "wds"),
    "webdataset 32px": (["webdataset", "--resize", "32", "--resize-mode", "center_crop"], "wds"),
    "imagefolder": (["imagefolder"], "folder"),
}


def newest_walk_store(cache: Path) -> Path | None:
    stores = sorted((cache / "runs").glob("walk-*/store"))
    return stores[-1] if stores else None


def image_ids(store: Path) -> list[int]:
    ids = []
    with os.scandir(store) as entries:
        for entry in entries:
            stem, dot, ext = entry.name.rpartition(".")
            if dot and stem.isdigit() and ext in ("jpg", "png", "webp"):
                ids.append(int(stem))
    return sorted(ids)


def small_store(store: Path, ids: list[int], folder: Path) -> Path:
    """The first ``len(ids)`` images of ``store`` with all their files, as hard links."""
    folder.mkdir(parents=True)
    wanted = {str(i) for i in ids}
    with os.scandir(store) as entries:
        for entry in entries:
            stem = entry.name.split(".", 1)[0].split("_", 1)[0]
            if stem in wanted and entry.is_file():
                os.link(entry.path, folder / entry.name)
    return folder


def count_samples(out: Path, fmt: str) -> int:
    if fmt.startswith("parquet"):
        import pyarrow.parquet as pq

        return pq.ParquetFile(out).metadata.num_rows
    if fmt.startswith("webdataset") or fmt == "img2dataset":
        total = 0
        for shard in sorted(out.glob("*.tar")):
            with tarfile.open(shard) as tar:
                total += sum(1 for name in tar.getnames() if name.endswith(".txt"))
        return total
    return sum(1 for _ in (out / "metadata.jsonl").open())


def run_ours(fmt: str, store: Path, work: Path, tag: str) -> dict[str, Any]:
    args, name = FORMATS[fmt]
    out = work / f"{tag}-{name}"
    argv = [sys.executable, "-m", "civitai_spider.export", args[0], str(store), str(out), *args[1:], "-q"]
    measured = benchlib.run_measured(argv, cwd=benchlib.REPO, log=work / f"log-{tag}-{fmt.replace(' ', '_')}.txt",
                                     env=benchlib.clean_env())
    row = {"format": fmt, "store": tag, "rc": measured.returncode, "wall_s": round(measured.wall_s, 2),
           "cpu_s": round(measured.cpu_s, 2), "peak_rss_mb": round(measured.peak_rss / 2**20, 1)}
    if measured.returncode == 0:
        row["samples"] = count_samples(out, fmt)
        row["out_mb"] = round(benchlib.dir_bytes(out)[0] / 1e6 if out.is_dir() else out.stat().st_size / 1e6, 1)
        row["images_per_s"] = round(row["samples"] / measured.wall_s, 1)
    shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink(missing_ok=True)
    return row


def url_list(store: Path, ids: list[int], target: Path) -> None:
    """img2dataset's input: the store's images as file:// URLs, with the same captions ours writes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from civitai_spider.storage.metadata_files import caption

    urls, captions = [], []
    for image_id in ids:
        record = json.loads((store / f"{image_id}.json").read_text("utf-8"))
        urls.append((store / record["stored"]["file"]).as_uri())
        prompt = (record.get("meta") or {}).get("prompt")
        captions.append(caption(prompt) if prompt else "")
    pq.write_table(pa.table({"url": urls, "caption": captions, "id": ids}), target)


def run_img2dataset(command: Path, urls: Path, work: Path, count: int) -> dict[str, Any]:
    out = work / "i2d-wds"
    argv = [str(command), "--url_list", str(urls), "--input_format", "parquet", "--url_col", "url",
            "--caption_col", "caption", "--save_additional_columns", '["id"]', "--output_folder", str(out),
            "--output_format", "webdataset", "--resize_mode", "no", "--disable_all_reencoding", "True",
            "--encode_format", "jpg", "--processes_count", "2", "--thread_count", "16",
            "--number_sample_per_shard", "10000", "--extract_exif", "False", "--compute_hash", "None",
            "--timeout", "60", "--retries", "0"]
    measured = benchlib.run_measured(argv, cwd=work, log=work / "log-img2dataset.txt",
                                     env=benchlib.clean_env(NO_ALBUMENTATIONS_UPDATE="1", WANDB_MODE="disabled"))
    row = {"format": "img2dataset", "store": "full", "rc": measured.returncode, "wall_s": round(measured.wall_s, 2),
           "cpu_s": round(measured.cpu_s, 2), "peak_rss_mb": round(measured.peak_rss / 2**20, 1)}
    if out.exists():
        row["samples"] = count_samples(out, "img2dataset")
        row["out_mb"] = round(benchlib.dir_bytes(out)[0] / 1e6, 1)
        row["images_per_s"] = round(row["samples"] / measured.wall_s, 1)
        if row["samples"] != count:
            row["note"] = f"{count - row['samples']} images missing"
    shutil.rmtree(out, ignore_errors=True)
    return row


def show(row: dict[str, Any]) -> None:
    print(f"{row['format']:<16} {row['store']:<6} rc {row['rc']}  {row.get('samples', 0):>7} samples  "
          f"{row['wall_s']:>7.1f} s  {row.get('images_per_s', 0):>8.0f} img/s  cpu {row['cpu_s']:>6.1f} s  "
          f"peak RSS {row['peak_rss_mb']:>6.0f} MB  out {row.get('out_mb', 0):>7.1f} MB  {row.get('note', '')}",
          flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", help="a crawl's store (default: the newest walk.py --keep store)")
    parser.add_argument("--smaller", default="10000,50000", help="sizes of the smaller stores (default 10000,50000)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of ours and img2dataset, alternating")
    parser.add_argument("--formats", default=",".join(FORMATS), help="which of ours, comma-separated ('': none)")
    parser.add_argument("--no-img2dataset", action="store_true")
    parser.add_argument("--cache", help="cache dir (default $CIVITAI_BENCH_CACHE or /tmp/civitai-bench)")
    parser.add_argument("--results", default=str(BENCH / "results"))
    args = parser.parse_args()
    benchlib.interrupt_on_sigterm()

    cache = benchlib.cache_root(args.cache)
    store = Path(args.store) if args.store else newest_walk_store(cache)
    if store is None or not store.is_dir():
        print("no store: run `python bench/walk.py --keep` first, or give --store DIR", file=sys.stderr)
        return 2
    stamp = datetime.now().strftime("%Y-%m-%dT%H%M%S")
    work = cache / "runs" / f"export-{stamp}"
    work.mkdir(parents=True)
    ids = image_ids(store)
    sizes = [int(n) for n in args.smaller.split(",") if n and int(n) < len(ids)]
    stores = [(f"{n // 1000}k", small_store(store, ids[:n], work / f"first-{n}")) for n in sizes]
    stores.append(("full", store))
    benchlib.warm_cache(store)
    print(f"store {store}: {len(ids):,} images; smaller stores: {', '.join(f'{n:,}' for n in sizes)} of them "
          "(hard links)", flush=True)
    rows: list[dict[str, Any]] = []
    for fmt in filter(None, args.formats.split(",")):
        for tag, where in stores:
            rows.append(run_ours(fmt, where, work, tag))
            show(rows[-1])

    race_rows: list[dict[str, Any]] = []
    if not args.no_img2dataset:
        command, why = race.ensure_img2dataset(cache)
        if command is None:
            print(f"img2dataset cannot run here: {why}", flush=True)
        else:
            urls = work / "urls.parquet"
            url_list(store, ids, urls)
            for _ in range(args.repeats):
                race_rows.append(run_ours("webdataset", store, work, "full"))
                show(race_rows[-1])
                race_rows.append(run_img2dataset(command, urls, work, len(ids)))
                show(race_rows[-1])
    summary = {}
    for name in ("webdataset", "img2dataset"):
        runs = [r for r in race_rows if r["format"] == name and r["rc"] == 0]
        if runs:
            summary[name] = {"wall_s_median": statistics.median(r["wall_s"] for r in runs),
                             "peak_rss_mb_max": max(r["peak_rss_mb"] for r in runs),
                             "cpu_s_median": statistics.median(r["cpu_s"] for r in runs)}
    if len(summary) == 2:
        ratio = summary["img2dataset"]["wall_s_median"] / summary["webdataset"]["wall_s_median"]
        print(f"\nwebdataset of {len(ids):,} images: ours {summary['webdataset']['wall_s_median']:.1f} s, "
              f"img2dataset {summary['img2dataset']['wall_s_median']:.1f} s (x{ratio:.1f}); peak RSS "
              f"{summary['webdataset']['peak_rss_mb_max']:.0f} MB against {summary['img2dataset']['peak_rss_mb_max']:.0f} MB")
    report = {"date": datetime.now().isoformat(timespec="seconds"), "store": str(store), "images": len(ids),
              "smaller": sizes, "machine": benchlib.machine(), "formats": rows, "race": race_rows,
              "summary": summary, "work": str(work)}
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    target = results / f"export-{stamp}.json"
    target.write_text(json.dumps(report, indent=1))
    print(f"results: {target}")
    for _tag, where in stores[:-1]:
        shutil.rmtree(where, ignore_errors=True)
    bad = [r for r in rows + race_rows if r["rc"] != 0]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
