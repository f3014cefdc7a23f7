"""Downloader middlewares: the API key at download time only, and retry backoff."""

from __future__ import annotations

import pytest
import pytest_twisted

from civitai_spider.middlewares import retry_after_seconds
from tests.support import api_image, image_bytes, run_crawl, scenario

KEY = "0123456789abcdef0123456789abcdef"


def files_containing(root, secret: bytes):
    return [p for p in root.rglob("*") if p.is_file() and secret in p.read_bytes()]


@pytest.mark.parametrize("source", ["setting", "environment"])
@pytest_twisted.ensureDeferred
async def test_key_goes_to_the_api_only_and_is_never_stored_or_logged(server, tmp_path, caplog, monkeypatch, source):
    server.load(scenario(
        [api_image(i, file="jpeg") for i in range(1, 301)],
        {"jpeg": image_bytes("JPEG")},
        faults=[
            {"server": "api", "match": {"page": 2}, "action": "status", "status": 503, "times": 2},
            {"server": "cdn", "match": {"image_id": 7}, "action": "status", "status": 503, "times": 1},
        ],
    ))
    settings = {"IMAGES_STORE": str(tmp_path / "store"), "JOBDIR": str(tmp_path / "job"),
                "FEEDS": {str(tmp_path / "feed.jsonl"): {"format": "jsonlines"}}}
    if source == "setting":
        settings["CIVITAI_API_KEY"] = KEY
    else:
        monkeypatch.setenv("CIVITAI_API_KEY", KEY)

    result = await run_crawl(server, settings)

    assert len(result.ids) == 300
    api = server.requests("api")
    assert len(api) == 4 and all(r["headers"].get("authorization") == f"Bearer {KEY}" for r in api)
    assert all(KEY not in r["raw_query"] for r in api)
    cdn = server.requests("cdn")
    assert len(cdn) == 301 and all("authorization" not in r["headers"] for r in cdn)
    assert KEY not in caplog.text
    assert KEY not in repr(result.stats)
    assert files_containing(tmp_path, KEY.encode()) == []
    assert len(result.scheduled) == 4  # 2 pages + 2 retries of page 2, none with the key
    assert not [r for r in result.scheduled if KEY.encode() in r]
    assert list((tmp_path / "job").iterdir())  # JOBDIR was really used


@pytest_twisted.ensureDeferred
async def test_the_key_goes_on_api_pages_only_when_images_share_the_apis_host(server, tmp_path):
    # A proxy, a mirror or a stand-in: one origin serves the API and the images.
    server.load(scenario([api_image(i, file="jpeg") for i in range(1, 61)], {"jpeg": image_bytes("JPEG")},
                         cdn_on_api=True,
                         faults=[{"server": "cdn", "match": {"image_id": 7}, "action": "status", "status": 503}]))

    result = await run_crawl(server, {"IMAGES_STORE": str(tmp_path), "CIVITAI_API_KEY": KEY, "CIVITAI_PAGE_LIMIT": 20})

    assert len(result.ids) == 60
    on_api_host = server.requests("api")
    pages = [r for r in on_api_host if r["path"] == "/api/v1/images"]
    images = [r for r in on_api_host if r["path"] != "/api/v1/images"]
    assert server.requests("cdn") == [] and len(images) == 61  # every image from the API's host (7 twice)
    assert len(pages) == 3 and all(r["headers"].get("authorization") == f"Bearer {KEY}" for r in pages)
    assert [r for r in images if "authorization" in r["headers"]] == []


@pytest_twisted.ensureDeferred
async def test_no_key_no_header(server, tmp_path, monkeypatch):
    monkeypatch.delenv("CIVITAI_API_KEY", raising=False)
    server.load(scenario([api_image(1)]))

    await run_crawl(server, {"IMAGES_STORE": str(tmp_path)})

    assert "authorization" not in server.requests("api")[0]["headers"]


def test_retry_after_parsing():
    assert retry_after_seconds(b"2") == 2.0
    assert retry_after_seconds("  7 ") == 7.0
    assert retry_after_seconds(b"Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after_seconds(b"soon") is None
    assert retry_after_seconds(None) is None


@pytest_twisted.ensureDeferred
async def test_an_api_page_that_is_not_json_is_retried_with_the_same_backoff_as_a_503(server, caplog):
    # A Cloudflare error page (HTML, status 200) three times, then the page.
    server.load(scenario([api_image(i) for i in range(1, 301)], faults=[
        {"server": "api", "match": {"page": 2}, "action": "html", "times": 3}]))
    settings = {"ITEM_PIPELINES": {}, "CIVITAI_RETRY_BACKOFF_BASE": 0.4, "RETRY_TIMES": 5}

    result = await run_crawl(server, settings)

    assert len(result.ids) == 300
    page_2 = [r for r in server.requests("api") if "cursor" in r["query"]]
    assert [r["fault"] for r in page_2] == ["html", "html", "html", None]
    gaps = [later["time"] - earlier["time"] for earlier, later in zip(page_2, page_2[1:])]
    assert gaps[0] >= 0.4 and gaps[1] >= 0.8 and gaps[2] >= 1.6, gaps  # 0.4 * 2 ** (n - 1)
    assert result.stats["retry/reason_count/api_invalid_json"] == 3
    assert result.stats["retry/backoff_seconds"] == pytest.approx(0.4 + 0.8 + 1.6)
    assert not [r for r in caplog.records if r.levelname == "WARNING" and "meta" in r.getMessage().lower()]


@pytest.mark.parametrize(("retry", "retry_after", "wait"), [
    (1, None, 1.0), (2, None, 2.0), (3, None, 4.0), (6, None, 30.0), (9, None, 30.0),  # capped at the max
    (1, 5.0, 5.0),  # Retry-After longer than the backoff: honoured
    (3, 2.0, 4.0),  # shorter: the backoff
    (1, 600.0, 120.0),  # capped at CIVITAI_RETRY_AFTER_MAX
])
def test_retry_delay(retry, retry_after, wait):
    from scrapy.settings import Settings

    import civitai_spider.settings as project
    from civitai_spider.middlewares import BackoffRetryMiddleware

    settings = Settings()
    settings.setmodule(project, priority="project")
    assert BackoffRetryMiddleware(settings).delay(retry, retry_after) == wait
