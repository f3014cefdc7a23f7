"""The ``civitai`` spider: real crawls against the stand-in API."""

from __future__ import annotations

import pytest
import pytest_twisted

from civitai_spider.spiders.civitai import CivitaiSpider
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

    # Every page walked: sorted by hearts, early stop would end the walk after page 2.
    result = await run_crawl(server, {**NO_IMAGES, "CIVITAI_EARLY_STOP": False}, min_hearts="10",
                             base_models="SDXL 1.0,Pony")

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
    # flatMeta=true is sent on every page; a server that still nests meta is read all the same.
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


def reacted(image_id, hearts=0, likes=0, **extra):
    return api_image(image_id, hearts=hearts, likes=likes, **extra)


@pytest_twisted.ensureDeferred
async def test_early_stop_is_exact_on_the_reaction_sum(server, caplog):
    caplog.set_level("INFO", logger="civitai_spider")
    # "Most Reactions" sorts by likes + hearts + laughs + cries. Page 2 has no image
    # with 50 hearts (a barren page to the old rule), but its likes keep the sum up,
    # so page 3, whose images do have 60 hearts, must still be walked.
    images = [reacted(i, hearts=100) for i in range(1, 201)]
    images += [reacted(i, likes=80) for i in range(201, 401)]
    images += [reacted(i, hearts=60) for i in range(401, 601)]
    images += [reacted(i, hearts=49) for i in range(601, 1401)]
    server.load(scenario(images))

    result = await run_crawl(server, NO_IMAGES, min_hearts="50")

    assert sorted(result.ids) == list(range(1, 201)) + list(range(401, 601))
    assert len(api_requests(server)) == 4  # page 4's last image has 49 < 50: every later one too
    assert result.stats["api/chains/early_stop"] == 1
    assert any("early stop after page 4" in r.getMessage() and "likes+hearts+laughs+cries 49" in r.getMessage()
               and "at least 50" in r.getMessage() for r in caplog.records)

    server.load(scenario(images))  # min_likes adds to the floor: 50 + 30 = 80 > 60 after page 2
    both = await run_crawl(server, NO_IMAGES, min_hearts="50", min_likes="30")
    assert both.ids == [] and len(api_requests(server)) == 3

    server.load(scenario(images))
    off = await run_crawl(server, {**NO_IMAGES, "CIVITAI_EARLY_STOP": False}, min_hearts="50")
    assert len(api_requests(server)) == 7
    assert "api/chains/early_stop" not in off.stats and sorted(off.ids) == sorted(result.ids)

    server.load(scenario(images))
    newest = await run_crawl(server, NO_IMAGES, min_hearts="50", sort="Newest")
    assert len(api_requests(server)) == 7  # not sorted by reactions: no early stop
    assert sorted(newest.ids) == sorted(result.ids)


@pytest_twisted.ensureDeferred
async def test_early_stop_on_comments_and_any_period(server):
    images = [api_image(i, comments=400 - i) for i in range(1, 401)]  # sorted by comments
    images += [api_image(i, comments=0) for i in range(401, 1001)]
    server.load(scenario(images))

    result = await run_crawl(server, NO_IMAGES, min_comments="100", sort="Most Comments", period="Week")

    assert sorted(result.ids) == list(range(1, 301))
    assert len(api_requests(server)) == 2  # page 2 ends at 0 comments


@pytest_twisted.ensureDeferred
async def test_a_page_out_of_order_turns_early_stop_off(server, caplog):
    images = [reacted(i, hearts=100) for i in range(1, 201)]
    images += [reacted(i, hearts=1) for i in range(201, 400)] + [reacted(400, hearts=90)]  # 90 after 1s
    images += [reacted(i, hearts=1) for i in range(401, 600)] + [reacted(600, hearts=70)]
    server.load(scenario(images, unsorted=True))  # a backend whose sort is broken

    result = await run_crawl(server, NO_IMAGES, min_hearts="50")

    assert sorted(result.ids) == list(range(1, 201)) + [400, 600]
    assert len(api_requests(server)) == 3
    assert result.stats["api/chains/unsorted"] == 1
    assert any("page 2 is not in 'Most Reactions' order" in r.getMessage() for r in caplog.records)


@pytest_twisted.ensureDeferred
async def test_a_model_id_harvest_walks_every_page_because_the_database_path_is_newest_first(server, caplog):
    caplog.set_level("INFO", logger="civitai_spider")
    # The model's qualifying images are its oldest: the database path serves them last,
    # behind 4 pages without one. Its search-index order (model_version_id) is by reactions.
    good = [api_image(i, hearts=500 - i, modelVersionIds=[70], _modelIds=[7]) for i in range(1, 151)]
    barren = [api_image(i, hearts=1, modelVersionIds=[70], _modelIds=[7]) for i in range(1001, 1801)]
    server.load(scenario(good + barren))

    by_model = await run_crawl(server, NO_IMAGES, min_hearts="10", model_id="7")

    assert sorted(by_model.ids) == list(range(1, 151))
    requests = api_requests(server)
    assert len(requests) == 5 and all(r["query"]["flatMeta"] == "true" for r in requests)
    assert "api/chains/early_stop" not in by_model.stats
    assert any("No early stop for chain modelId=7: Civitai answers a modelId query without modelVersionId "
               "from its database, where 'Most Reactions' is silently newest-first" in r.getMessage()
               for r in caplog.records)
    assert by_model.items[0]["meta"]["prompt"] == "a prompt"  # flat: flatMeta=true on the database path too

    server.load(scenario(good + barren))
    by_version = await run_crawl(server, NO_IMAGES, min_hearts="10", model_id="7", model_version_id="70")
    assert sorted(by_version.ids) == list(range(1, 151))
    assert len(api_requests(server)) == 1 and by_version.stats["api/chains/early_stop"] == 1


