"""What a person running a harvest sees: the live display, the log line, field coverage,
the closing summary, clear errors and the exit status. Real ``scrapy crawl`` processes."""

from __future__ import annotations

import re

import pytest_twisted

from civitai_spider.extensions.summary import summary_lines
from tests.support import api_image, image_bytes, run_crawl, run_in_terminal, run_scrapy, scenario

FILES = {"jpeg": image_bytes("JPEG")}
IMAGES = [api_image(i, hearts=i % 4, file="jpeg", meta=None if i % 10 == 0 else "default") for i in range(1, 121)]
# Every page walked (the counts below are of every image): sorted by hearts, early stop would end the walk at hearts 1.
SLOW = [{"server": "cdn", "match": {}, "action": "stall", "seconds": 0.1, "times": -1}]


def crawl_args(server, store, *extra: str) -> list[str]:
    return ["crawl", "civitai", "-a", "min_hearts=2", "-s", f"CIVITAI_API_URL={server.api_url}",
            "-s", f"IMAGES_STORE={store}", "-s", "CIVITAI_RETRY_BACKOFF_BASE=0.01", "-s", "CIVITAI_PAGE_LIMIT=20",
            "-s", "CIVITAI_EARLY_STOP=false", *extra]


def test_live_display_on_a_terminal(server, tmp_path):
    server.load(scenario(IMAGES, FILES, faults=SLOW))

    status, screen = run_in_terminal(crawl_args(server, tmp_path / "store"))

    assert status == 0, screen[-2000:]
    updates = [line for line in screen.split("\r") if line.startswith("stored ")]
    assert len(updates) >= 2  # redrawn in place while the crawl runs
    final = updates[-1]
    assert "stored 54" in final and "seen 120" in final and "failed 0" in final
    assert "dropped 66 (min_hearts 60, no_meta 6)" in final
    assert "img/s" in final
    # log lines still come through above the display, at LOG_LEVEL (INFO): no DEBUG flood
    assert "[scrapy.core.engine] INFO: Spider opened" in screen
    assert " DEBUG: " not in screen


def test_live_display_on_a_terminal_that_reports_no_size(server, tmp_path):
    server.load(scenario(IMAGES, FILES, faults=SLOW))

    status, screen = run_in_terminal(crawl_args(server, tmp_path / "store"), rows=0)

    assert status == 0, screen[-2000:]
    updates = [line for line in screen.split("\r") if line.startswith("stored ")]
    assert updates and "stored 54" in updates[-1]


def test_periodic_log_line_without_a_terminal(server, tmp_path):
    server.load(scenario(IMAGES, FILES, faults=SLOW))

    done = run_scrapy(*crawl_args(server, tmp_path / "store", "-s", "CIVITAI_PROGRESS_INTERVAL=0.2"))

    assert done.returncode == 0
    assert "\r" not in done.stderr
    progress = [line for line in done.stderr.splitlines() if "Progress: stored" in line]
    assert progress, done.stderr[-2000:]


def test_progress_off(server, tmp_path):
    server.load(scenario(IMAGES[:5], FILES))

    status, screen = run_in_terminal(crawl_args(server, tmp_path / "store", "-s", "CIVITAI_PROGRESS=off"))

    assert status == 0
    assert "img/s" not in screen and "Progress:" not in screen


def test_summary_and_field_coverage(server, tmp_path):
    images = IMAGES[:40] + [api_image(500, hearts=9)]  # 500 has no file: a 404 failure
    server.load(scenario(images, FILES))

    done = run_scrapy(*crawl_args(server, tmp_path / "store"))

    assert done.returncode == 0
    summary = done.stderr[done.stderr.index("civitai-spider finished"):]
    assert "(finished)" in summary.splitlines()[0]
    assert "stored: 18 new images" in summary
    assert "dropped by the filter: 22 (min_hearts 20, no_meta 2)" in summary
    assert f"failed: 1 (http_404 1); listed in {tmp_path / 'store'}/failures.jsonl" in summary
    assert "Dumping Scrapy stats" in done.stderr[: done.stderr.index("civitai-spider finished")]  # summary comes last
    assert "'fields_coverage'" in done.stderr and "'prompt': '100.0%'" in done.stderr


@pytest_twisted.ensureDeferred
async def test_field_coverage_is_depth_limited(server, tmp_path):
    workflow = {"nodes": {str(n): {"class": "KSampler", "inputs": {"seed": n}} for n in range(50)}}
    server.load(scenario([api_image(1, file="jpeg", meta={"prompt": "x", "workflow": workflow})], FILES))

    result = await run_crawl(server, {"IMAGES_STORE": str(tmp_path)})

    coverage = result.stats["fields_coverage"]
    assert coverage["meta"]["prompt"] == "100.0%"
    assert coverage["meta"]["workflow"] == "100.0%"  # counted, not walked node by node
    assert coverage["stats"]["heartCount"] == "100.0%"


