"""A harvest that meets every failure there is: faults on 20% of API pages and 5% of images.

Seeded, so a failure can be replayed. Marked slow; CI runs it.
"""

from __future__ import annotations

import json
import random

import pytest
import pytest_twisted

from tests.support import api_image, image_bytes, run_crawl, scenario

FILES = {"jpeg": image_bytes("JPEG"), "png": image_bytes("PNG")}


def random_fault(rng: random.Random, server: str, match: dict, times: int) -> dict:
    kind = rng.choice(["503", "429", "drop", "stall", "truncate"] if server == "cdn" else
                      ["503", "429", "drop", "stall", "html"])
    fault = {"server": server, "match": match, "times": times}
    if kind == "503":
        return {**fault, "action": "status", "status": 503, "headers": {"Retry-After": "1"}, "body": "Server busy"}
    if kind == "429":
        return {**fault, "action": "status", "status": 429}
    if kind == "stall":
        return {**fault, "action": "stall", "seconds": 2.5}  # past DOWNLOAD_TIMEOUT=1
    return {**fault, "action": kind}


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_faults_everywhere_and_the_set_is_still_exact(server, tmp_path):
    rng = random.Random(20261121)
    images = [api_image(i, hearts=i % 5, file="jpeg" if i % 4 else "png") for i in range(1, 1001)]
    expected = {i for i in range(1, 1001) if i % 5 >= 1}  # min_hearts=1
    pages = 1000 // 50
    faults = [random_fault(rng, "api", {"page": p}, rng.choice([1, 2])) for p in rng.sample(range(1, pages + 1), pages // 5)]
    flaky = rng.sample(sorted(expected), 40)
    broken = set(flaky[:6])  # these keep failing past every retry
    faults += [random_fault(rng, "cdn", {"image_id": i}, -1 if i in broken else rng.choice([1, 2])) for i in flaky]
    store = tmp_path / "store"
    # Every page walked: sorted by reactions, the last 4 pages (hearts 0) would otherwise be skipped by early stop.
    settings = {"IMAGES_STORE": str(store), "CIVITAI_PAGE_LIMIT": 50, "DOWNLOAD_TIMEOUT": 1, "RETRY_TIMES": 3,
                "CIVITAI_RETRY_BACKOFF_MAX": 2, "CIVITAI_EARLY_STOP": False}
    server.load(scenario(images, FILES, faults=faults))

    first = await run_crawl(server, settings, min_hearts="1")

    assert first.stats["finish_reason"] == "finished"
    assert first.stats["api/chains/completed"] == 1
    assert set(first.ids) == expected - broken  # every image that could be had, each once
    assert len(first.ids) == len(set(first.ids))
    failed = {r["id"]: r["reason"] for r in map(json.loads, (store / "failures.jsonl").read_text().splitlines())}
    assert set(failed) == broken
    done = [int(x) for x in (store / "downloaded_ids.txt").read_text().split()]
    assert sorted(done) == sorted(expected - broken)
    assert not list(store.rglob("*.part"))
    fired = [r["fault"] for r in server.requests() if r.get("fault")]
    assert fired.count("drop") and fired.count("stall") and fired.count("truncate") and fired.count("status")
    assert len([f for f in fired]) >= 40 and first.stats["retry/count"] >= 30

    server.load(scenario(images, FILES))  # the faults are gone: the next run completes the set
    second = await run_crawl(server, settings, min_hearts="1")

    assert set(second.ids) == broken
    assert len(server.requests("cdn")) == len(broken)  # no done id fetched again
    assert sorted(int(x) for x in (store / "downloaded_ids.txt").read_text().split()) == sorted(expected)