@pytest_twisted.ensureDeferred
async def test_retries_honour_retry_after(server):
    server.load(scenario(
        [api_image(i) for i in range(1, 401)],
        faults=[
            {"server": "api", "match": {"page": 2}, "action": "status", "status": 503,
             "headers": {"Retry-After": "0.8"}, "body": "Server busy"},
            {"server": "api", "match": {"page": 1}, "action": "status", "status": 429,
             "headers": {"Retry-After": "0.4"}},
        ],
    ))

    result = await run_crawl(server, NO_IMAGES)

    assert sorted(result.ids) == list(range(1, 401))
    requests = api_requests(server)
    assert [r["status"] for r in requests] == [429, 200, 503, 200]
    # Retry-After (0.4 s, 0.8 s) over the backoff (0.05 s, 0.1 s): waited for
    assert requests[1]["time"] - requests[0]["time"] >= 0.38
    assert requests[3]["time"] - requests[2]["time"] >= 0.78
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
    ended = [r.getMessage() for r in caplog.records if "ended at page" in r.getMessage()]
    assert len(ended) == 1
    assert "ended at page 2 after 1 try: HTTP 400" in ended[0] and "Invalid browsingLevel" in ended[0]
    assert "username=a" in ended[0] and "the other chains go on" in ended[0]


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
    assert any("<!DOCTYPE html" in r.getMessage() for r in caplog.records if "ended at page" in r.getMessage())


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
def test_a_bad_argument_is_named_with_what_it_takes(argument, message):
    from civitai_spider.arguments import ArgumentError

    name, value = argument.split("=", 1)
    with pytest.raises(ArgumentError) as raised:
        CivitaiSpider.check_arguments({name: value})
    assert message in str(raised.value)


def test_bad_arguments_fail_fast_with_a_clear_message(server):
    """As a user meets it: one error line, exit status 2, no request (the messages: above)."""
    done = run_scrapy("crawl", "civitai", "-a", "min_hearts=ten", "-s", f"CIVITAI_API_URL={server.api_url}")

    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "min_hearts='ten': expected a whole number >= 0" in errors[0], done.stderr
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


def jpeg_files():
    from tests.support import image_bytes

    return {"jpeg": image_bytes("JPEG")}


def stored_ids(store):
    return sorted(int(path.stem) for path in store.glob("*.jpg"))


@pytest_twisted.ensureDeferred
async def test_a_username_query_answered_with_the_global_feed_stores_nothing_foreign(server, tmp_path, caplog):
    # The API drops "username" (as it did for a deleted user): the global feed comes back.
    # Page 1 happens to hold two of alice's images; page 2 none: the chain ends there.
    images = [api_image(i, username="alice" if i in (3, 150) else f"user{i % 7}", file="jpeg") for i in range(1, 601)]
    server.load(scenario(images, jpeg_files(), ignore_params=["username"]))

    result = await run_crawl(server, {"IMAGES_STORE": str(tmp_path)}, username="alice")

    assert sorted(result.ids) == [3, 150]
    assert stored_ids(tmp_path) == [3, 150]
    assert len(api_requests(server)) == 2
    assert result.stats["api/items/foreign/username"] == 198 + 200
    assert result.stats["api/chains/failed/filter_ignored"] == 1
    assert result.stats["api/filter_ignored/username=alice"] == "username"
    assert result.stats["finish_reason"] == "api_filter_ignored"
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and r.name.endswith(".civitai")]
    assert len(errors) == 1 and "Chain username=alice: the API ignored the query's filter (username=alice)" in errors[0]


@pytest_twisted.ensureDeferred
async def test_each_checked_filter_catches_an_ignored_parameter(server):
    images = [api_image(i, username="bob", postId=5, modelVersionIds=[2], browsingLevel=1, baseModel="Pony")
              for i in range(1, 11)]
    asked = {"username": ("username", "alice"), "postId": ("post_id", "9"), "modelVersionId": ("model_version_id", "3"),
             "browsingLevel": ("browsing_level", "R"), "baseModels": ("base_models", "SDXL 1.0")}
    for param, (argument, value) in asked.items():
        server.load(scenario(images, ignore_params=[param]))
        result = await run_crawl(server, NO_IMAGES, **{argument: value})
        assert result.ids == [], param
        assert result.stats[f"api/items/foreign/{param}"] == 10, param
        assert result.stats["finish_reason"] == "api_filter_ignored", param

    server.load(scenario([api_image(1, type="video")], ignore_params=["type"]))
    typed = await run_crawl(server, NO_IMAGES)  # type=image is always sent
    assert typed.ids == [] and typed.stats["api/items/foreign/type"] == 1


