"""The switch into a shared crawl: with ``CIVITAI_REDIS_URL``, scrapy-redis's scheduler and dupefilter.

Called by the project's add-on (``civitai_spider.addon.CivitaiAddon``) when
``CIVITAI_REDIS_URL`` is set, as a setting or in the environment (where a password
in the URL stays out of Scrapyd's job list and ``ps``). Then it sets, at add-on
priority (a setting of the project or the command line still wins), but for one
that settings.py has a default for, set over it:

- ``SCHEDULER``: ``LeasingScheduler`` (scrapy-redis's, leasing pages), with
  ``SCHEDULER_PERSIST = True``: the queue and the dupefilter outlive every worker;
- ``DUPEFILTER_CLASS``: scrapy-redis's ``RFPDupeFilter``;
- ``REDIS_URL``, ``SCHEDULER_QUEUE_KEY``, ``SCHEDULER_DUPEFILTER_KEY``: scrapy-redis's
  own settings, under ``civitai:<CIVITAI_REDIS_CRAWL>:``;
- ``CIVITAI_PARTIAL_FILES_MIN_AGE`` 3600: in a folder other workers write to, only
  ``.part`` files an hour old are a dead writer's;
- the ``WorkerLoop`` extension (heartbeat, leases, idling), the ``LeaseMiddleware``
  spider middleware and the ``ClaimPipeline`` (between the done ids and the images).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

    from civitai_spider.config import CivitaiConfig

logger = logging.getLogger(__name__)

WORKER_LOOP = "civitai_spider.shared_crawl.workers.WorkerLoop"
LEASE_MIDDLEWARE = "civitai_spider.shared_crawl.leases.LeaseMiddleware"
CLAIM_PIPELINE = "civitai_spider.shared_crawl.claims.ClaimPipeline"


def shared_settings(settings: BaseSettings, config: CivitaiConfig) -> None:
    from civitai_spider.shared_crawl.state import CrawlKeys

    keys = CrawlKeys.named(config.redis_crawl)
    for name, value in {
        "REDIS_URL": config.redis_url,
        "SCHEDULER": "civitai_spider.shared_crawl.scheduler.LeasingScheduler",
        "DUPEFILTER_CLASS": "scrapy_redis.dupefilter.RFPDupeFilter",
        "SCHEDULER_PERSIST": True,
        "SCHEDULER_QUEUE_KEY": keys.requests,
        "SCHEDULER_DUPEFILTER_KEY": keys.dupefilter,
    }.items():
        settings.set(name, value, priority="addon")
    # "project", not "addon": over our own settings.py's default (0); a -s still wins.
    settings.set("CIVITAI_PARTIAL_FILES_MIN_AGE", 3600.0, priority="project")
    settings["EXTENSIONS"][WORKER_LOOP] = 700
    settings["SPIDER_MIDDLEWARES"][LEASE_MIDDLEWARE] = 950
    settings["ITEM_PIPELINES"][CLAIM_PIPELINE] = 250
