"""How a crawl ended, for the person who ran it: the close reasons that mean it could not do
its job, and the exit status of our ``scrapy crawl`` (0 ran, 1 could not do its job, 2 usage)."""

from __future__ import annotations

#: Close reasons that mean the crawl could not do its job, and why, in words.
FAILED_REASONS = {
    "bad_arguments": "the spider arguments were not valid",
    "api_key_rejected": "the API refused the key (HTTP 401/403): check CIVITAI_API_KEY",
    "api_unavailable": "the API could not be used from the first page on",
    "api_filter_ignored": "the API ignored a query's filter and sent other images (none of them stored)",
    "store_unwritable": "the store (IMAGES_STORE) cannot be written",
    "store_failing": "the store kept failing to write",
    "redis_unreachable": "Redis (CIVITAI_REDIS_URL) could not be reached",
    "redis_no_crawl": "there is no crawl of that name in Redis to resume",
    "redis_crawl_exists": "an unfinished crawl of that name is in Redis",
    "redis_other_arguments": "the crawl in Redis was started with other arguments",
    "redis_bad_start": "CIVITAI_REDIS_START is not new, resume or restart",
}

USAGE_ERROR = 2  # a bad argument or setting (Scrapy's UsageError)


def exit_status(finish_reason: str | None) -> int:
    """1 for a crawl that closed with one of ``FAILED_REASONS``, else 0 (finished, or stopped)."""
    return 1 if finish_reason in FAILED_REASONS else 0