@pytest_twisted.ensureDeferred
async def test_a_chain_whose_filter_is_ignored_ends_alone_and_the_others_finish(server):
    images = [api_image(i, username="alice") for i in range(1, 301)]
    images += [api_image(i, username="bob", postId=7) for i in range(301, 401)]
    server.load(scenario(images, ignore_params=["postId"]))

    result = await run_crawl(server, NO_IMAGES, username="alice,bob", post_id="7")

    # username=bob,postId=7 gets bob's 100 (postId is not checked where it matches);
    # username=alice,postId=7 gets alice's images, none with postId 7: ignored.
    assert sorted(result.ids) == list(range(301, 401))
    assert result.stats["api/chains/failed/filter_ignored"] == 1
    assert result.stats["api/filter_ignored/postId=7,username=alice"] == "postId"
    assert result.stats["finish_reason"] == "api_filter_ignored"


def test_the_exit_status_and_summary_name_the_chain_and_the_filter(server, tmp_path):
    images = [api_image(i, username=f"user{i % 3}") for i in range(1, 51)]
    server.load(scenario(images, ignore_params=["username"]))

    done = run_scrapy("crawl", "civitai", "-a", "username=alice", "-s", f"CIVITAI_API_URL={server.api_url}",
                      "-s", f"IMAGES_STORE={tmp_path}", "-s", "CIVITAI_PROGRESS=off")

    assert done.returncode == 1, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if "] ERROR: " in line]
    assert len(errors) == 2, errors  # the chain's line, and the summary's first line
    assert "Chain username=alice: the API ignored the query's filter (username=alice): none of the 50 items " \
           "of page 1 match it (50 with another username)" in errors[0]
    assert "civitai-spider FAILED: the API ignored a query's filter" in errors[1]
    assert "  chain username=alice: ended: the API ignored its username filter; nothing foreign stored" in done.stderr
    assert not [path.name for path in tmp_path.iterdir() if path.name[0].isdigit()]  # no image, no metadata file


@pytest_twisted.ensureDeferred
async def test_both_sites_and_every_image_host_with_the_default_settings(server, tmp_path, civitai_names):
    from tests.support import base_settings

    cdn_hosts = ["image.civitai.com", "image-b2.civitai.com", "image.civitai.red", "image-b2.civitai.red"]
    # Every fifth image is PG to its poster but rated R by Civitai's AI: the SFW site leaves it out of PG.
    images = [api_image(i, file="jpeg", _cdn=cdn_hosts[i % 4], **({"_aiNsfwLevel": 4} if i % 5 == 0 else {}))
              for i in range(1, 301)]
    port = server.api_root.rsplit(":", 1)[1]
    for site, expected in (("civitai.red", list(range(1, 301))), ("civitai.com", [i for i in range(1, 301) if i % 5])):
        server.load(scenario(images, jpeg_files()))
        store = tmp_path / site
        settings = {"CIVITAI_API_URL": f"http://{site}:{port}/api/v1/images", "IMAGES_STORE": str(store),
                    "CIVITAI_PAGE_LIMIT": 100}
        assert "CIVITAI_IMAGE_HOSTS" not in settings and base_settings(server)["CIVITAI_IMAGE_HOSTS"] == [
            "civitai.com", "civitai.red"]

        result = await run_crawl(server, settings)

        assert sorted(result.ids) == expected, site
        assert stored_ids(store) == expected, site
        assert not any(k.startswith("api/items/invalid") for k in result.stats), site
        hosts = {r["headers"]["host"].split(":")[0] for r in server.requests("cdn")}
        assert hosts == set(cdn_hosts), site
        assert {r["headers"]["host"] for r in api_requests(server)} == {f"{site}:{port}"}


@pytest_twisted.ensureDeferred
async def test_nsfw_true_warns_that_it_leaves_out_pg_and_pg13(server, caplog):
    images = [api_image(i, browsingLevel=level) for i, level in enumerate((1, 2, 4, 8, 16), start=1)]
    server.load(scenario(images))

    result = await run_crawl(server, NO_IMAGES, nsfw="true")

    assert sorted(result.ids) == [3, 4, 5]
    assert any(r.levelname == "WARNING" and "nsfw=true asks Civitai for R, X and XXX only" in r.getMessage()
               and "browsing_level=PG+PG13+R+X+XXX" in r.getMessage() for r in caplog.records)
    server.load(scenario(images))
    every = await run_crawl(server, NO_IMAGES, browsing_level="PG+PG13+R+X+XXX")
    assert sorted(every.ids) == [1, 2, 3, 4, 5]
    server.load(scenario(images))
    default = await run_crawl(server, NO_IMAGES)
    assert default.ids == [1]  # no level asked: Civitai answers PG only
