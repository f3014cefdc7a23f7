"""The classic harvest script, as people write it: requests + a thread pool + Pillow.

In the style of the script this project re-creates: walk ``/api/v1/images`` page by
page with requests, keep images with ``heartCount >= --min-hearts`` and a prompt,
and for each one, in a ThreadPoolExecutor of 16 workers: download it with
``requests.get``, open it with Pillow, convert to RGB and save it as JPEG quality 95
(``N.jpg``), write ``N_pos-prompt.txt`` and ``N_meta.json``, and append the id to
``downloaded_ids.txt``.

    python bench/threads_script.py --api http://127.0.0.1:PORT/api/v1/images --out DIR [--min-hearts 10]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from PIL import Image

PARAMS = {"limit": 200, "withMeta": "true", "sort": "Most Reactions", "period": "AllTime", "type": "image"}
lock = threading.Lock()


def download(item: dict[str, Any], out: str) -> bool:
    image_id = item["id"]
    try:
        response = requests.get(item["url"], timeout=60)
        response.raise_for_status()
        image = Image.open(io.BytesIO(response.content))
        image = image.convert("RGB")
        image.save(os.path.join(out, f"{image_id}.jpg"), "JPEG", quality=95)
        meta = item["meta"]
        with open(os.path.join(out, f"{image_id}_pos-prompt.txt"), "w", encoding="utf-8") as f:
            f.write(meta["prompt"])
        with open(os.path.join(out, f"{image_id}_meta.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, ensure_ascii=False, indent=2)
        with lock, open(os.path.join(out, "downloaded_ids.txt"), "a") as f:
            f.write(f"{image_id}\n")
        return True
    except Exception as exc:  # noqa: BLE001 - such scripts print and go on
        print(f"failed {image_id}: {exc!r}", file=sys.stderr)
        return False


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--api", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--min-hearts", type=int, default=10)
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    futures = []
    pages = 0
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        cursor = None
        while True:
            params = dict(PARAMS, **({"cursor": cursor} if cursor else {}))
            data = requests.get(args.api, params=params, timeout=60).json()
            pages += 1
            for item in data.get("items") or []:
                hearts = (item.get("stats") or {}).get("heartCount") or 0
                meta = item.get("meta") or {}
                if hearts >= args.min_hearts and meta.get("prompt"):
                    futures.append(pool.submit(download, item, args.out))
            cursor = (data.get("metadata") or {}).get("nextCursor")
            if not cursor:
                break
    ok = sum(f.result() for f in futures)
    print(f"pages {pages}, kept {len(futures)}, stored {ok}, failed {len(futures) - ok}")
    return 0 if ok == len(futures) else 1


if __name__ == "__main__":
    sys.exit(main())
