"""CPU budget: what each stage of storing one image costs, against what the race's targets allow.

    python bench/cpu_budget.py [--images 3000] [--race FILE] [--rounds 3]

Over the race's corpus (the images our filter keeps), in this one process, one stage
at a time, CPU seconds (user + sys) per image, best of ``--rounds``:

- ``md5``: the checksum of the stored bytes (the ``checksum`` of the item's ``images``
  field, as Scrapy's pipelines give it);
- ``check or convert``: ``imaging.process_image`` without its md5 (a kept JPEG or PNG is
  checked, a CMYK JPEG or GIF converted...);
- ``write image``: the image written to a fresh store folder (``AtomicWriter``:
  temporary file, rename), mostly the kernel's page-cache copy;
- ``metadata files``: the three metadata files built (JSON encoding) and written.

Then, from a race result (default: the newest ``bench/results/race-*.json``): the CPU
per image of each contender, what Scrapy's own per-image work costs (the stock
``FilesPipeline`` spider's CPU per image less its md5 and write, which it also does),
and the CPU per image the 5x-the-threads-script target leaves on these cores.
Written: ``bench/results/cpu-budget-<date>.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

sys.path.insert(0, str(benchlib.REPO))
from civitai_spider.storage.atomic import AtomicWriter  # noqa: E402
from civitai_spider.imaging import ImagePolicy, process_image  # noqa: E402
from civitai_spider.storage.metadata_files import sized_metadata_files  # noqa: E402

BENCH = Path(__file__).resolve().parent


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def best_of(rounds: int, stage: Callable[[Path], None], scratch: Path) -> float:
    """The least CPU seconds of ``rounds`` runs of ``stage`` (each given a fresh empty folder)."""
    best = float("inf")
    for _ in range(rounds):
        folder = Path(tempfile.mkdtemp(dir=scratch))
        started = cpu_seconds()
        stage(folder)
        best = min(best, cpu_seconds() - started)
        shutil.rmtree(folder)
    return best


def newest_race(results: Path) -> Path | None:
    races = sorted(results.glob("race-*.json"))
    return races[-1] if races else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=3000, help="the race corpus to use (its --images)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", help="cache dir (default $CIVITAI_BENCH_CACHE or /tmp/civitai-bench)")
    parser.add_argument("--race", help="a race result (default: the newest in bench/results)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", default=str(BENCH / "results"))
    args = parser.parse_args()

    corpus = benchlib.make_corpus(args.images, args.seed, cache=args.cache)
    kept = corpus.expected()
    datas = [(corpus.img_dir / f"{item['uuid']}.jpeg").read_bytes() for item in kept]
    policy = ImagePolicy()
    stored = [process_image(data, policy) for data in datas]  # also warms the imports
    scratch = benchlib.cache_root(args.cache) / "cpu-budget"
    scratch.mkdir(parents=True, exist_ok=True)
    count = len(kept)

    def md5(_: Path) -> None:
        for result in stored:
            hashlib.md5(result.data).hexdigest()

    def check_or_convert(_: Path) -> None:
        for data in datas:
            process_image(data, policy)

    def write_image(folder: Path) -> None:
        writer = AtomicWriter(str(folder))
        for item, result in zip(kept, stored):
            writer.write_files([(f"{item['id']}.{result.ext}", result.data)])

    def metadata(folder: Path) -> None:
        writer = AtomicWriter(str(folder))
        for item in kept:
            files, _ = sized_metadata_files(str(item["id"]), item["meta"], False, 1 << 20)
            writer.write_files((name, data) for name, (data, _) in files.items())

    stages = {name: best_of(args.rounds, stage, scratch) / count * 1000 for name, stage in
              [("md5", md5), ("process_image", check_or_convert), ("write image", write_image),
               ("metadata files", metadata)]}
    stages["check or convert"] = stages.pop("process_image") - stages["md5"]
    shutil.rmtree(scratch, ignore_errors=True)
    ours_store = sum(stages.values())

    print(f"{count} images ({sum(len(d) for d in datas) / count / 1000:.0f} kB served on average); "
          f"CPU ms per image, best of {args.rounds}:")
    for name in ("md5", "check or convert", "write image", "metadata files"):
        print(f"  {name:<18} {stages[name]:6.2f}")
    print(f"  {'store work, total':<18} {ours_store:6.2f}   (done by the store processes)")
    out: dict[str, Any] = {"date": datetime.now().isoformat(timespec="seconds"), "machine": benchlib.machine(),
                           "images": count, "stages_ms": stages, "store_ms": ours_store}

    race_path = Path(args.race) if args.race else newest_race(Path(args.results))
    if race_path and race_path.exists():
        summary = json.loads(race_path.read_text())["summary"]
        ms = {name: s["cpu_s_per_image"] * 1000 for name, s in summary.items() if s.get("cpu_s_per_image")}
        print(f"\nfrom {race_path.name}, CPU ms per image (whole process tree) and images/s:")
        for name, value in ms.items():
            print(f"  {name:<12} {value:6.2f}  {summary[name]['images_per_s']:6.1f}")
        out["race"] = {"file": race_path.name, "cpu_ms": ms}
        if "files" in ms:
            scrapy_ms = ms["files"] - stages["md5"] - stages["write image"]
            print(f"  Scrapy's own per-image work (FilesPipeline less md5 and write): {scrapy_ms:.2f}")
            out["scrapy_download_ms"] = scrapy_ms
        if "threads" in ms and "ours" in ms:
            cores = os.cpu_count() or 1
            target = 5 * summary["threads"]["images_per_s"]
            used = summary["ours"]["images_per_s"] * ms["ours"] / 1000  # cores ours kept busy
            print(f"  5x the threads script = {target:.0f} images/s: {cores / target * 1000:.2f} ms of CPU per image "
                  f"with all {cores} cores busy, {used / target * 1000:.2f} at the {used:.2f} cores ours keeps busy")
            out["target_5x"] = {"images_per_s": target, "ms_all_cores": cores / target * 1000,
                                "ms_at_ours_cores": used / target * 1000}
    Path(args.results).mkdir(parents=True, exist_ok=True)
    path = Path(args.results) / f"cpu-budget-{datetime.now().strftime('%Y-%m-%dT%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
