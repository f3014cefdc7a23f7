"""Storage: real crawls into a local S3 (moto_server) and into folders that fail or fill up,
the segment and file records, atomic writes, and which IMAGES_STORE can be used."""

from __future__ import annotations

import io
import json
import re
import subprocess

import pytest
import pytest_twisted
from PIL import Image
from scrapy.utils.asyncio import sleep
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from civitai_spider.done_ids import parse_ids
from civitai_spider.storage import LocalStorage, ObjectStorage
from civitai_spider.storage.records import FileRecord, S3Objects, SegmentRecord
from tests.support import api_image, image_bytes, project_settings, run_crawl, scenario

FILES = {"jpeg": image_bytes("JPEG"), "png": image_bytes("PNG")}
SEGMENT = re.compile(r"^(?P<name>[^/]+)\.d/(?P<run>\d{8}T\d{6}Z-[0-9a-f]{6})-(?P<seq>\d{6})$")


def segments(objects, name):
    """(run token, seq, body) of each segment of record ``name``, in key order."""
    found = []
    for key in sorted(objects):
        match = SEGMENT.match(key)
        if match and match["name"] == name:
            found.append((match["run"], int(match["seq"]), objects[key]["body"]))
    return found


def record_lines(objects, name):
    return [line for _, _, body in segments(objects, name) for line in body.decode().splitlines()]


def crawler_with(**settings):
    """A crawler with the project's settings (and these on top), for a storage built outside a crawl."""
    return get_crawler(settings_dict=project_settings(**settings))


def s3_record(s3, store, name="record.txt", **settings) -> SegmentRecord:
    return ObjectStorage(crawler_with(**s3.settings, **settings), store).record(name)


# --- crawls into s3:// ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_s3_store_gets_images_metadata_and_done_ids_and_a_second_run_downloads_nothing(server, s3):
    store = s3.new_store()
    images = [api_image(i, file="jpeg" if i % 2 else "png", prompt=f"prompt {i}") for i in range(1, 6)]
    settings = {"IMAGES_STORE": store, "CIVITAI_RECORD_FLUSH_LINES": 2, **s3.settings}
    server.load(scenario(images, FILES))

    first = await run_crawl(server, settings)

    assert sorted(first.ids) == [1, 2, 3, 4, 5] and first.stats["done/recorded"] == 5
    objects = s3.objects(store)
    assert objects["1.jpg"]["body"] == FILES["jpeg"] and objects["1.jpg"]["type"] == "image/jpeg"
    assert objects["2.png"]["body"] == FILES["png"] and objects["2.png"]["type"] == "image/png"
    assert objects["1_pos-prompt.txt"]["body"] == b"prompt 1"
    assert objects["1_pos-prompt.txt"]["type"] == "text/plain; charset=utf-8"
    assert json.loads(objects["2_meta.json"]["body"]) == images[1]["meta"]
    assert objects["2_meta.json"]["type"] == "application/json"
    # Done ids: segments of 2, 2 and (at close) 1 id, all of one run.
    written = segments(objects, "downloaded_ids.txt")
    assert [seq for _, seq, _ in written] == [1, 2, 3] and len({run for run, _, _ in written}) == 1
    assert sorted(map(int, record_lines(objects, "downloaded_ids.txt"))) == [1, 2, 3, 4, 5]
    assert "downloaded_ids.txt" not in objects and "failures.jsonl" not in objects
    assert first.stats["records/downloaded_ids.txt/segments_written"] == 3

    server.load(scenario(images, FILES))
    second = await run_crawl(server, settings)

    assert server.requests("cdn") == []
    assert second.ids == [] and second.stats["done/loaded"] == 5 and second.stats["done/skipped"] == 5
    assert s3.objects(store) == objects  # not one object written or rewritten


@pytest_twisted.ensureDeferred
async def test_s3_plain_done_ids_object_uploaded_by_hand_is_honoured(server, s3):
    store = s3.new_store()
    s3.put(store, "downloaded_ids.txt", b"1\n2\n")
    server.load(scenario([api_image(i, file="jpeg") for i in range(1, 5)], FILES))

    result = await run_crawl(server, {"IMAGES_STORE": store, **s3.settings})

    assert sorted(result.ids) == [3, 4] and result.stats["done/loaded"] == 2
    assert len(server.requests("cdn")) == 2
    objects = s3.objects(store)
    assert "1.jpg" not in objects and "3.jpg" in objects
    assert objects["downloaded_ids.txt"]["body"] == b"1\n2\n"  # left as it was
    assert sorted(record_lines(objects, "downloaded_ids.txt")) == ["3", "4"]


