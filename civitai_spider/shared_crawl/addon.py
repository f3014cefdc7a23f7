"""The switch into a shared crawl: with ``CIVITAI_REDIS_URL``, scrapy-redis's scheduler and dupefilter.

A Scrapy add-on (``ADDONS`` in ``civitai_spider.settings``): it changes nothing
unless ``CIVITAI_REDIS_URL`` is set, as a setting or in the environment (where a
password in the URL stays out of Scrapyd's job list and ``ps``). Then it sets, at
project priority, over our settings.py (a ``-s`` on the command line still wins):

- ``SCHEDULER``: ``LeasingScheduler`` (scrapy-redis's, leasing pages), with
  ``SCHEDULER_PERSIST = True``: the queue and the dupefilter outlive every worker;
- ``DUPEFILTER_CLASS``: scrapy-redis's ``RFPDupeFilter``;
- ``REDIS_URL``, ``SCHEDULER_QUEUE_KEY``, ``SCHEDULER_DUPEFILTER_KEY``: scrapy-redis's
  own settings, under ``civitai:<CIVITAI_REDIS_CRAWL>:``;
- ``CIVITAI_PARTIAL_FILES_MIN_AGE`` 3600 (at add-on priority): in a folder other
  workers write to, only ``.part`` files an hour old are a dead writer's;
- the ``WorkerLoop`` extension.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from civitai_spider.shared_crawl.state import CrawlKeys, redis_url

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

WORKER_LOOP = "civitai_spider.shared_crawl.workers.WorkerLoop"


class SharedCrawlAddon:
    def update_settings(self, settings: BaseSettings) -> None:
        url = redis_url(settings)
        if not url:
            return
        keys = CrawlKeys.named(str(settings.get("CIVITAI_REDIS_CRAWL") or "civitai"))
        for name, value in {
            "REDIS_URL": url,
            "SCHEDULER": "civitai_spider.shared_crawl.scheduler.LeasingScheduler",
            "DUPEFILTER_CLASS": "scrapy_redis.dupefilter.RFPDupeFilter",
            "SCHEDULER_PERSIST": True,
            "SCHEDULER_QUEUE_KEY": keys.requests,
            "SCHEDULER_DUPEFILTER_KEY": keys.dupefilter,
        }.items():
            # "project", not "addon": over our own settings.py (its SCHEDULER is the one-process
            # JobdirScheduler); a -s on the command line still wins.
            settings.set(name, value, priority="project")
        settings.set("CIVITAI_PARTIAL_FILES_MIN_AGE", 3600.0, priority="addon")
        settings["EXTENSIONS"][WORKER_LOOP] = 700
