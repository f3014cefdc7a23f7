"""Field coverage (scrapy-fieldstats), counted to a fixed depth.

scrapy-fieldstats recurses into every nested dict. Civitai's ``meta`` is free-form
and ComfyUI images carry whole workflow graphs keyed by node ids, so unbounded
recursion would grow its counters with every image. This subclass counts the
item's fields and the keys of its dicts down to ``FIELDSTATS_MAX_DEPTH`` levels
(default 2: every item field, and every ``meta`` / ``stats`` key).
"""

from __future__ import annotations

from typing import Any

from scrapy_fieldstats.fieldstats import FieldStatsExtension

from civitai_spider.config import CivitaiConfig


class CivitaiFieldStats(FieldStatsExtension):
    max_depth: int

    @classmethod
    def from_crawler(cls, crawler: Any) -> CivitaiFieldStats:
        extension = super().from_crawler(crawler)
        extension.max_depth = CivitaiConfig.of(crawler).fieldstats_max_depth
        return extension

    def count_item_fields(self, item: Any, current_node: dict[str, Any] | None = None, depth: int = 1) -> None:
        if current_node is None:
            current_node = self.field_counts
        for name, value in item.items():
            if isinstance(value, dict) and depth < self.max_depth:
                node = current_node.setdefault(name, {})
                if isinstance(node, dict):
                    self.count_item_fields(value, node, depth + 1)
                continue
            if self.skip_none and value is None:
                continue
            if isinstance(current_node.get(name), dict):
                continue  # a key seen as a dict elsewhere keeps its breakdown
            current_node[name] = current_node.get(name, 0) + 1
