"""The closing summary: what the run stored, dropped and failed, in plain words.

Logged once, at the very end (after Scrapy's stats dump), from the crawl's
stats: at ERROR for a run that could not do its job (``outcome.FAILED_REASONS``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from scrapy import signals

from civitai_spider.extensions.progress import human_bytes
from civitai_spider.outcome import FAILED_REASONS

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

def by_reason(stats: dict[str, Any], prefix: str) -> str:
    counts = {k[len(prefix):]: v for k, v in stats.items() if k.startswith(prefix)}
    return ", ".join(f"{reason} {count}" for reason, count in sorted(counts.items(), key=lambda kv: -kv[1]))


def failures_location(store: str) -> str:
    """Where failures.jsonl is: a file in a local store, segment objects in s3:// or gs://."""
    name = "failures.jsonl.d/" if store.startswith(("s3://", "gs://")) else "failures.jsonl"
    return f"{store.rstrip('/')}/{name}"


def duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def update_line(stats: dict[str, Any]) -> str:
    """What an update run walked and why it stopped (extensions.update_runs)."""
    why = []
    if stats.get("api/chains/caught_up"):
        why.append(f"{stats['api/chains/caught_up']} caught up with earlier update runs")
    if stats.get("api/chains/completed"):
        why.append(f"{stats['api/chains/completed']} walked to the end of the feed")
    walked = f"update: {stats['update/pages']} pages walked; chains: {', '.join(why) or 'none ended'}"
    if "update/not_recorded" in stats:
        return f"  {walked}; nothing recorded as seen ({stats['update/not_recorded']}): the next update run walks it again"
    not_recorded = stats.get("update/chains_not_recorded", 0)
    return (f"  {walked}; {stats.get('update/seen_loaded', 0)} images seen before, "
            f"{stats.get('update/seen_recorded', 0)} recorded as seen now"
            + (f"; {not_recorded} chains not recorded (they did not end)" if not_recorded else ""))


def summary_lines(stats: dict[str, Any], elapsed: float, store: str) -> list[str]:
    reason = stats.get("finish_reason", "unknown")
    stored = stats.get("images/stored", 0)
    written = stats.get("images/bytes_written", 0) + stats.get("metadata/bytes_written", 0)
    chains = by_reason(stats, "api/chains/") or "none"
    why = stats.get("finish_detail") or FAILED_REASONS.get(reason, "")
    lines = [
        f"civitai-spider {'FAILED: ' + why if reason in FAILED_REASONS else 'finished'} ({reason}) after {duration(elapsed)}",
        f"  API: {stats.get('api/pages', 0)} pages, {stats.get('api/items', 0)} images seen; chains: {chains}",
        f"  stored: {stored} new images, {human_bytes(written)} written; "
        f"{stats.get('done/skipped', 0)} already done earlier (skipped)",
    ]
    if "update/pages" in stats:
        lines.append(update_line(stats))
    ignored = {k[len("api/filter_ignored/"):]: v for k, v in stats.items() if k.startswith("api/filter_ignored/")}
    for chain, filters in sorted(ignored.items()):
        lines.append(f"  chain {chain}: ended: the API ignored its {filters} filter; nothing foreign stored")
    foreign = stats.get("api/items/foreign", 0)
    if foreign:
        lines.append(f"  not stored, not matching their query: {foreign} ({by_reason(stats, 'api/items/foreign/')})")
    dropped = stats.get("filter/dropped", 0)
    reasons = f" ({by_reason(stats, 'filter/dropped/')})" if dropped else ""
    lines.append(f"  dropped by the filter: {dropped}{reasons}")
    failed = stats.get("images/failed", 0)
    if failed:
        lines.append(
            f"  failed: {failed} ({by_reason(stats, 'images/failed/')}); listed in {failures_location(store)}"
            + (" and retried by the next normal run (update runs count them as seen)" if "update/pages" in stats
               else " and retried by the next run")
        )
    else:
        lines.append("  failed: 0")
    if stats.get("images/left_for_next_run"):
        lines.append(f"  left for the next run (stopped early): {stats['images/left_for_next_run']}")
    lines.append(f"  rate: {stored / elapsed:.2f} images/s" if elapsed > 0 else "  rate: -")
    return lines


class RunSummary:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.started = time.monotonic()
        self.store = str(crawler.settings.get("IMAGES_STORE") or "")
        self.engine_started = False
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self.on_engine_started, signal=signals.engine_started)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)
        crawler.signals.connect(self.engine_stopped, signal=signals.engine_stopped)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> RunSummary:
        return cls(crawler)

    def spider_opened(self, spider: Any) -> None:
        self.started = time.monotonic()

    def on_engine_started(self) -> None:
        self.engine_started = True

    def spider_closed(self, spider: Any, reason: str) -> None:
        if not self.engine_started:  # closed while opening (e.g. the store): no engine_stopped follows
            self.crawler.stats.set_value("finish_reason", reason)
            self.engine_stopped()

    def engine_stopped(self) -> None:
        stats = self.crawler.stats.get_stats()
        level = logging.ERROR if stats.get("finish_reason") in FAILED_REASONS else logging.INFO
        logger.log(level, "\n".join(summary_lines(stats, time.monotonic() - self.started, self.store)))
