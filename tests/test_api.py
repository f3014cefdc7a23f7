"""Civitai API helpers: plain functions, table tests."""

from __future__ import annotations

import pytest

from civitai_spider import api

ITEM = {"id": 1, "username": "Alice", "postId": 5, "modelVersionIds": [70, 71], "browsingLevel": 4,
        "type": "image", "baseModel": "SDXL 1.0"}


@pytest.mark.parametrize(("params", "item", "expected"), [
    ({}, ITEM, []),
    ({"username": "alice"}, ITEM, []),  # usernames ignoring case
    ({"username": "bob"}, ITEM, ["username"]),
    ({"postId": "5"}, ITEM, []),
    ({"postId": "6"}, ITEM, ["postId"]),
    ({"postId": "6"}, {**ITEM, "postId": "5"}, ["postId"]),
    ({"modelVersionId": "71"}, ITEM, []),
    ({"modelVersionId": "72"}, ITEM, ["modelVersionId"]),
    ({"modelId": "7"}, ITEM, []),  # items do not carry it: not checked
    ({"browsingLevel": "11"}, ITEM, ["browsingLevel"]),  # PG + PG13 + X, not R
    ({"browsingLevel": "5"}, ITEM, []),
    ({"nsfw": "true"}, ITEM, []),
    ({"nsfw": "true"}, {**ITEM, "browsingLevel": 2}, ["nsfw"]),  # true: R + X + XXX, no PG-13
    ({"nsfw": "Soft"}, ITEM, ["nsfw"]),
    ({"nsfw": "X"}, ITEM, []),
    ({"browsingLevel": "1"}, {**ITEM, "browsingLevel": 0}, []),  # no level: not held against it
    ({"type": "video"}, ITEM, ["type"]),
    ({"baseModels": "Pony, sdxl 1.0"}, ITEM, []),
    ({"baseModels": "Pony"}, ITEM, ["baseModels"]),
    ({"username": "bob", "type": "video"}, ITEM, ["username", "type"]),
    # Fields the item lacks (or garbles) are not held against it.
    ({"username": "bob", "postId": "6", "modelVersionId": "9", "browsingLevel": "1", "type": "video",
      "baseModels": "Pony"}, {"id": 1, "username": None, "postId": "x", "modelVersionIds": "9",
                              "browsingLevel": True, "baseModel": 3}, []),
])
def test_item_filter(params, item, expected):
    assert api.ItemFilter.from_params(params).mismatches(item) == expected


def test_item_filter_names_what_it_checks():
    checked = api.ItemFilter.from_params({"username": "a", "nsfw": "X", "modelId": "7", "type": "image",
                                          "sort": "Newest"}).checked
    assert checked == ("username", "nsfw", "type")


@pytest.mark.parametrize(("stats", "sort", "value"), [
    ({"likeCount": 1, "heartCount": 2, "laughCount": 3, "cryCount": 4, "dislikeCount": 50, "commentCount": 60},
     "Most Reactions", 10),
    ({"likeCount": 1, "commentCount": 60}, "Most Comments", 60),
    ({"heartCount": "7", "likeCount": None}, "Most Reactions", 7),
    (None, "Most Reactions", 0),
])
def test_sort_value(stats, sort, value):
    assert api.sort_value(stats, sort) == value


@pytest.mark.parametrize(("params", "path"), [
    ({"modelId": "7"}, "a modelId query without modelVersionId"),
    ({"modelId": "7", "modelVersionId": "70"}, None),
    ({"imageId": "1"}, "an imageId query"),
    ({"username": "a"}, None),
])
def test_database_path(params, path):
    assert api.database_path(params) == path


def test_page_url_asks_for_flat_meta_and_encodes_the_cursor():
    url = api.page_url("https://civitai.red/api/v1/images", {"sort": "Most Reactions"}, "feed:1:2|ab+cd", 200)
    assert url == ("https://civitai.red/api/v1/images?limit=200&withMeta=true&flatMeta=true&sort=Most+Reactions"
                   "&cursor=feed%3A1%3A2%7Cab%2Bcd")


@pytest.mark.parametrize(("host", "allowed"), [
    ("image.civitai.com", True), ("image-b2.civitai.com", True), ("image.civitai.red", True),
    ("image-b2.civitai.red", True), ("civitai.red.evil.com", False), ("evilcivitai.com", False),
])
def test_default_image_hosts(host, allowed):
    from civitai_spider import settings

    assert api.host_allowed(host, settings.CIVITAI_IMAGE_HOSTS) is allowed


@pytest.mark.parametrize(("value", "count"), [
    (12, 12), ("12", 12), (" 7 ", 7), (2.9, 2), ("3.5", 3), (-4, 0), ("-4", 0), (True, 0), (False, 0),
    (None, 0), ("x", 0), (float("nan"), 0), (float("inf"), 0), ([1], 0),
])
def test_as_count_is_the_one_reading_of_a_count(value, count):
    # The spider's filter and the gallery read reaction counts (and sizes) with it.
    assert api.as_count(value) == count
