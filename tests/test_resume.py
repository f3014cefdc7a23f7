"""Pause and resume with JOBDIR: Ctrl-C and SIGKILL at several points, then the same command again.

Each run is a real ``scrapy crawl`` process against the stand-in, as a user runs it.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.mockserver import image_uuid
from tests.support import REPO, api_image, image_bytes, scenario

FILES = {"jpeg": image_bytes("JPEG"), "png": image_bytes("PNG")}
IMAGES = [api_image(i, hearts=i % 10, file="jpeg" if i % 3 else "png") for i in range(1, 601)]
EXPECTED = {i for i in range(1, 601) if i % 10 >= 5}  # min_hearts=5
ID_BY_UUID = {image_uuid(i): i for i in range(1, 601)}
SLOW_CDN = [{"server": "cdn", "match": {}, "action": "stall", "seconds": 0.15, "times": -1}]


def start_crawl(server, store: Path, jobdir: Path, log: Path, *extra: str) -> subprocess.Popen:
    # A process group of its own (with its store processes), as a terminal's job is.
    return subprocess.Popen(
        [sys.executable, "-m", "scrapy", "crawl", "civitai", "-a", "min_hearts=5",
         "-s", f"CIVITAI_API_URL={server.api_url}", "-s", f"IMAGES_STORE={store}", "-s", f"JOBDIR={jobdir}",
         "-s", "CIVITAI_PAGE_LIMIT=20", "-s", "LOG_LEVEL=INFO", "-s", "CIVITAI_RETRY_BACKOFF_BASE=0.05", *extra],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=log.open("ab"), start_new_session=True,
    )


def done_ids(store: Path) -> list[int]:
    path = store / "downloaded_ids.txt"
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def wait_for_done(process: subprocess.Popen, store: Path, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(done_ids(store)) < count:
        assert process.poll() is None, "the crawl ended before the kill point"
        assert time.monotonic() < deadline, f"only {len(done_ids(store))} done after {timeout} s"
        time.sleep(0.02)


def fetched_ids(server) -> list[int]:
    return [ID_BY_UUID[r["path"].split("/")[2]] for r in server.requests("cdn") if r["status"] == 200]


def assert_final_files_whole(store: Path) -> None:
    """Right after a kill: temp files may be left, but every file under a final name is whole."""
    for path in store.glob("*") if store.exists() else ():
        if path.suffix in (".jpg", ".png"):
            assert path.read_bytes() == FILES["png" if path.suffix == ".png" else "jpeg"], path
        elif path.name.endswith("_meta.json"):
            assert json.loads(path.read_text())["seed"] == int(path.name.split("_")[0])


def check_complete(store: Path) -> None:
    ids = done_ids(store)
    assert sorted(ids) == sorted(EXPECTED)  # each image recorded once, none missing
    images = [p for p in store.iterdir() if p.suffix in (".jpg", ".png")]
    assert sorted(int(p.stem) for p in images) == sorted(EXPECTED)  # each stored once
    for image_id in EXPECTED:
        assert (store / f"{image_id}_pos-prompt.txt").read_text() == "a prompt"
        assert json.loads((store / f"{image_id}_meta.json").read_text())["seed"] == image_id
    assert [p.name for p in store.rglob("*.part")] == []  # nothing partial anywhere


@pytest.mark.slow
def test_sigkill_at_several_points_then_resume(server, tmp_path):
    store, jobdir, log = tmp_path / "store", tmp_path / "job", tmp_path / "crawl.log"
    for kill_at in (15, 90, 200):
        server.load(scenario(IMAGES, FILES, faults=SLOW_CDN))
        before = set(done_ids(store))
        process = start_crawl(server, store, jobdir, log)
        wait_for_done(process, store, kill_at)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not before & set(fetched_ids(server)), "a done id was fetched again"

    server.load(scenario(IMAGES, FILES))
    before = set(done_ids(store))
    process = start_crawl(server, store, jobdir, log)
    assert process.wait(timeout=120) == 0, log.read_text()[-3000:]

    assert not before & set(fetched_ids(server)), "a done id was fetched again"
    check_complete(store)
    # The last run resumed its chain from the state, not from the first page.
    pages = [r for r in server.requests("api") if r["path"] == "/api/v1/images"]
    assert pages and "cursor" in pages[0]["query"], pages[:1]
    assert len(pages) < 600 // 20 + 1


def test_the_state_catches_up_within_the_interval_when_nothing_else_happens(server, tmp_path):
    # Page 1's images come at once, the others hang. Page 1 is finished within the save interval
    # of the start; nothing happens after that, yet the state on disk must move on to page 2 by
    # the end of the interval (it once waited for the next event: a kill -9 then resumed at page 1).
    import pickle

    store, jobdir, log = tmp_path / "store", tmp_path / "job", tmp_path / "crawl.log"
    images = [api_image(i, hearts=10, file="jpeg") for i in range(1, 61)]
    hang = [{"server": "cdn", "match": {"image_id": i}, "action": "stall", "seconds": 60, "times": -1}
            for i in range(21, 61)]
    server.load(scenario(images, FILES, faults=hang))
    process = start_crawl(server, store, jobdir, log, "-s", "CIVITAI_STATE_SAVE_INTERVAL=2")
    try:
        wait_for_done(process, store, 20)

        def saved_page() -> int:
            with open(jobdir / "spider.state", "rb") as state:
                return pickle.load(state)["chains"]["all"]["page"]

        deadline = time.monotonic() + 6
        while saved_page() != 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert saved_page() == 2
    finally:
        process.kill()
        process.wait()


@pytest.mark.slow
def test_ctrl_c_then_resume(server, tmp_path):
    store, jobdir, log = tmp_path / "store", tmp_path / "job", tmp_path / "crawl.log"
    server.load(scenario(IMAGES, FILES, faults=SLOW_CDN))
    process = start_crawl(server, store, jobdir, log)
    wait_for_done(process, store, 60)
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole group gets it
    assert process.wait(timeout=60) == 0
    assert "store process" not in log.read_text()  # they finished their jobs, then ended
    assert "spider.state" in {p.name for p in jobdir.iterdir()}
    paused = set(done_ids(store))

    server.load(scenario(IMAGES, FILES))
    process = start_crawl(server, store, jobdir, log)
    assert process.wait(timeout=120) == 0, log.read_text()[-3000:]

    assert not paused & set(fetched_ids(server))
    check_complete(store)
    # The resume line names the page its cursor is for (20 items a page), and the page the first run reached.
    text = log.read_text()
    resumed = re.search(r"Chain all: resuming at page (\d+)(?:, cursor 'feed:\d+:(\d+)\|[^']*'| \(the first\)); "
                        r"the earlier run reached page (\d+)", text)
    assert resumed, text[-3000:]
    page, offset, reached = int(resumed[1]), resumed[2], int(resumed[3])
    assert (int(offset) // 20 + 1 if offset else 1) == page <= reached
    # Both runs end where the walk does (sorted by hearts: page 16 is the first below min_hearts=5).
    stopped = re.findall(r"Chain all: early stop after page (\d+)", text.split("resuming at page")[1])
    assert stopped == ["16"], stopped
    walked = 16 - page + 1
    assert f"(this process walked {walked}, {min(walked, reached - page + 1)} of them again after the resume)" in text


@pytest.mark.slow
def test_ten_kills_at_random_moments(server, tmp_path):
    rng = random.Random(1121)
    store, jobdir, log = tmp_path / "store", tmp_path / "job", tmp_path / "crawl.log"
    for _ in range(10):
        server.load(scenario(IMAGES, FILES, faults=SLOW_CDN))
        before = set(done_ids(store))
        process = start_crawl(server, store, jobdir, log)
        try:
            process.wait(timeout=rng.uniform(0.8, 3.0))  # start-up takes ~0.7 s: some kills land in it
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
        process.wait()
        assert not before & set(fetched_ids(server)), "a done id was fetched again"
        assert_final_files_whole(store)

    server.load(scenario(IMAGES, FILES))
    before = set(done_ids(store))
    process = start_crawl(server, store, jobdir, log)
    assert process.wait(timeout=120) == 0, log.read_text()[-3000:]
    assert not before & set(fetched_ids(server))
    check_complete(store)


def test_a_scheduler_state_file_cut_short_by_a_kill_does_not_stop_the_resumed_crawl(server, tmp_path):
    """kill -9 while Scrapy writes JOBDIR/requests.queue/active.json at close (it truncates, then
    writes) leaves it empty: the next run of that JOBDIR died at open with a JSONDecodeError.
    Our scheduler keeps no queue in JOBDIR: such a file (from an earlier version) is left alone."""
    server.load(scenario(IMAGES[:100], FILES))
    store, jobdir, log = tmp_path / "store", tmp_path / "job", tmp_path / "crawl.log"
    queue = jobdir / "requests.queue"
    queue.mkdir(parents=True)
    (queue / "active.json").write_bytes(b"")

    process = start_crawl(server, store, jobdir, log)

    assert process.wait(timeout=60) == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()
    assert sorted(done_ids(store)) == sorted(i for i in EXPECTED if i <= 100)
    assert (queue / "active.json").read_bytes() == b""  # not read, not written


def test_a_chain_state_file_cut_short_is_a_warning_and_the_walk_starts_afresh(server, tmp_path):
    """Scrapy's own SpiderState wrote JOBDIR/spider.state at close by truncating it, then pickling:
    a kill between the two left it empty and every later run died at open. Ours writes it whole
    (atomically) and reads a damaged one as no state."""
    server.load(scenario(IMAGES[:100], FILES))
    store, jobdir, log = tmp_path / "store", tmp_path / "job", tmp_path / "crawl.log"
    jobdir.mkdir()
    (jobdir / "spider.state").write_bytes(b"\x80\x04\x95")  # a pickle cut short

    process = start_crawl(server, store, jobdir, log)

    assert process.wait(timeout=60) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "Traceback" not in text
    assert "JOBDIR state " in text and "spider.state unreadable (UnpicklingError" in text
    assert "'chain_state/unreadable': 1" in text
    assert sorted(done_ids(store)) == sorted(i for i in EXPECTED if i <= 100)
    import pickle

    with open(jobdir / "spider.state", "rb") as state:  # written whole since
        assert pickle.load(state)["chains"]["all"]["status"] in ("complete", "early_stop")


def test_a_request_queue_file_cut_short_by_a_kill_does_not_end_the_resumed_crawl(server, tmp_path):
    """kill -9 while Scrapy creates a disk queue file leaves it empty; queuelib then cannot open
    it ("unpack requires a buffer of 4 bytes") and the chain's next page was dropped: the resumed
    crawl ended early, with exit status 0. Our scheduler queue is in memory now; a JOBDIR that
    still has such a file (from before) resumes all the same."""
    from scrapy.pqueues import _path_safe  # how Scrapy names a download slot's queue folder

    server.load(scenario(IMAGES[:100], FILES))
    store, jobdir, log = tmp_path / "store", tmp_path / "job", tmp_path / "crawl.log"
    queue = jobdir / "requests.queue"
    (queue / _path_safe("civitai-api")).mkdir(parents=True)
    (queue / "active.json").write_text(json.dumps({"civitai-api": [0]}))  # the API slot had a queue...
    (queue / _path_safe("civitai-api") / "0").write_bytes(b"")  # ...whose file a kill left empty

    process = start_crawl(server, store, jobdir, log)

    assert process.wait(timeout=60) == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()
    assert sorted(done_ids(store)) == sorted(i for i in EXPECTED if i <= 100)