@pytest_twisted.ensureDeferred
async def test_s3_failures_land_as_segments(server, s3):
    store = s3.new_store()
    # 2 and 3 have no file: the stand-in's CDN answers 404.
    server.load(scenario([api_image(1, file="jpeg"), api_image(2), api_image(3)], FILES))

    result = await run_crawl(server, {"IMAGES_STORE": store, **s3.settings})

    assert result.ids == [1] and result.stats["images/failed/http_404"] == 2
    objects = s3.objects(store)
    written = segments(objects, "failures.jsonl")
    assert len(written) == 1 and objects[f"failures.jsonl.d/{written[0][0]}-000001"]["type"].startswith("text/plain")
    failures = {r["id"]: r for r in map(json.loads, record_lines(objects, "failures.jsonl"))}
    assert sorted(failures) == [2, 3]
    assert {r["reason"] for r in failures.values()} == {"http_404"}
    assert all(r["url"].startswith(server.cdn_root) and r["time"].endswith("+00:00") for r in failures.values())
    assert record_lines(objects, "downloaded_ids.txt") == ["1"]


# --- the segment record against the S3 server --------------------------------------------
# (deferred_f_from_coro_f: these tests await asyncio futures directly, as Scrapy code does.)


@deferred_f_from_coro_f
async def test_segments_are_written_by_line_count_then_at_close(s3):
    store = s3.new_store()
    record = s3_record(s3, store, CIVITAI_RECORD_FLUSH_LINES=3, CIVITAI_RECORD_FLUSH_SECONDS=0)

    for line in "abcdefg":
        record.append(line)
    await record.wait_uploads()

    assert [(seq, body) for _, seq, body in segments(s3.objects(store), "record.txt")] == [
        (1, b"a\nb\nc\n"), (2, b"d\ne\nf\n")]
    await record.close()
    written = segments(s3.objects(store), "record.txt")
    assert [(seq, body) for _, seq, body in written] == [(1, b"a\nb\nc\n"), (2, b"d\ne\nf\n"), (3, b"g\n")]
    assert written[0][0] == record.run_token


@deferred_f_from_coro_f
async def test_waiting_lines_are_written_at_close(s3):
    store = s3.new_store()
    record = s3_record(s3, store)

    record.append("1")
    record.append("2")
    await record.wait_uploads()
    assert s3.objects(store) == {}  # under 500 lines and 30 s: still waiting

    await record.close()
    assert [body for _, _, body in segments(s3.objects(store), "record.txt")] == [b"1\n2\n"]


@deferred_f_from_coro_f
async def test_waiting_lines_are_written_after_flush_seconds(s3):
    store = s3.new_store()
    record = s3_record(s3, store, CIVITAI_RECORD_FLUSH_SECONDS=0.2)

    record.append("1")
    await sleep(0.6)  # no append, no close: the timer writes it
    await record.wait_uploads()
    assert [body for _, _, body in segments(s3.objects(store), "record.txt")] == [b"1\n"]

    await record.close()
    assert len(s3.objects(store)) == 1


@deferred_f_from_coro_f
async def test_read_back_is_the_plain_object_then_segments_in_key_order(s3):
    store = s3.new_store()
    s3.put(store, "ids.txt", b"1\n2")  # uploaded by hand, no final newline
    s3.put(store, "ids.txt.bak", b"99\n")  # not part of the record
    target = ObjectStorage(crawler_with(**s3.settings), store).files
    later = SegmentRecord(target, S3Objects(target), "ids.txt", flush_lines=1, run_token="20270101T000000Z-000000")
    earlier = SegmentRecord(target, S3Objects(target), "ids.txt", flush_lines=1, run_token="20260101T000000Z-ffffff")
    for number in range(3, 23):  # 20 one-line segments: more than are fetched at once
        earlier.append(str(number))
    await earlier.close()
    later.append("23")  # written last, sorts last by its run token
    await later.close()

    reader = s3_record(s3, store, "ids.txt")
    chunks = list(reader.read_chunks())
    assert b"".join(chunks) == b"".join(b"%d\n" % n for n in range(1, 24))
    assert reader.read_lines() == [str(n) for n in range(1, 24)]
    ids, bad = parse_ids(chunks)
    assert ids.tolist() == list(range(1, 24)) and bad == 0


@deferred_f_from_coro_f
async def test_empty_store(s3):
    store = s3.new_store()
    record = s3_record(s3, store)

    assert list(record.read_chunks()) == [] and record.read_lines() == []
    ids, bad = parse_ids(record.read_chunks())
    assert len(ids) == 0 and bad == 0
    await record.close()
    assert s3.objects(store) == {}


