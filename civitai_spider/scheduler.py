"""The scheduler of a one-process crawl: Scrapy's, with its queue in memory even with JOBDIR.

The chains resume from their own state (``extensions.chain_state``), not from a
saved request queue: so the scheduler is built without a JOBDIR (``jobdir=None``),
and writes nothing there. (With one, Scrapy's scheduler writes
``requests.queue/active.json`` at close by truncating the file and then writing
it: a kill between the two left it empty and stopped every later run at open.)
Image requests never go through the scheduler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy.core.scheduler import Scheduler
from scrapy.utils.misc import build_from_crawler, load_object

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from typing_extensions import Self


class ChainScheduler(Scheduler):
    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        settings = crawler.settings
        return cls(
            dupefilter=build_from_crawler(load_object(settings["DUPEFILTER_CLASS"]), crawler),
            jobdir=None,
            mqclass=load_object(settings["SCHEDULER_MEMORY_QUEUE"]),
            logunser=settings.getbool("SCHEDULER_DEBUG"),
            stats=crawler.stats,
            pqclass=load_object(settings["SCHEDULER_PRIORITY_QUEUE"]),
            crawler=crawler,
        )
