"""Many workers on one crawl, through scrapy-redis (``CIVITAI_REDIS_URL``).

With ``CIVITAI_REDIS_URL`` set (a setting, or the environment variable of that
name), the project's add-on (``civitai_spider.addon``) switches the crawl to
scrapy-redis's scheduler and dupefilter and adds this package's parts
(``addon.shared_settings``), so any number of ``scrapy crawl civitai`` processes,
on any number of machines, share one crawl:

- the cursor-page requests live in scrapy-redis's request queue (a sorted set);
  whichever worker is free takes the next page, parses it, pushes the page after
  it, and downloads that page's images itself (image requests never go through
  the scheduler);
- scrapy-redis's dupefilter sees every page request: a page asked for twice (a
  page re-walked after a worker died, a cursor loop) is dropped there;
- a taken page is *leased* to its worker (``scheduler.LeasingScheduler``): it
  stays in Redis until every image of the page has left the pipelines, and is
  put back in the queue if its worker dies (no heartbeat for
  ``CIVITAI_REDIS_WORKER_TIMEOUT`` seconds) or stops early (Ctrl-C);
- image ids are claimed in Redis before download and marked done in Redis once
  stored (``claims.ClaimPipeline``), so no image is stored twice by two workers;
  the store's ``downloaded_ids.txt`` is written as in a single-process crawl.

``state.SharedCrawl`` is the Redis data of one crawl, ``workers.WorkerLoop`` the
per-worker heartbeat, leases, reaping and closing, ``scheduler`` the leasing
scheduler, ``leases.LeaseMiddleware`` ties a page's next page to its lease. The
spider and the pipelines know nothing of Redis: they send signals
(``civitai_spider.signals``) this package listens to.
"""
