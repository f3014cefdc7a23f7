"""Spider-argument parsing: plain functions, no crawl."""

from __future__ import annotations

import pytest

from civitai_spider.arguments import ArgumentError, parse_arguments


def test_defaults():
    args = parse_arguments({})
    assert args.require_meta is True
    assert args.sorted_by_reactions
    assert [q.key for q in args.queries] == ["all"]
    assert dict(args.queries[0].params) == {"sort": "Most Reactions", "period": "AllTime", "type": "image"}


def test_choices_are_matched_loosely_and_sent_canonically():
    args = parse_arguments({"sort": "most_reactions", "period": "week", "nsfw": "x", "type": "VIDEO"})
    params = args.queries[0].params
    assert (params["sort"], params["period"], params["nsfw"], params["type"]) == ("Most Reactions", "Week", "X", "video")
    assert not args.sorted_by_reactions


def test_fan_out_product_and_dedup():
    args = parse_arguments({"username": "a, b,a", "browsing_level": "PG+R,5,X", "model_id": "7"})
    keys = [q.key for q in args.queries]
    assert keys == [
        "modelId=7,username=a,browsingLevel=5", "modelId=7,username=a,browsingLevel=8",
        "modelId=7,username=b,browsingLevel=5", "modelId=7,username=b,browsingLevel=8",
    ]


def test_thresholds_inclusive():
    args = parse_arguments({"min_hearts": "5", "max_dislikes": "2"})
    t = args.thresholds
    assert t.failures({"heartCount": 5, "dislikeCount": 2}) == []
    assert t.failures({"heartCount": 4, "dislikeCount": 3}) == ["min_hearts", "max_dislikes"]
    assert t.failures(None) == ["min_hearts"]


@pytest.mark.parametrize("kwargs", [
    {"min_hearts": ""}, {"min_hearts": "1.5"}, {"browsing_level": "0"}, {"browsing_level": "32"},
    {"post_id": "0"}, {"username": "a,,b"}, {"base_models": ","}, {"limit": "5"},
])
def test_rejected(kwargs):
    with pytest.raises(ArgumentError, match=next(iter(kwargs))):
        parse_arguments(kwargs)


def test_scrapyd_job_argument_is_ignored():
    assert parse_arguments({"_job": "abc123"}).queries[0].key == "all"
