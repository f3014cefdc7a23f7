"""Done ids: dedup across runs, the original script's file format, and the id set itself."""

from __future__ import annotations

import numpy as np
import pytest_twisted

from civitai_spider.done_ids import IdSet, parse_ids
from tests.support import api_image, image_bytes, run_crawl, scenario

FILES = {"jpeg": image_bytes("JPEG"), "png": image_bytes("PNG")}


def cdn_requests(server):
    return [r for r in server.requests("cdn")]


@pytest_twisted.ensureDeferred
async def test_second_run_downloads_and_writes_nothing(server, tmp_path):
    images = [api_image(i, file="jpeg" if i % 2 else "png") for i in range(1, 251)]
    server.load(scenario(images, FILES))

    first = await run_crawl(server, {"IMAGES_STORE": str(tmp_path)})
    assert len(cdn_requests(server)) == 250
    done = (tmp_path / "downloaded_ids.txt").read_text().split()
    assert sorted(map(int, done)) == list(range(1, 251)) and first.stats["done/recorded"] == 250
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}

    server.load(scenario(images, FILES))
    second = await run_crawl(server, {"IMAGES_STORE": str(tmp_path)})

    assert cdn_requests(server) == []
    assert second.ids == [] and second.stats["done/skipped"] == 250
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


@pytest_twisted.ensureDeferred
async def test_original_script_file_is_honoured(server, tmp_path):
    # The original script wrote ids as text, one per line; junk lines must not break loading.
    (tmp_path / "downloaded_ids.txt").write_text("1\n2\n\n3 \nnot-an-id\n4\n")
    server.load(scenario([api_image(i, file="jpeg") for i in range(1, 7)], FILES))

    result = await run_crawl(server, {"IMAGES_STORE": str(tmp_path)})

    assert sorted(result.ids) == [5, 6]
    assert len(cdn_requests(server)) == 2
    assert result.stats["done/loaded"] == 4 and result.stats["done/unreadable_lines"] == 1
    assert (tmp_path / "downloaded_ids.txt").read_text().split()[-2:] in (["5", "6"], ["6", "5"])


@pytest_twisted.ensureDeferred
async def test_failed_images_are_not_done_and_are_retried_next_run(server, tmp_path):
    images = [api_image(1, file="jpeg"), api_image(2, file="jpeg")]
    server.load(scenario(images, FILES, faults=[
        {"server": "cdn", "match": {"image_id": 2}, "action": "status", "status": 404, "times": 1}]))

    first = await run_crawl(server, {"IMAGES_STORE": str(tmp_path)})
    assert first.ids == [1]
    assert (tmp_path / "downloaded_ids.txt").read_text().split() == ["1"]

    server.load(scenario(images, FILES))
    second = await run_crawl(server, {"IMAGES_STORE": str(tmp_path)})
    assert second.ids == [2]
    assert [r["path"].split("/")[-1] for r in cdn_requests(server)] and len(cdn_requests(server)) == 1


def test_parse_ids_fast_path_and_junk():
    ids, bad = parse_ids([b"10\n20\n3", b"0\n40\n"])
    assert ids.tolist() == [10, 20, 30, 40] and bad == 0
    ids, bad = parse_ids([b"1\nx\n2\n"])
    assert ids.tolist() == [1, 2] and bad == 1


def test_id_set_membership():
    done = IdSet(np.array([5, 3, 9], dtype=np.int64))
    assert 3 in done and 9 in done and 4 not in done and 10 not in done
    done.add(4)
    assert 4 in done and done.loaded_count == 3 and len(done) == 4


def test_id_set_merges_added_ids_into_its_array():
    """Added ids move into the sorted array every ``merge_at`` ids, and every id stays a member."""
    loaded = np.array([10, 30, 50, 70], dtype=np.int64)
    ids = IdSet(loaded, merge_at=3)
    added = [60, 20, 80, 1, 30, 40, 90, 5]  # 30 is loaded already: not added twice
    for image_id in added:
        ids.add(image_id)
    assert ids._sorted.tolist() == [1, 10, 20, 30, 40, 50, 60, 70, 80, 90]  # two merges of 3
    assert ids._added == {5}
    assert len(ids) == 11 and ids.loaded_count == 4
    assert all(image_id in ids for image_id in [*loaded.tolist(), *added])
    assert not any(image_id in ids for image_id in [0, 2, 15, 35, 75, 85, 95])


def test_id_set_memory_stays_small():
    """200,000 added ids cost their 8 bytes each (plus one merge batch), not a Python set's ~60."""
    import tracemalloc

    ids = IdSet(merge_at=1 << 14)
    tracemalloc.start()
    for image_id in range(10**9, 10**9 + 200_000):
        ids.add(image_id)
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    as_python_set = 200_000 * 60
    assert held < 8 * 200_000 + 2 * 2**20 < as_python_set / 3, held
    assert 10**9 + 123_456 in ids and 10**9 + 200_000 not in ids
