"""Serve every file of a folder as a Civitai image, crawl them, and check what was stored.

    python bench/odd_files.py DIR [--work DIR]

For a collection of odd files we do not ship, such as Pillow's own test images
(``Tests/images`` of a python-pillow/Pillow checkout, ~1,070 files): each file
becomes one API item whose ``url`` serves its bytes, a real ``scrapy crawl civitai``
runs against the stand-in (tests/mockserver.py), and every file must end up either
stored, opening in Pillow with every frame decoding and under the extension of
what it is (a ``.mp4`` holding a video), or in ``failures.jsonl`` with a reason.
Prints the counts and each file that breaks the rule; exit status 1 if any does.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from civitai_spider.imaging import iso_bmff  # noqa: E402
from tests.mockserver import MockServer  # noqa: E402
from tests.support import api_image, scenario  # noqa: E402

FORMATS = {".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP"}


def problem(path: Path) -> str | None:
    """Why a stored file is not what its name says, or does not open; None if it is fine."""
    data = path.read_bytes()
    if path.suffix == ".mp4":
        found = iso_bmff(data)
        return None if found and found[0] == "video" else f"not a video: {data[:16]!r}"
    if path.suffix == ".webm":
        return None if data[:4] == b"\x1a\x45\xdf\xa3" else f"not WebM: {data[:16]!r}"
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != FORMATS[path.suffix]:
                return f"{path.suffix} holds {image.format}"
            for frame in range(getattr(image, "n_frames", 1)):
                image.seek(frame)
                image.load()
    except Exception as exc:  # whatever Pillow raises on a file it cannot open
        return f"does not open: {exc.__class__.__name__}: {exc}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--work", type=Path, default=None, help="where the store goes (default: a temp dir)")
    args = parser.parse_args()
    files = {str(p.relative_to(args.folder)): p.read_bytes() for p in sorted(args.folder.rglob("*")) if p.is_file()}
    names = sorted(files)
    work = args.work or Path(tempfile.mkdtemp(prefix="odd-files-"))
    store = work / "store"
    work.mkdir(parents=True, exist_ok=True)
    with MockServer() as server:
        server.load(scenario([api_image(i, file=name, prompt=name) for i, name in enumerate(names, start=1)],
                             files, unsorted=True))
        log = work / "crawl.log"
        with open(log, "wb") as out:
            done = subprocess.run([sys.executable, "-m", "scrapy", "crawl", "civitai", "-s", f"CIVITAI_API_URL={server.api_url}",
                                   "-s", f"IMAGES_STORE={store}", "-s", "CIVITAI_PROGRESS=off", "-s", "LOG_LEVEL=INFO",
                                   "-s", "CIVITAI_RETRY_BACKOFF_BASE=0.05"], cwd=REPO, stdout=out, stderr=out)
    stored = {int(p.stem): p for p in store.iterdir() if p.suffix in (".jpg", ".png", ".webp", ".mp4", ".webm")}
    failures_file = store / "failures.jsonl"
    failed = {r["id"]: r["reason"] for r in map(json.loads, failures_file.read_text().splitlines())} \
        if failures_file.exists() else {}
    bad = [f"{names[i - 1]}: stored as {path.name}: {why}" for i, path in sorted(stored.items()) if (why := problem(path))]
    bad += [f"{name}: neither stored nor recorded" for i, name in enumerate(names, start=1)
            if i not in stored and i not in failed]
    bad += [f"{names[i - 1]}: both stored and recorded" for i in set(stored) & set(failed)]
    print(f"{len(names)} files from {args.folder}: crawl exit status {done.returncode} (log: {log})")
    print(f"stored {len(stored)} {dict(sorted(collections.Counter(p.suffix for p in stored.values()).items()))}")
    print(f"recorded {len(failed)} {dict(sorted(collections.Counter(failed.values()).items()))}")
    for line in bad:
        print("BAD", line)
    print("every file stored as what it is and opening, or recorded with a reason" if not bad else f"{len(bad)} BAD")
    return 1 if bad or done.returncode else 0


if __name__ == "__main__":
    sys.exit(main())