@deferred_f_from_coro_f
async def test_failed_uploads_are_retried_then_counted_as_lost(s3):
    crawler = crawler_with(**s3.settings, CIVITAI_RECORD_FLUSH_LINES=1)
    stats = crawler.stats
    record = ObjectStorage(crawler, "s3://no-such-bucket/x/").record("record.txt")

    record.append("1")  # written at once (1 line), fails, kept
    await record.wait_uploads()
    record.append("2")  # held back: the last upload failed under 10 s ago
    await record.wait_uploads()
    assert stats.get_value("records/record.txt/upload_errors") == 1

    await record.close()  # does not raise: 3 more tries, then the lines are counted as lost
    assert stats.get_value("records/record.txt/upload_errors") == 4
    assert stats.get_value("records/record.txt/lines_lost") == 2


# --- the file record ---------------------------------------------------------------------


@deferred_f_from_coro_f
async def test_file_record_appends_after_a_file_without_final_newline(tmp_path):
    (tmp_path / "downloaded_ids.txt").write_text("1\n2")
    record = LocalStorage(crawler_with(), str(tmp_path)).record("downloaded_ids.txt")
    assert isinstance(record, FileRecord)

    assert record.read_lines() == ["1", "2"]
    record.append("3")
    assert (tmp_path / "downloaded_ids.txt").read_text() == "1\n2\n3\n"  # flushed at once
    await record.close()
    assert parse_ids(record.read_chunks())[0].tolist() == [1, 2, 3]


# --- a store that cannot be written, or that fills up -------------------------------------------


def test_a_store_that_cannot_be_written_stops_the_crawl_with_a_clear_error(server, tmp_path):
    from tests.support import run_scrapy

    server.load(scenario([api_image(1, file="jpeg")], {"jpeg": image_bytes("JPEG")}))
    (tmp_path / "a-file").write_text("not a folder")

    done = run_scrapy("crawl", "civitai", "-s", f"CIVITAI_API_URL={server.api_url}",
                      "-s", f"IMAGES_STORE={tmp_path / 'a-file' / 'store'}")

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "Cannot use the store IMAGES_STORE=" in done.stderr and "Not a directory" in done.stderr
    assert "FAILED: the store (IMAGES_STORE) cannot be written (store_unwritable)" in done.stderr
    assert server.requests() == []  # stopped before walking


@pytest.mark.parametrize(("uri", "problem"), [
    ("civitai-images", None), ("/data/civitai", None), ("file:///data/civitai", None), ("s3://bucket/p/", None),
    ("ftp://host/p", "IMAGES_STORE='ftp://host/p' is not a store this project can write: use a path, file://, s3:// or gs://"),
    ("http://host/p", "IMAGES_STORE='http://host/p' is not a store this project can write"),
    ("", "IMAGES_STORE is empty: give a path, file://, s3:// or gs://"),
])
def test_store_problem(uri, problem):
    from civitai_spider.storage import storage_problem

    found = storage_problem(uri)
    assert found == problem if problem is None else found.startswith(problem)


def test_gs_without_its_package_names_what_to_install(monkeypatch):
    import importlib.util

    from civitai_spider.storage import storage_problem

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("google") else real(name, *a))
    assert storage_problem("gs://bucket/p/") == ("IMAGES_STORE='gs://bucket/p/' needs the google-cloud-storage package, "
                                               "which is not installed: pip install google-cloud-storage")


@pytest.mark.parametrize("uri", ["ftp://host/path", "gs://bucket/prefix/"])
def test_a_store_uri_that_cannot_be_used_is_a_usage_error(server, uri):
    import importlib.util

    from tests.support import run_scrapy

    if uri.startswith("gs") and importlib.util.find_spec("google") and importlib.util.find_spec("google.cloud.storage"):
        pytest.skip("google-cloud-storage is installed here: gs:// can be used")
    done = run_scrapy("crawl", "civitai", "-s", f"CIVITAI_API_URL={server.api_url}", "-s", f"IMAGES_STORE={uri}")

    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"IMAGES_STORE={uri!r}" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert server.requests() == []


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KB tmpfs: a real disk that fills up (ENOSPC), enlarged later with a remount."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)]).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)])


