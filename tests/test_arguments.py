"""Spider-argument parsing: plain functions, no crawl."""

from __future__ import annotations

import re

import pytest

from civitai_spider.arguments import ArgumentError, parse_arguments


def test_defaults():
    args = parse_arguments({})
    assert args.require_meta is True
    assert args.early_stop(args.queries[0]) == (0, "no min_likes/min_hearts/min_laughs/min_cries threshold bounds the 'Most Reactions' order")
    assert [q.key for q in args.queries] == ["all"]
    assert dict(args.queries[0].params) == {"sort": "Most Reactions", "period": "AllTime", "type": "image"}


def test_choices_are_matched_loosely_and_sent_canonically():
    args = parse_arguments({"sort": "most_reactions", "period": "week", "nsfw": "x", "type": "VIDEO"})
    params = args.queries[0].params
    assert (params["sort"], params["period"], params["nsfw"], params["type"]) == ("Most Reactions", "Week", "X", "video")


@pytest.mark.parametrize(("kwargs", "floor", "why_not"), [
    ({"min_hearts": "10"}, 10, ""),
    ({"min_hearts": "10", "min_likes": "5", "min_comments": "7", "min_dislikes": "3"}, 15, ""),
    ({"min_hearts": "10", "period": "Week"}, 10, ""),  # the period filters; the sort is the same
    ({"min_comments": "7", "sort": "Most Comments"}, 7, ""),
    ({"min_comments": "7"}, 0, "no min_likes/min_hearts/min_laughs/min_cries threshold"),
    ({"min_hearts": "10", "sort": "Newest"}, 0, "sort=Newest is not ordered"),
    ({"min_hearts": "10", "sort": "Most Collected"}, 0, "sort=Most Collected is not ordered"),
    ({"min_hearts": "10", "model_id": "7"}, 0, "a modelId query without modelVersionId from its database"),
    ({"min_hearts": "10", "model_id": "7", "model_version_id": "70"}, 10, ""),
    ({"min_hearts": "10", "model_version_id": "70"}, 10, ""),
])
def test_early_stop_floor(kwargs, floor, why_not):
    args = parse_arguments(kwargs)
    got_floor, got_why = args.early_stop(args.queries[0])
    assert got_floor == floor and why_not in got_why and bool(got_why) == (not floor)


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


def test_every_argument_has_a_line_of_help():
    from civitai_spider.arguments import ARGUMENT_HELP, KNOWN_ARGS

    named = {part.strip().split("=")[0] for name in ARGUMENT_HELP for part in name.split(",") if "=" in part}
    assert named == KNOWN_ARGS


def test_seen_name_is_stable_and_covers_what_decides_storing():
    def name(**kwargs):
        args = parse_arguments({"sort": "Newest", "update": "true", **kwargs})
        return [args.seen_name(query) for query in args.queries]

    assert name(min_hearts="10") == name(min_hearts="10")
    assert name(min_hearts="10") != name(min_hearts="5")
    assert name(min_hearts="10") != name(min_hearts="10", require_meta="false")
    assert name(min_hearts="10") != name(min_hearts="10", max_dislikes="3")
    assert name(min_hearts="10") != name(min_hearts="10", nsfw="X")
    assert name(min_hearts="10")[0].startswith("all.")
    users = name(username="bob/../x y,alice")
    assert len(users) == 2 and len(set(users)) == 2
    assert all(re.fullmatch(r"[A-Za-z0-9=,._-]+\.[0-9a-f]{16}", n) and "/" not in n for n in users), users
