"""A cursor chain's walking state, and the snapshot of it that a resumed crawl starts from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scrapy.http import Request

from civitai_spider.arguments import Query

FINISHED = ("complete", "loop", "early_stop", "caught_up")  # a chain in one of these is not walked again


@dataclass
class PageInFlight:
    """A page whose images are still in the pipelines."""

    request: Request  # the request that fetched it
    left: int  # its images not out of the pipelines yet
    failed: bool = False  # one of them failed: a resumed crawl walks the page again
    ids: list[int] = field(default_factory=list)  # the ids of the page that matched its query

    @property
    def cursor(self) -> str | None:
        return self.request.meta.get("cursor")

    @property
    def number(self) -> int:
        return int(self.request.meta.get("page", 1))


@dataclass
class Chain:
    """The walking state of one cursor chain."""

    query: Query
    # cursors, in walk order -> the cursor of the page that gave each (None: the first page)
    visited: dict[str, str | None] = field(default_factory=dict)
    pages: int = 0  # pages this process walked
    next_cursor: str | None = None  # cursor of the page requested next (None: the first page)
    next_page: int = 1  # its number in the chain
    reached: int = 0  # the highest page number walked, by this process or an earlier run of the job
    reached_before: int = 0  # what the earlier run of the job had reached (0: a new chain)
    again: int = 0  # pages this process walked again after a resume (at or below ``reached_before``)
    status: str = "walking"  # "walking", "failed" or one of FINISHED
    # Pages whose images are still in the pipelines, or whose images did not all make it.
    in_flight: dict[int, PageInFlight] = field(default_factory=dict)
    sequence: int = 0

    def snapshot(self) -> dict[str, Any]:
        """What a resumed crawl needs: where to restart, and whether there is anything left."""
        oldest = next(iter(self.in_flight.values()), None)
        finished = self.status in FINISHED and oldest is None
        cursor, page = (oldest.cursor, oldest.number) if oldest else (self.next_cursor, self.next_page)
        # Cursors up to the restart point: the walk from there will visit the later ones again.
        visited = list(self.visited)
        visited = visited[: visited.index(cursor) + 1] if cursor in self.visited else []
        return {
            "cursor": cursor,
            "page": page,
            "reached": self.reached,
            "status": self.status if finished else "walking",
            "visited": visited,
        }

    @classmethod
    def restore(cls, query: Query, saved: dict[str, Any]) -> Chain:
        visited = list(saved.get("visited", ()))
        reached = saved.get("reached", 0)
        return cls(
            query,
            visited=dict(zip(visited, [None, *visited[:-1]])),
            next_cursor=saved.get("cursor"),
            next_page=saved.get("page", len(visited) + 1),
            reached=reached,
            reached_before=reached,
            status=saved.get("status", "walking"),
        )
