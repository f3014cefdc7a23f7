"""The ``civitai`` spider: real crawls against the stand-in API."""

from __future__ import annotations

import pytest
import pytest_twisted

from tests.support import api_image, run_crawl, run_scrapy, scenario

NO_IMAGES = {"ITEM_PIPELINES": {"civitai_spider.pipelines.filter.ReactionFilterPipeline": 100}}


def api_requests(server, **param):
    return [
        r for r in server.requests("api")
        if r["path"] == "/api/v1/images" and all(r["query"].get(k) == v for k, v in param.items())
    ]


@pytest_twisted.ensureDeferred
async def test_full_walk_yields_exactly_the_passing_images(server):
    images = [api_image(i, hearts=i % 20) for i in range(1, 451)]  # 3 pages: 200, 200, 50
    server.load(scenario(images))

    result = await run_crawl(server, NO_IMAGES, min_hearts="10", base_models="SDXL 1.0,Pony")

    assert sorted(result.ids) == [i for i in range(1, 451) if i % 20 >= 10]
    requests = api_requests(server)
    assert len(requests) == 3
    for r in requests:
        assert r["query"]["limit"] == "200"
        assert r["query"]["withMeta"] == "true"
        assert r["query"]["sort"] == "Most Reactions"
        assert r["query"]["period"] == "AllTime"
        assert r["query"]["baseModels"] == "SDXL 1.0,Pony"
        assert r["query"]["type"] == "image"
    assert "cursor" not in requests[0]["query"]
    assert requests[1]["query"]["cursor"] and requests[2]["query"]["cursor"]
    assert result.stats["api/chains/completed"] == 1
    assert result.stats["filter/dropped/min_hearts"] == 450 - len(result.ids)
    # Items carry the API's fields, meta as given, and the image URL to download.
    item = next(i for i in result.items if i["id"] == 19)
    assert item["stats"]["heartCount"] == 19
    assert item["meta"]["prompt"] == "a prompt"
    assert item["image_urls"] == [item["url"]] and item["url"].endswith(".jpeg")


