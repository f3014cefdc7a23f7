"""Store processes: real crawls whose images are checked and written by child processes."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys

import pytest_twisted
from scrapy import signals

from scrapy.utils.test import get_crawler

from civitai_spider.spiders.civitai import CivitaiSpider
from civitai_spider.storage import ProcessStorage, Storage
from tests.support import CrawlResult, api_image, base_settings, image_bytes, run_crawl, scenario


def failures(store):
    path = store / "failures.jsonl"
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())} if path.exists() else {}


def stored_ids(store):
    return sorted(int(p.stem) for p in store.iterdir() if p.suffix in (".jpg", ".png"))


@pytest_twisted.ensureDeferred
async def test_images_and_metadata_are_written_by_store_processes(server, tmp_path, caplog):
    store = tmp_path / "images"
    files = {"jpeg": image_bytes("JPEG"), "gif": image_bytes("GIF", "P")}
    server.load(scenario([api_image(i, file="jpeg" if i % 2 else "gif") for i in range(1, 41)], files))

    result = await run_crawl(server, {"IMAGES_STORE": str(store), "CIVITAI_STORE_PROCESSES": 2})

    assert sorted(result.ids) == list(range(1, 41))
    assert stored_ids(store) == list(range(1, 41))
    assert (store / "1.jpg").read_bytes() == files["jpeg"]
    assert json.loads((store / "2_meta.json").read_text())["seed"] == 2
    assert result.stats["store_processes/started"] == 2
    assert result.stats["store_processes/jobs"] == 80  # an image and its metadata files, each
    assert "store_processes/died" not in result.stats
    # The images' bytes went through the memory shared with the store processes.
    assert result.stats["store_processes/images_via_memory"] == 40
    assert not [p for p in store.iterdir() if p.name.endswith(".part")]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "store" in r.name] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def crawl_killing_store_processes(server, store, kill_at: set[int]) -> tuple[CrawlResult, list[int]]:
    """A crawl in which the store processes are SIGKILLed as the given items are scraped."""
    crawler = get_crawler(CivitaiSpider, base_settings(server, IMAGES_STORE=str(store), CIVITAI_STORE_PROCESSES=2))
    result = CrawlResult()
    killed: list[int] = []

    def on_item_scraped(item):
        result.on_item_scraped(item)
        if len(result.items) in kill_at:
            storage = crawler.get_extension(Storage)
            assert isinstance(storage, ProcessStorage)
            for child in storage.pool.children:
                os.kill(child.proc.pid, signal.SIGKILL)
                killed.append(child.proc.pid)

    crawler.signals.connect(on_item_scraped, signals.item_scraped)
    await crawler.crawl()
    result.stats = crawler.stats.get_stats()
    return result, killed


@pytest_twisted.ensureDeferred
async def test_store_processes_killed_mid_crawl_lose_nothing(server, tmp_path):
    store = tmp_path / "images"
    files = {"jpeg": image_bytes("JPEG", size=(256, 256))}
    server.load(scenario([api_image(i, file="jpeg") for i in range(1, 301)], files))

    result, killed = await crawl_killing_store_processes(server, store, kill_at={20, 150})

    assert len(killed) == 4
    assert result.stats["store_processes/died"] == 4
    assert result.stats["store_processes/started"] == 6  # two, and one in place of each killed
    assert sorted(result.ids) == list(range(1, 301))  # every image stored, none failed
    assert stored_ids(store) == list(range(1, 301))
    assert all((store / f"{i}_meta.json").exists() for i in range(1, 301))
    assert failures(store) == {}
    assert result.stats.get("images/failed") is None


@pytest_twisted.ensureDeferred
async def test_an_image_that_outlasts_the_timeout_twice_fails_alone(server, tmp_path, caplog):
    store = tmp_path / "images"
    # 9400x9400 (under the bomb limit): 0.6 MB of GIF that takes 0.33 s to convert to JPEG here
    # (in one process, nothing else running); the timeout kills it within 0.15 s (checked every
    # 0.05 s). A small JPEG or its metadata takes a few milliseconds.
    files = {"jpeg": image_bytes("JPEG"), "slow": image_bytes("GIF", "P", size=(9400, 9400))}
    server.load(scenario([api_image(i, file="slow" if i == 7 else "jpeg") for i in range(1, 31)], files))

    result = await run_crawl(server, {"IMAGES_STORE": str(store), "CIVITAI_STORE_PROCESSES": 1,
                                      "CIVITAI_STORE_PROCESS_TIMEOUT": 0.1})

    store_stats = {k: v for k, v in result.stats.items() if k.startswith(("store_processes/", "images/"))}
    assert sorted(result.ids) == [i for i in range(1, 31) if i != 7], store_stats
    assert failures(store)[7]["reason"] == "store_process_died"
    assert "died twice" in failures(store)[7]["detail"]
    assert result.stats["store_processes/died"] == 2
    assert any("CIVITAI_STORE_PROCESS_TIMEOUT=0.1" in r.getMessage() for r in caplog.records)


@pytest_twisted.ensureDeferred
async def test_no_store_process_starts_so_threads_do_the_work(server, tmp_path, caplog, monkeypatch):
    store = tmp_path / "images"
    files = {"jpeg": image_bytes("JPEG"), "gif": image_bytes("GIF", "P")}
    server.load(scenario([api_image(i, file="jpeg" if i % 2 else "gif") for i in range(1, 21)], files))
    monkeypatch.setattr(sys, "executable", "/bin/false")  # an interpreter that cannot run anything

    result = await run_crawl(server, {"IMAGES_STORE": str(store), "CIVITAI_STORE_PROCESSES": 2})

    assert sorted(result.ids) == list(range(1, 21))
    assert stored_ids(store) == list(range(1, 21))
    assert "store_processes/started" not in result.stats
    assert any("No store process could be started" in r.getMessage() for r in caplog.records)


def test_a_store_process_imports_neither_scrapy_nor_twisted():
    """What a store process imports is paid at every start (once per store process per crawl):
    Pillow and our imaging code, not Scrapy, which the storage package's other modules import."""
    import subprocess

    from tests.support import REPO

    code = ("import sys, civitai_spider.storage.worker; "
            "print(sorted(m for m in ('scrapy', 'twisted', 'botocore', 'redis') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
