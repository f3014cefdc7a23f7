"""A chain's resume snapshot, and the chain restored from it."""

from __future__ import annotations

from scrapy.http import Request

from civitai_spider.arguments import Query
from civitai_spider.chains import Chain, PageInFlight

QUERY = Query(key="all", params={})


def page(cursor, number, left=1, failed=False):
    return PageInFlight(Request("https://civitai.com/api/v1/images", meta={"cursor": cursor, "page": number}), left, failed)


def walked(*cursors):
    chain = Chain(QUERY)
    previous = None
    for number, cursor in enumerate(cursors, start=2):
        chain.visited[cursor] = previous
        chain.next_cursor, chain.next_page, previous = cursor, number, cursor
    chain.reached = len(cursors) + 1
    return chain


def test_a_new_chain_starts_at_its_first_page():
    assert Chain(QUERY).snapshot() == {"cursor": None, "page": 1, "reached": 0, "status": "walking", "visited": []}


def test_the_snapshot_restarts_at_the_oldest_page_still_in_flight():
    chain = walked("c2", "c3", "c4")
    chain.in_flight = {1: page("c2", 2), 2: page("c3", 3)}
    assert chain.snapshot() == {"cursor": "c2", "page": 2, "reached": 4, "status": "walking", "visited": ["c2"]}


def test_a_page_whose_images_did_not_all_make_it_stays_the_restart_point():
    chain = walked("c2", "c3")
    chain.in_flight = {1: page("c2", 2, left=0, failed=True)}
    chain.status = "complete"
    assert chain.snapshot()["cursor"] == "c2" and chain.snapshot()["status"] == "walking"


def test_a_finished_chain_with_nothing_in_flight_is_finished():
    chain = walked("c2")
    chain.status = "early_stop"
    assert chain.snapshot()["status"] == "early_stop"


def test_restore_gives_the_walk_back_and_remembers_how_far_it_got():
    chain = walked("c2", "c3", "c4")
    chain.in_flight = {1: page("c3", 3)}
    restored = Chain.restore(QUERY, chain.snapshot())
    assert (restored.next_cursor, restored.next_page) == ("c3", 3)
    assert restored.visited == {"c2": None, "c3": "c2"}
    assert restored.reached == restored.reached_before == 4 and restored.status == "walking"
    # An older snapshot (no page numbers): the page is counted from the cursors walked.
    assert Chain.restore(QUERY, {"cursor": "c3", "visited": ["c2", "c3"]}).next_page == 3