@pytest.mark.parametrize(
    ("argument", "stat"),
    [
        ("min_hearts", "hearts"),
        ("min_likes", "likes"),
        ("min_laughs", "laughs"),
        ("min_cries", "cries"),
        ("min_comments", "comments"),
        ("min_dislikes", "dislikes"),
        ("max_dislikes", "dislikes"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_each_threshold_is_inclusive(server, argument, stat):
    server.load(scenario([api_image(i, **{stat: 3 + i}) for i in range(1, 4)]))  # 4, 5, 6

    result = await run_crawl(server, NO_IMAGES, **{argument: "5"})

    expected = [2, 3] if argument.startswith("min_") else [1, 2]
    assert sorted(result.ids) == expected
    assert result.stats[f"filter/dropped/{argument}"] == 1


@pytest_twisted.ensureDeferred
async def test_missing_stats_count_as_zero(server):
    images = [
        api_image(1, hearts=3),
        {**api_image(2), "stats": {"likeCount": 9}},  # no heartCount
        {k: v for k, v in api_image(3).items() if k != "stats"},  # no stats at all
        {**api_image(4), "stats": {"heartCount": "7", "dislikeCount": None}},  # odd types
    ]
    server.load(scenario(images))

    kept = await run_crawl(server, NO_IMAGES, min_hearts="0", max_dislikes="0")
    assert sorted(kept.ids) == [1, 2, 3, 4]
    strict = await run_crawl(server, NO_IMAGES, min_hearts="3")
    assert sorted(strict.ids) == [1, 4]


@pytest_twisted.ensureDeferred
async def test_require_meta(server):
    images = [
        api_image(1, prompt="a cat"),
        api_image(2, meta=None),
        api_image(3, prompt=None),  # meta without a prompt
        api_image(4, prompt="   "),
    ]
    server.load(scenario(images))

    default = await run_crawl(server, NO_IMAGES)
    assert default.ids == [1]
    assert default.stats["filter/dropped/no_meta"] == 3
    kept = await run_crawl(server, NO_IMAGES, require_meta="false")
    assert sorted(kept.ids) == [1, 2, 3, 4]


@pytest_twisted.ensureDeferred
async def test_nested_meta_is_normalised(server):
    server.load(scenario([api_image(1, prompt="nested")], nested_meta=True))

    result = await run_crawl(server, NO_IMAGES)

    assert result.items[0]["meta"]["prompt"] == "nested"
    assert result.items[0]["meta"]["seed"] == 1


@pytest_twisted.ensureDeferred
async def test_fan_out_runs_one_chain_per_value_and_yields_each_id_once(server):
    images = [api_image(i, modelVersionIds=[1]) for i in range(1, 251)]
    images += [api_image(i, modelVersionIds=[1, 2]) for i in range(251, 301)]  # in both chains
    images += [api_image(i, modelVersionIds=[2]) for i in range(301, 501)]
    server.load(scenario(images))

    result = await run_crawl(server, NO_IMAGES, model_version_id="1,2")

    assert sorted(result.ids) == list(range(1, 501))
    assert len(result.ids) == len(set(result.ids))
    assert result.stats["api/chains/started"] == 2
    assert result.stats["api/chains/completed"] == 2
    assert result.stats["api/items/duplicate"] == 50
    assert len(api_requests(server, modelVersionId="1")) == 2
    assert len(api_requests(server, modelVersionId="2")) == 2


@pytest_twisted.ensureDeferred
async def test_browsing_levels_and_usernames_fan_out_as_a_product(server):
    images = [api_image(i, username=u, browsingLevel=b) for i, (u, b) in enumerate(
        [("a", 1), ("a", 4), ("b", 1), ("b", 8), ("c", 1)], start=1)]
    server.load(scenario(images))

    result = await run_crawl(server, NO_IMAGES, username="a,b", browsing_level="PG,R")

    assert sorted(result.ids) == [1, 2, 3]
    assert result.stats["api/chains/started"] == 4
    assert {(r["query"]["username"], r["query"]["browsingLevel"]) for r in api_requests(server)} == {
        ("a", "1"), ("a", "4"), ("b", "1"), ("b", "4")}


@pytest_twisted.ensureDeferred
async def test_empty_page_mid_chain_is_not_the_end(server):
    server.load(scenario(
        [api_image(i) for i in range(1, 601)],
        faults=[{"server": "api", "match": {"page": 2}, "action": "empty"}],
    ))

    result = await run_crawl(server, NO_IMAGES)

    assert sorted(result.ids) == list(range(1, 201)) + list(range(401, 601))
    assert result.stats["api/pages/empty"] == 1
    assert result.stats["api/chains/completed"] == 1


@pytest_twisted.ensureDeferred
async def test_cursor_loop_ends_the_chain(server):
    server.load(scenario(
        [api_image(i) for i in range(1, 801)],
        faults=[{"server": "api", "match": {"page": 3}, "action": "loop", "to_page": 2, "times": -1}],
    ))

    result = await run_crawl(server, NO_IMAGES)

    assert sorted(result.ids) == list(range(1, 601))
    assert result.stats["api/chains/loop"] == 1
    assert len(api_requests(server)) == 3


@pytest_twisted.ensureDeferred
async def test_early_stop_after_barren_pages(server):
    # Sorted by reactions: pages 1-2 have hearts >= 50, pages 3.. none.
    images = [api_image(i, hearts=1000 - i if i <= 400 else 1) for i in range(1, 1401)]
    server.load(scenario(images))

    result = await run_crawl(server, NO_IMAGES, min_hearts="50")
    assert len(api_requests(server)) == 2 + 3  # two good pages, three barren ones
    assert result.stats["api/chains/early_stop"] == 1
    assert sorted(result.ids) == list(range(1, 401))

    server.load(scenario(images))
    off = await run_crawl(server, {**NO_IMAGES, "CIVITAI_EARLY_STOP_PAGES": 0}, min_hearts="50")
    assert len(api_requests(server)) == 7
    assert "api/chains/early_stop" not in off.stats

    server.load(scenario(images))
    newest = await run_crawl(server, NO_IMAGES, min_hearts="50", sort="Newest")
    assert len(api_requests(server)) == 7  # not sorted by reactions: no early stop
    assert sorted(newest.ids) == list(range(1, 401))


@pytest_twisted.ensureDeferred
async def test_retries_honour_retry_after(server):
    server.load(scenario(
        [api_image(i) for i in range(1, 401)],
        faults=[
            {"server": "api", "match": {"page": 2}, "action": "status", "status": 503,
             "headers": {"Retry-After": "2"}, "body": "Server busy"},
            {"server": "api", "match": {"page": 1}, "action": "status", "status": 429,
             "headers": {"Retry-After": "1"}},
        ],
    ))

    result = await run_crawl(server, NO_IMAGES)

    assert sorted(result.ids) == list(range(1, 401))
    requests = api_requests(server)
    assert [r["status"] for r in requests] == [429, 200, 503, 200]
    assert requests[1]["time"] - requests[0]["time"] >= 0.95
    assert requests[3]["time"] - requests[2]["time"] >= 1.95
    assert result.stats["retry/count"] == 2


@pytest_twisted.ensureDeferred
async def test_dropped_connection_is_retried(server):
    server.load(scenario(
        [api_image(i) for i in range(1, 301)],
        faults=[{"server": "api", "match": {"page": 2}, "action": "drop", "times": 3}],
    ))

    result = await run_crawl(server, NO_IMAGES)

    assert sorted(result.ids) == list(range(1, 301))
    assert [r["status"] for r in api_requests(server)] == [200, 0, 0, 0, 200]
    # Twisted's pool silently retries a GET once when a reused keep-alive connection
    # drops; Scrapy's retry middleware saw (and retried) the rest.
    assert result.stats["retry/count"] >= 2


@pytest_twisted.ensureDeferred
async def test_bad_request_ends_only_its_chain(server, caplog):
    images = [api_image(i, username="a") for i in range(1, 401)]
    images += [api_image(i, username="b") for i in range(401, 801)]
    server.load(scenario(images, faults=[
        {"server": "api", "match": {"page": 2, "param": {"username": "a"}}, "action": "status",
         "status": 400, "body": '{"error": "Invalid browsingLevel"}'},
    ]))

    result = await run_crawl(server, NO_IMAGES, username="a,b")

    assert sorted(result.ids) == list(range(1, 201)) + list(range(401, 801))
    assert result.stats["api/chains/failed/http_400"] == 1
    assert result.stats["api/chains/completed"] == 1
    ended = [r.getMessage() for r in caplog.records if "ended after" in r.getMessage()]
    assert len(ended) == 1
    assert "http_400" in ended[0] and "Invalid browsingLevel" in ended[0] and "username=a" in ended[0]


@pytest_twisted.ensureDeferred
async def test_html_instead_of_json_is_retried_then_ends_the_chain(server, caplog):
    server.load(scenario(
        [api_image(i) for i in range(1, 401)],
        faults=[{"server": "api", "match": {"page": 2}, "action": "html", "times": 1}],
    ))
    once = await run_crawl(server, NO_IMAGES)
    assert sorted(once.ids) == list(range(1, 401))
    assert once.stats["retry/reason_count/api_invalid_json"] == 1

    server.load(scenario(
        [api_image(i) for i in range(1, 401)],
        faults=[{"server": "api", "match": {"page": 2}, "action": "html", "times": -1}],
    ))
    always = await run_crawl(server, {**NO_IMAGES, "RETRY_TIMES": 2})
    assert sorted(always.ids) == list(range(1, 201))
    assert always.stats["api/chains/failed/invalid_json"] == 1
    assert len(api_requests(server)) == 1 + 3
    assert any("<!DOCTYPE html" in r.getMessage() for r in caplog.records if "ended after" in r.getMessage())


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("min_hearts=ten", "min_hearts='ten': expected a whole number >= 0"),
        ("min_likes=-1", "min_likes='-1'"),
        ("sort=best", "sort='best': expected one of Most Reactions"),
        ("period=Decade", "period='Decade'"),
        ("nsfw=maybe", "nsfw='maybe'"),
        ("type=gif", "type='gif'"),
        ("browsing_level=PG,Q", "browsing_level='Q'"),
        ("model_id=12,abc", "model_id="),
        ("require_meta=perhaps", "require_meta='perhaps': expected true or false"),
        ("min_heart=10", "unknown argument 'min_heart'"),
    ],
)
def test_bad_arguments_fail_fast_with_a_clear_message(server, argument, message):
    done = run_scrapy("crawl", "civitai", "-a", argument, "-s", f"CIVITAI_API_URL={server.api_url}")

    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert server.requests() == []


@pytest_twisted.ensureDeferred
async def test_next_page_is_requested_before_image_downloads_finish(server, tmp_path):
    from tests.support import image_bytes

    server.load(scenario(
        [api_image(i, file="jpeg") for i in range(1, 61)],
        {"jpeg": image_bytes("JPEG")},
        faults=[{"server": "cdn", "match": {}, "action": "stall", "seconds": 1.0, "times": -1}],
    ))

    result = await run_crawl(server, {"IMAGES_STORE": str(tmp_path), "CIVITAI_PAGE_LIMIT": 20})

    assert len(result.ids) == 60
    pages = [r["time"] for r in api_requests(server)]
    images = [r["time"] for r in server.requests("cdn")]
    assert len(pages) == 3
    # Every page was asked for before the first image download (stalled 1 s) could finish.
    assert max(pages) < min(images) + 0.9