@pytest_twisted.ensureDeferred
async def test_a_full_disk_fails_items_stops_the_crawl_and_the_next_run_completes(server, small_disk):
    noise = io.BytesIO()
    Image.effect_noise((96, 96), 90).convert("RGB").save(noise, "JPEG", quality=95)
    images = [api_image(i, file="big") for i in range(1, 61)]  # ~10 KB each: 60 do not fit in 256 KB
    server.load(scenario(images, {"big": noise.getvalue()}))
    store = small_disk / "store"

    first = await run_crawl(server, {"IMAGES_STORE": str(store), "CIVITAI_IMAGES_IN_FLIGHT": 4})

    assert first.stats["finish_reason"] == "store_failing"
    assert first.stats["store/errors"] >= 5
    stored = {int(p.stem) for p in store.glob("*.jpg")}
    assert stored and len(stored) < 60
    for image_id in stored:  # what was stored is whole
        assert (store / f"{image_id}.jpg").read_bytes() == noise.getvalue()
    recorded = [int(x) for x in (store / "downloaded_ids.txt").read_text().split()]
    assert set(recorded) <= stored  # nothing recorded as done that is not stored (with its metadata)
    for image_id in recorded:
        assert (store / f"{image_id}_meta.json").exists()
    assert not list(store.rglob("*.part"))

    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    server.load(scenario(images, {"big": noise.getvalue()}))
    second = await run_crawl(server, {"IMAGES_STORE": str(store)})

    assert second.stats["finish_reason"] == "finished"
    assert {int(p.stem) for p in store.glob("*.jpg")} == set(range(1, 61))
    assert sorted(int(x) for x in (store / "downloaded_ids.txt").read_text().split()) == list(range(1, 61))
    fetched_again = len(server.requests("cdn"))
    assert fetched_again == 60 - len(recorded)  # done ids are not fetched again


def test_partial_files_of_a_dead_writer_are_removed_and_a_shared_folder_keeps_live_ones(tmp_path):
    import os
    import time

    from civitai_spider.storage.atomic import remove_partial_files

    old, fresh, final = tmp_path / ".12.jpg.a1.part", tmp_path / ".13.jpg.b2.part", tmp_path / "12.jpg"
    for path in (old, fresh, final):
        path.write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    # a shared crawl: another worker may be writing fresh ones right now
    assert remove_partial_files(tmp_path, older_than=3600) == 1
    assert not old.exists() and fresh.exists() and final.exists()
    # one process: every partial file is a leftover
    assert remove_partial_files(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["12.jpg"]


def test_a_partial_file_renamed_by_its_writer_mid_cleanup_is_skipped(tmp_path, monkeypatch):
    """Two workers of a shared crawl starting at once: one's write probe (a ``.part`` file)
    is renamed into place between the other's directory listing and its ``stat``."""
    import os

    from civitai_spider.storage import atomic

    probe = tmp_path / "..civitai-spider-write-test.5d9574000.part"
    probe.write_bytes(b"ok\n")
    listdir = os.scandir

    def listed_then_renamed(folder):
        entries = list(listdir(folder))
        if probe.exists():
            probe.rename(tmp_path / ".civitai-spider-write-test")
        return iter(entries)

    monkeypatch.setattr(atomic.os, "scandir", listed_then_renamed)
    assert atomic.remove_partial_files(tmp_path, older_than=3600) == 0
    probe.write_bytes(b"ok\n")
    assert atomic.remove_partial_files(tmp_path) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".civitai-spider-write-test"]


def test_local_store_writes_a_batch_atomically_in_order(tmp_path):
    from civitai_spider.storage.atomic import AtomicWriter

    store = AtomicWriter(str(tmp_path / "store"))
    (tmp_path / "store").mkdir(exist_ok=True)
    (tmp_path / "store" / "7.jpg").write_bytes(b"old")
    big = bytes(range(256)) * 8192  # 2 MB: more than one write() may take
    store.write_files([("7.jpg", big), ("7_meta.json", b"{}"), ("thumbs/small/7.jpg", b"t")])

    root = tmp_path / "store"
    assert (root / "7.jpg").read_bytes() == big  # replaced
    assert (root / "7_meta.json").read_bytes() == b"{}"
    assert (root / "thumbs" / "small" / "7.jpg").read_bytes() == b"t"  # folders made as needed
    assert not list(root.rglob("*.part"))


def test_local_store_batch_stops_at_the_first_failure_and_leaves_nothing_partial(tmp_path):
    from civitai_spider.storage.atomic import AtomicWriter

    root = tmp_path / "store"
    root.mkdir()
    (root / "blocker").write_bytes(b"a file where a folder is needed")
    store = AtomicWriter(str(root))
    with pytest.raises(OSError):
        store.write_files([("1.jpg", b"image"), ("blocker/1_meta.json", b"{}"), ("1_pos-prompt.txt", b"p")])
    assert (root / "1.jpg").read_bytes() == b"image"
    assert not (root / "1_pos-prompt.txt").exists()
    assert not list(root.rglob("*.part"))


def test_partial_file_names_are_unique_per_store_and_per_write(tmp_path, monkeypatch):
    import os

    from civitai_spider.storage import atomic

    temps = []
    real_replace = os.replace

    def spy(src, dst):
        temps.append(os.path.basename(src))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", spy)
    one, two = atomic.AtomicWriter(str(tmp_path)), atomic.AtomicWriter(str(tmp_path))
    for store in (one, two, one):
        store.write_files([("5.jpg", b"x")])
    assert len(set(temps)) == 3
    assert all(name.startswith(".5.jpg.") and name.endswith(".part") for name in temps)
