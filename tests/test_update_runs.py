"""Update runs (``-a update=true -a sort=Newest``): an archive kept current in a few API requests.

The archive: 1,600 images with ``min_hearts=10`` (half of them qualify), walked once
by a first update run. Then 150 new images on top, and a few posted late: ids the
first run never saw, placed among the old ones by their posting time. Every run is
a real ``scrapy crawl`` against the stand-in.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from civitai_spider.arguments import ArgumentError, parse_arguments
from civitai_spider.spiders.civitai import CivitaiSpider
from tests.support import REPO, api_image, image_bytes, run_crawl, run_scrapy, scenario

FILES = {"jpeg": image_bytes("JPEG")}
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
LATE = (1598, 1590, 1450, 1420)  # ids the first run never saw (indexed late); 1420 has 2 hearts
OLD = [i for i in range(1, 1605) if i not in LATE]  # 1,600 images
NEW = list(range(2001, 2151))  # 150 new images, posted after all the old ones
ARGS = ("-a", "min_hearts=10", "-a", "sort=Newest", "-a", "update=true")


def posted(minutes: float) -> str:
    return (START + timedelta(minutes=minutes)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def hearts(image_id: int) -> int:
    return 2 if image_id == 1420 else 15 if image_id in LATE else image_id % 20


def image(image_id: int, minutes: float) -> dict:
    return api_image(image_id, hearts=hearts(image_id), file="jpeg", createdAt=posted(minutes))


def archive() -> list[dict]:
    return [image(i, i) for i in OLD]


def with_new_images() -> list[dict]:
    # The late ones: posted after their neighbours (+0.5 min) but long before the new ones.
    return [image(i, i - 0.5 + 0.25) for i in LATE] + archive() + [image(i, 10_000 + i) for i in NEW]


def qualifying(ids) -> set[int]:
    return {i for i in ids if hearts(i) >= 10}


def stored(store: Path) -> set[int]:
    return {int(p.stem) for p in store.glob("*.jpg")}


def api_requests(server) -> int:
    return sum(1 for r in server.requests("api") if r["path"].startswith("/api/v1/images"))


def seen_ids(store: Path) -> list[int]:
    files = list((store / "seen").glob("*.ids"))
    assert len(files) <= 1, files
    return [int(x) for x in files[0].read_text().split()] if files else []


def crawl(server, store: Path, *extra: str):
    result = run_scrapy("crawl", "civitai", *ARGS, "-s", f"CIVITAI_API_URL={server.api_url}",
                        "-s", f"IMAGES_STORE={store}", "-s", "CIVITAI_RETRY_BACKOFF_BASE=0.05",
                        "-s", "LOG_LEVEL=INFO", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_an_archive_kept_current_in_at_most_three_requests(server, tmp_path):
    store = tmp_path / "store"
    server.load(scenario(archive(), FILES))
    first = crawl(server, store)
    assert "the first update run of this query walks it all" in first.stderr
    assert api_requests(server) == 8  # 1,600 images, 200 a page: all of it, nothing seen yet
    assert stored(store) == qualifying(OLD)
    assert sorted(seen_ids(store)) == OLD  # every image walked past: stored and dropped alike
    assert "walked to the end of the feed" in first.stderr

    server.load(scenario(with_new_images(), FILES))  # 150 new on top, 4 late among the old
    before = stored(store)
    second = crawl(server, store)
    assert api_requests(server) <= 3
    assert stored(store) - before == qualifying(NEW) | {1598, 1590, 1450}  # exactly those that qualify
    assert stored(store) >= before
    assert re.search(r"caught up after page [23]", second.stderr)
    assert re.search(r"update: [23] pages walked; chains: 1 caught up with earlier update runs; 1600 images seen "
                     r"before, [0-9]+ recorded as seen now", second.stderr)
    seen = seen_ids(store)
    assert set(NEW) | set(LATE) <= set(seen)

    server.load(scenario(with_new_images(), FILES))  # nothing new (and the request log cleared)
    third = crawl(server, store)
    assert api_requests(server) <= 2
    assert stored(store) == before | qualifying(NEW) | {1598, 1590, 1450}
    assert server.requests("cdn") == []
    assert "caught up after page 1" in third.stderr


def test_a_late_image_among_seen_ones_starts_the_count_again(server, tmp_path):
    """Stop after CIVITAI_UPDATE_STOP_AFTER seen ids in a row, not at the first seen one."""
    store = tmp_path / "store"
    settings = ("-s", "CIVITAI_PAGE_LIMIT=50", "-s", "CIVITAI_UPDATE_STOP_AFTER=60")
    server.load(scenario(archive(), FILES))
    crawl(server, store, *settings)
    # One new image, then a late one 100 images down (page 3 of 50): the walk must get there.
    late = [image(1420, 1504.5)]  # hearts 2: seen and dropped, but walked past
    late_good = [image(1450, 1503.5)]  # hearts 15: stored
    server.load(scenario(archive() + late + late_good + [image(2010, 20_000)], FILES))
    crawl(server, store, *settings)
    assert 1450 in stored(store) and 2010 in stored(store)
    # page 1: 2010 + 49 seen; page 2: 1420 and 1450 reset the count; stop once 60 in a row are seen
    assert api_requests(server) == 4


def test_a_normal_run_walks_everything_and_records_nothing(server, tmp_path):
    store = tmp_path / "store"
    server.load(scenario(archive(), FILES))
    crawl(server, store)
    server.load(scenario(with_new_images(), FILES))
    result = run_scrapy("crawl", "civitai", "-a", "min_hearts=10", "-a", "sort=Newest",
                        "-s", f"CIVITAI_API_URL={server.api_url}", "-s", f"IMAGES_STORE={store}", "-s", "LOG_LEVEL=INFO")
    assert result.returncode == 0, result.stderr[-3000:]
    assert api_requests(server) == 9  # 1,754 images: every page, as before update runs existed
    assert sorted(seen_ids(store)) == OLD  # untouched
    assert "update:" not in result.stderr


async def test_other_thresholds_are_another_query(server, tmp_path):
    """An update run with min_hearts=5 must not stop at images a min_hearts=10 run dropped."""
    store = tmp_path / "store"
    server.load(scenario(archive(), FILES))
    settings = {"IMAGES_STORE": str(store), "LOG_LEVEL": "INFO"}
    await run_crawl(server, settings, min_hearts="10", sort="Newest", update="true")
    again = await run_crawl(server, settings, min_hearts="5", sort="Newest", update="true")
    assert again.stats["api/pages"] == 8 and again.stats["update/seen_loaded"] == 0
    assert {i for i in OLD if 5 <= i % 20 < 10} <= set(again.ids)
    assert len(list((store / "seen").glob("*.ids"))) == 2


def test_update_needs_sort_newest():
    with pytest.raises(ArgumentError, match=r"update=true needs sort=Newest .* add -a sort=Newest"):
        parse_arguments({"update": "true", "min_hearts": "10"})
    with pytest.raises(ArgumentError, match=r"update=true needs sort=Newest .*got sort='Most Reactions'"):
        CivitaiSpider.check_arguments({"update": "yes", "sort": "Most Reactions"})
    assert parse_arguments({"update": "true", "sort": "Newest"}).update
    assert not parse_arguments({"sort": "Newest"}).update


def test_update_without_sort_is_a_usage_error_with_exit_status(server, tmp_path):
    result = run_scrapy("crawl", "civitai", "-a", "update=true", "-s", f"CIVITAI_API_URL={server.api_url}",
                        "-s", f"IMAGES_STORE={tmp_path}")
    assert result.returncode != 0
    assert "add -a sort=Newest" in result.stderr
    assert api_requests(server) == 0


async def test_a_run_that_does_not_finish_records_nothing(server, tmp_path):
    """Stopped early (here: by CLOSESPIDER_PAGECOUNT), or a chain that failed: nothing is seen."""
    store = tmp_path / "store"
    server.load(scenario(archive(), FILES))
    stopped = await run_crawl(server, {"IMAGES_STORE": str(store), "CLOSESPIDER_PAGECOUNT": 3},
                              min_hearts="10", sort="Newest", update="true")
    assert stopped.stats["finish_reason"] == "closespider_pagecount"
    assert not (store / "seen").exists() or seen_ids(store) == []
    assert stopped.stats["update/not_recorded"] == "closespider_pagecount"

    faults = [{"server": "api", "match": {"page": 3}, "action": "status", "status": 400, "times": -1}]
    server.load(scenario(archive(), FILES, faults=faults))
    failed = await run_crawl(server, {"IMAGES_STORE": str(store)}, min_hearts="10", sort="Newest", update="true")
    assert failed.stats.get("api/chains/failed/http_400") == 1
    assert seen_ids(store) == []
    assert failed.stats["update/chains_not_recorded"] == 1


async def test_seen_record_in_an_object_store(server, s3, tmp_path):
    store = s3.new_store()
    settings = {**s3.settings, "IMAGES_STORE": store, "LOG_LEVEL": "INFO"}
    server.load(scenario(archive(), FILES))
    first = await run_crawl(server, settings, min_hearts="10", sort="Newest", update="true")
    assert first.stats["update/seen_recorded"] == 1600
    seen_objects = [key for key in s3.objects(store) if key.startswith("seen/")]
    assert len(seen_objects) == 1 and ".ids.d/" in seen_objects[0]  # one segment, written whole

    server.load(scenario(with_new_images(), FILES))
    second = await run_crawl(server, settings, min_hearts="10", sort="Newest", update="true")
    assert second.stats["api/pages"] <= 3 and second.stats["update/seen_loaded"] == 1600
    assert set(second.ids) == qualifying(NEW) | {1598, 1590, 1450}
    assert len([key for key in s3.objects(store) if key.startswith("seen/")]) == 2


# --- kill -9 mid-update, then resume -----------------------------------------------------------

SLOW_CDN = [{"server": "cdn", "match": {}, "action": "stall", "seconds": 0.1, "times": -1}]


def start(server, store: Path, jobdir: Path | None, log: Path) -> subprocess.Popen:
    jobdir_args = ("-s", f"JOBDIR={jobdir}") if jobdir else ()
    return subprocess.Popen(
        [sys.executable, "-m", "scrapy", "crawl", "civitai", *ARGS, "-s", f"CIVITAI_API_URL={server.api_url}",
         "-s", f"IMAGES_STORE={store}", "-s", "CIVITAI_PAGE_LIMIT=50", "-s", "LOG_LEVEL=INFO",
         "-s", "CIVITAI_RETRY_BACKOFF_BASE=0.05", "-s", "CIVITAI_IMAGES_IN_FLIGHT=4", *jobdir_args],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=log.open("ab"), start_new_session=True,
    )


def done_count(store: Path) -> int:
    path = store / "downloaded_ids.txt"
    return len(path.read_text().split()) if path.exists() else 0


@pytest.mark.parametrize("jobdir", [True, False], ids=["jobdir-resume", "plain-rerun"])
def test_kill_9_mid_update_then_resume_stores_every_new_image(server, tmp_path, jobdir):
    store, log = tmp_path / "store", tmp_path / "crawl.log"
    server.load(scenario(archive(), FILES))
    crawl(server, store, "-s", "CIVITAI_PAGE_LIMIT=50")
    archived, seen_before = done_count(store), sorted(seen_ids(store))
    want = qualifying(NEW) | {1598, 1590, 1450}

    server.load(scenario(with_new_images(), FILES, faults=SLOW_CDN))
    process = start(server, store, tmp_path / "job" if jobdir else None, log)
    deadline = time.monotonic() + 60
    while done_count(store) < archived + 20:
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert sorted(seen_ids(store)) == seen_before  # a killed run marks nothing seen
    assert 0 < len(stored(store) & want) < len(want)

    server.load(scenario(with_new_images(), FILES))
    resumed = start(server, store, tmp_path / "job" if jobdir else None, log)
    assert resumed.wait(120) == 0, log.read_text()[-3000:]
    assert ("Chain all: resuming at page" in log.read_text()) == jobdir
    assert want <= stored(store)
    assert stored(store) == qualifying(OLD) | want
    assert set(NEW) <= set(seen_ids(store))

    # The next day, the same command (with the same JOBDIR: its last run finished, so this one
    # walks from the newest again): one more image, and a short walk.
    jobdir_args = ("-s", f"JOBDIR={tmp_path / 'job'}") if jobdir else ()
    server.load(scenario([*with_new_images(), image(3010, 30_000)], FILES))
    after = crawl(server, store, "-s", "CIVITAI_PAGE_LIMIT=50", *jobdir_args)
    assert "caught up after page" in after.stderr
    assert stored(store) == qualifying(OLD) | want | {3010}
    assert ("walking from the newest again" in after.stderr) == jobdir
    server.load(scenario([*with_new_images(), image(3010, 30_000)], FILES))
    crawl(server, store, "-s", "CIVITAI_PAGE_LIMIT=50", *jobdir_args)
    assert api_requests(server) == 4  # 200 seen in a row: 4 pages of 50
    assert server.requests("cdn") == []


# --- a shared crawl: workers share the seen record ---------------------------------------------


def shared_update(server, redis_server, store: Path, crawl_name: str, log: Path) -> None:
    """Two workers on one update crawl through Redis, both exit 0."""
    argv = [sys.executable, "-m", "scrapy", "crawl", "civitai", *ARGS, "-s", f"CIVITAI_API_URL={server.api_url}",
            "-s", f"IMAGES_STORE={store}", "-s", f"CIVITAI_REDIS_URL={redis_server.url}",
            "-s", f"CIVITAI_REDIS_CRAWL={crawl_name}", "-s", "CIVITAI_REDIS_START=auto",
            "-s", "CIVITAI_REDIS_WORKER_TIMEOUT=1.5", "-s", "CIVITAI_REDIS_POLL_INTERVAL=0.1",
            "-s", "CIVITAI_PAGE_LIMIT=100", "-s", "CIVITAI_UPDATE_STOP_AFTER=200", "-s", "LOG_LEVEL=INFO",
            "-s", "CIVITAI_RETRY_BACKOFF_BASE=0.05"]
    workers = [subprocess.Popen([*argv, "-s", f"CIVITAI_REDIS_WORKER=w{n}"], cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=log.open("ab")) for n in (1, 2)]
    for worker in workers:
        assert worker.wait(120) == 0, log.read_text()[-4000:]


def test_workers_of_a_shared_crawl_share_the_seen_record(server, redis_server, tmp_path):
    store, log = tmp_path / "store", tmp_path / "workers.log"
    server.load(scenario(archive(), FILES))
    name = f"u{os.getpid()}x{time.monotonic_ns()}"  # the same crawl name every day: auto starts it anew
    shared_update(server, redis_server, store, name, log)
    assert api_requests(server) == 16  # 1,600 images, 100 a page: the first update run walks it all
    assert stored(store) == qualifying(OLD)
    assert sorted(seen_ids(store)) == OLD  # both workers' pages, each written once

    server.load(scenario(with_new_images(), FILES))
    shared_update(server, redis_server, store, name, log)
    # 100 a page: 150 new, then 1598 and 1590 late on page 2, 1450 late on page 4 (4 ids in);
    # 200 seen in a row after it take pages 5 and 6
    assert api_requests(server) == 6
    assert stored(store) == qualifying(OLD) | qualifying(NEW) | {1598, 1590, 1450}
    assert set(NEW) | set(LATE) <= set(seen_ids(store))