def test_an_unreachable_api_says_what_it_is_doing_then_ends_with_one_error_line(tmp_path):
    unreachable = ["crawl", "civitai", "-s", "CIVITAI_API_URL=http://127.0.0.1:9/api/v1/images",
                   "-s", f"IMAGES_STORE={tmp_path}", "-s", "RETRY_TIMES=2", "-s", "CIVITAI_RETRY_BACKOFF_BASE=0.6"]

    status, screen = run_in_terminal(unreachable)

    assert status == 1, screen[-2000:]
    # While it retries: a log line per retry, and the live line says what, which try, and when.
    assert "WARNING: API page 1 of chain all: connection refused; try 2 of 3 in 1 s (http://127.0.0.1:9)" in screen
    assert "WARNING: API page 1 of chain all: connection refused; try 3 of 3 in 1 s" in screen
    live = [line for line in screen.split("\r") if line.startswith("retrying API page 1 of chain all")]
    assert live and "connection refused; try" in live[0] and "| stored 0 |" in live[0], screen[-2000:]
    # Then one error line: the cause and the fix.
    errors = [line for line in screen.splitlines() if "] ERROR: " in line]
    assert len(errors) == 1, errors
    assert re.search(
        r"civitai-spider FAILED: could not use the API at http://127\.0\.0\.1:9/api/v1/images: connection refused on "
        r"every try \(3\)\. Check the address \(CIVITAI_API_URL\) and this machine's network \(api_unavailable\) "
        r"after 0m0\ds$", errors[0]), errors[0]
    assert "Traceback" not in screen


def test_the_live_line_is_cut_at_a_field_boundary():
    from civitai_spider.extensions.progress import fit

    fields = {"stored": "720", "failed": "0", "rate": "291.5 img/s", "done before": "0", "written": "1.5 MB"}
    assert fit(fields, 200) == "stored 720 | failed 0 | rate 291.5 img/s | done before 0 | written 1.5 MB"
    assert fit(fields, 40) == "stored 720 | failed 0 | …"
    assert fit(fields, 52) == "stored 720 | failed 0 | rate 291.5 img/s | …"
    assert fit({"stored": "1234567890"}, 8) == "stored …"


def test_exit_status_when_the_key_is_refused(server, tmp_path):
    server.load(scenario(IMAGES, FILES, faults=[
        {"server": "api", "match": {}, "action": "status", "status": 401, "times": -1,
         "body": '{"error": "Unauthorized"}'}]))

    done = run_scrapy(*crawl_args(server, tmp_path), env={"CIVITAI_API_KEY": "wrong-key-0123456789"})

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "] ERROR: " in line]
    assert len(errors) == 1 and "FAILED: the API refused the key (HTTP 401) at page 1 of chain all: it is missing, " \
        "wrong or lacks access. Set CIVITAI_API_KEY" in errors[0], errors
    assert "wrong-key-0123456789" not in done.stderr
    assert "(api_key_rejected)" in done.stderr


def test_summary_lines_words():
    lines = summary_lines({"finish_reason": "finished", "images/stored": 3, "images/bytes_written": 2048,
                           "done/skipped": 2, "filter/dropped": 1, "filter/dropped/min_hearts": 1}, 2.0, "s3://b/p/")
    assert lines[0].startswith("civitai-spider finished (finished) after 0m02s")
    assert "  stored: 3 new images, 2.0 KB written; 2 already done earlier (skipped)" in lines
    assert "  rate: 1.50 images/s" in lines
    failed = summary_lines({"images/failed": 1, "images/failed/http_404": 1}, 1.0, "s3://b/p/")
    assert "  failed: 1 (http_404 1); listed in s3://b/p/failures.jsonl.d/ and retried by the next run" in failed


def test_summary_lines_of_update_runs():
    caught_up = summary_lines({"update/pages": 3, "api/chains/caught_up": 1, "update/seen_loaded": 1600,
                               "update/seen_recorded": 600, "images/failed": 1, "images/failed/http_404": 1}, 1.0, "/s")
    assert ("  update: 3 pages walked; chains: 1 caught up with earlier update runs; 1600 images seen before, "
            "600 recorded as seen now") in caught_up
    assert any("retried by the next normal run (update runs count them as seen)" in line for line in caught_up)
    first = summary_lines({"update/pages": 8, "api/chains/completed": 1, "update/seen_loaded": 0,
                           "update/seen_recorded": 1600}, 1.0, "/s")
    assert "  update: 8 pages walked; chains: 1 walked to the end of the feed; 0 images seen before, " \
        "1600 recorded as seen now" in first
    stopped = summary_lines({"update/pages": 2, "update/not_recorded": "shutdown"}, 1.0, "/s")
    assert "  update: 2 pages walked; chains: none ended; nothing recorded as seen (shutdown): the next update run " \
        "walks it again" in stopped
    failed_chain = summary_lines({"update/pages": 2, "api/chains/caught_up": 1, "update/chains_not_recorded": 1,
                                  "update/seen_loaded": 5, "update/seen_recorded": 200}, 1.0, "/s")
    assert any(line.endswith("; 1 chains not recorded (they did not end)") for line in failed_chain)
    assert not any(line.startswith("  update:") for line in summary_lines({}, 1.0, "/s"))


def test_help_lists_the_spider_arguments():
    done = run_scrapy("crawl", "civitai", "-h")

    assert done.returncode == 0
    assert "Spider arguments of civitai (-a NAME=VALUE; README: Spider arguments)" in done.stdout
    assert "  min_hearts=N          keep images with at least N hearts" in done.stdout
    assert "  nsfw=V                None, Soft, Mature, X, true (R+X+XXX only!)" in done.stdout
