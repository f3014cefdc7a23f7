"""Settings of the civitai-spider project: every setting of ours, with its default.

Override any of them on the command line (``-s NAME=VALUE``), in Scrapyd's
``schedule.json`` (``setting=NAME=VALUE``) or in Zyte's job settings.
"""

BOT_NAME = "civitai_spider"
SPIDER_MODULES = ["civitai_spider.spiders"]
NEWSPIDER_MODULE = "civitai_spider.spiders"
# Our `scrapy crawl` checks spider arguments before the crawl starts (exit 2 on a bad one).
COMMANDS_MODULE = "civitai_spider.commands"

# --- The Civitai API --------------------------------------------------------

# The images endpoint. civitai.com is the SFW site; https://civitai.red/api/v1/images
# the NSFW one (README "Which site"). Point it at a local stand-in for offline runs and tests.
CIVITAI_API_URL = "https://civitai.com/api/v1/images"
# API key; when empty, taken from the CIVITAI_API_KEY environment variable.
# Sent only on API page requests (never on image requests, whatever their host),
# as "Authorization: Bearer", at download time.
CIVITAI_API_KEY = ""
# Items per API page (1..200; the API allows up to 200).
CIVITAI_PAGE_LIMIT = 200
# Early stop: with sort="Most Reactions" (or "Most Comments") and min_* thresholds, a
# chain stops after the first page whose last image is below what the thresholds
# need: the sort puts every later image below it too. Never for a query Civitai
# answers from its database (model_id without model_version_id), where the sort is
# newest-first, nor for a chain whose page comes back out of order.
CIVITAI_EARLY_STOP = True
# Update runs (-a update=true -a sort=Newest): a chain stops once this many images in a
# row were seen by earlier update runs of the same query (a full page by default: an image
# posted late, with an old id, among them starts the count again).
CIVITAI_UPDATE_STOP_AFTER = 200

# With -s JOBDIR=DIR: how often (seconds, at most) the chains' resume positions are
# written to DIR/spider.state while the crawl runs (also at close). The scheduler's
# queue stays in memory (the chains resume from their positions): the project's add-on
# picks the scheduler (civitai_spider/addon.py).
CIVITAI_STATE_SAVE_INTERVAL = 1.0

# Image URLs are fetched only from these hosts and their subdomains (image.civitai.com,
# image-b2.civitai.com, image.civitai.red...), and from the host of CIVITAI_API_URL.
# An empty list allows any host except private, loopback and link-local addresses
# and "localhost" (the API's host included).
CIVITAI_IMAGE_HOSTS = ["civitai.com", "civitai.red"]
# API items whose meta nests deeper than this are dropped (api/items/invalid/meta_too_deep).
CIVITAI_META_MAX_DEPTH = 64

# --- Retries (Scrapy's RetryMiddleware, with backoff) -----------------------

RETRY_TIMES = 5
RETRY_HTTP_CODES = [500, 502, 503, 504, 520, 521, 522, 524, 408, 429]
# Backoff before retry number n: min(CIVITAI_RETRY_BACKOFF_MAX,
# CIVITAI_RETRY_BACKOFF_BASE * 2 ** (n - 1)), or the server's Retry-After when
# it asks for longer (capped at CIVITAI_RETRY_AFTER_MAX).
CIVITAI_RETRY_BACKOFF_BASE = 1.0
CIVITAI_RETRY_BACKOFF_MAX = 30.0
CIVITAI_RETRY_AFTER_MAX = 120.0

# --- Politeness and concurrency: one API host, one image host ---------------

USER_AGENT = "civitai-spider/0.1 (Scrapy-based harvester of Civitai images and their generation metadata)"
ROBOTSTXT_OBEY = False  # a JSON API and a CDN: there is no robots.txt to obey
CONCURRENT_REQUESTS = 32
CONCURRENT_REQUESTS_PER_DOMAIN = 16
DOWNLOAD_TIMEOUT = 60
# API pages go through their own download slot (one chain asks for one page at a time).
DOWNLOAD_SLOTS = {"civitai-api": {"concurrency": 8, "delay": 0}}
# Images downloading or being processed at once (0: CONCURRENT_REQUESTS - 8). Kept
# below CONCURRENT_REQUESTS so that image downloads never hold up the API walk.
CIVITAI_IMAGES_IN_FLIGHT = 0
COOKIES_ENABLED = False
# HTTP(S) downloads use Scrapy's default (Twisted) handler. Scrapy 2.19 also ships an
# aiohttp one (experimental; needs the asyncio reactor set below) whose C HTTP parser
# takes about a sixth off the reactor thread's time per image (bench/README.md):
#   -s 'DOWNLOAD_HANDLERS={"http": "scrapy.core.downloader.handlers._aiohttp.AiohttpDownloadHandler",
#                          "https": "scrapy.core.downloader.handlers._aiohttp.AiohttpDownloadHandler"}'
# Size caps, timeouts and data loss behave the same with it, but aiohttp silently resends
# any GET whose connection drops, once, without backoff and outside the retry stats and
# RETRY_TIMES; so it is not the default.
DEFAULT_REQUEST_HEADERS = {"Accept": "application/json, image/*;q=0.9, */*;q=0.8", "Accept-Language": "en"}
TELNETCONSOLE_ENABLED = False
# Scrapy 2.19's remote-control extension runs Python code sent to it over HTTP:
# an unattended scraper must not carry it.
REMOTE_CONTROL_ENABLED = False

DOWNLOADER_MIDDLEWARES = {
    "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
    "civitai_spider.middlewares.BackoffRetryMiddleware": 550,
    # Late in process_request (close to the network), early in process_response:
    # the key is on the request only while it is on the wire.
    "civitai_spider.middlewares.ApiKeyMiddleware": 900,
}

ITEM_PIPELINES = {
    "civitai_spider.pipelines.filter.ReactionFilterPipeline": 100,
    "civitai_spider.pipelines.seen.DoneIdsPipeline": 200,
    "civitai_spider.pipelines.images.CivitaiImagesPipeline": 300,
    "civitai_spider.pipelines.metadata.MetadataPipeline": 400,
}
# Dropped items are logged in one line (id, reason, url), not as a full item dump.
LOG_FORMATTER = "civitai_spider.logformatter.CivitaiLogFormatter"

# --- Images -------------------------------------------------------------------

# Where images (and their metadata files) go: a path, file://, s3:// or gs://.
# The image of item N is stored as N.jpg / N.png / N.webp (N.mp4 / N.webm for videos).
IMAGES_STORE = "civitai-images"
# "original": keep JPEG (RGB/L), PNG and still unrotated WebP byte for byte, convert the
# rest (alpha -> PNG, else JPEG); "jpeg" or "png": one format for everything.
CIVITAI_IMAGE_FORMAT = "original"
# JPEG quality when an image has to be (re-)encoded.
CIVITAI_JPEG_QUALITY = 95
# Decompression-bomb limit in pixels (Pillow's default). Over it: kept, with a
# warning and a stat; over twice it: refused. 0 turns the check off.
CIVITAI_MAX_IMAGE_PIXELS = 89_478_485
# A download over this many bytes is abandoned as it arrives (not held in memory).
CIVITAI_IMAGE_MAX_BYTES = 256 * 1024 * 1024
# After this many store writes failing in a row (disk full, permission denied), the
# crawl stops (close reason "store_failing", exit status 1). 0: never.
CIVITAI_STORE_ERRORS_MAX = 5
# With a local store, images are checked or converted and files written by this many
# child processes (the crawl's process only downloads): -1 = the number of CPUs, at
# most 4; 0 = none, in threads of the crawl's process (as for s3:// and gs://).
CIVITAI_STORE_PROCESSES = -1
# A store process holding one job longer than this (seconds) is killed and replaced;
# that image is tried once more, then recorded as failed (store_process_died). 0: never.
CIVITAI_STORE_PROCESS_TIMEOUT = 300.0
# A local store's .part files (left by a killed run) older than this many seconds are
# removed when a crawl opens the store; the shared-crawl add-on sets 3600, since other
# workers may be writing theirs to the same folder.
CIVITAI_PARTIAL_FILES_MIN_AGE = 0.0
# Scrapy's own image settings keep working: IMAGES_MIN_WIDTH, IMAGES_MIN_HEIGHT,
# IMAGES_THUMBS ({"small": (256, 256)} -> thumbs/small/N.jpg).

# --- Records: downloaded_ids.txt and failures.jsonl at the top of IMAGES_STORE ---
# On a path each line is appended at once; on s3:// and gs:// a run writes segment
# objects <name>.d/<UTC start>-<random>-<seq> instead (read back with <name> itself).

# s3:// / gs://: write a segment as soon as this many lines are waiting...
CIVITAI_RECORD_FLUSH_LINES = 500
# ...or this many seconds after the first waiting line (0: no time limit), and at close.
CIVITAI_RECORD_FLUSH_SECONDS = 30.0

# --- Metadata -------------------------------------------------------------------

# Beside N.jpg: N_pos-prompt.txt, N_neg-prompt.txt, N_meta.json. With this on,
# also N.txt: the prompt without <lora:...> tags, as a caption for training tools.
CIVITAI_CAPTION_FILES = False
# An image whose metadata files would exceed this many bytes is not stored (a hostile
# or broken meta); counted as metadata/too_large.
CIVITAI_META_MAX_BYTES = 16 * 1024 * 1024

# --- The run experience -------------------------------------------------------

EXTENSIONS = {
    # The crawl's one storage (images, metadata files, records), picked by IMAGES_STORE's scheme.
    "civitai_spider.storage.Storage": 5,
    # Replaced by civitai_spider.extensions.chain_state.ChainState (the add-on's, with JOBDIR),
    # which writes the same file atomically (this one truncates it, then pickles into it).
    "scrapy.extensions.spiderstate.SpiderState": None,
    # Update runs (-a update=true): what earlier ones saw, and what this one sees.
    "civitai_spider.extensions.update_runs.UpdateRuns": 50,
    "civitai_spider.extensions.fieldstats.CivitaiFieldStats": 10,
    "civitai_spider.extensions.progress.Progress": 500,
    "civitai_spider.extensions.summary.RunSummary": 600,
}
# Field coverage of the items (scrapy-fieldstats), in the closing log and in the
# stats as "fields_coverage"; counted down to this many levels (item fields, meta keys).
FIELDSTATS_ENABLED = True
FIELDSTATS_MAX_DEPTH = 2
# "auto": a live line when stderr is a terminal, else a log line every
# CIVITAI_PROGRESS_INTERVAL seconds; "bar", "log" or "off".
CIVITAI_PROGRESS = "auto"
CIVITAI_PROGRESS_INTERVAL = 60.0

# --- Many workers on one crawl (scrapy-redis) ---------------------------------
# See civitai_spider/shared_crawl/ and README "Many workers". Off unless a Redis
# URL is given (here, with -s, or in the CIVITAI_REDIS_URL environment variable,
# which keeps a password out of Scrapyd's job list).
# redis://[:password@]host:6379/0; "" (and no environment variable): one process.
CIVITAI_REDIS_URL = ""
# The crawl's name in Redis (keys civitai:<name>:*): one Redis can hold several crawls.
CIVITAI_REDIS_CRAWL = "civitai"
# "auto": start the crawl, or join it if it is unfinished: every worker can be started
# the same way, at once or later (an unfinished crawl with other arguments is refused,
# a finished one starts anew). Explicit: "new" starts it (refused while one of that
# name is unfinished); "resume" joins or resumes it (refused if there is none, or it
# has other arguments); "restart" discards an unfinished one and starts anew.
CIVITAI_REDIS_START = "auto"
# "resume" with no crawl of that name yet waits this many seconds for a "new" worker
# to start it (workers started together), then refuses.
CIVITAI_REDIS_JOIN_WAIT = 60.0
# This worker's name in Redis ("": host-pid-random).
CIVITAI_REDIS_WORKER = ""
# A worker not heard from for this many seconds is dead: its pages go back to the queue.
CIVITAI_REDIS_WORKER_TIMEOUT = 30.0
# How often a worker with room for another page looks for a queued one (seconds): a page
# another worker queued waits at most this long.
CIVITAI_REDIS_POLL_INTERVAL = 0.1
# Pages a worker works on at once (each with its images).
CIVITAI_REDIS_PAGES_PER_WORKER = 2

# --- Twisted / Scrapy plumbing ----------------------------------------------

# The project's add-on (civitai_spider/addon.py): the scheduler and JOBDIR chain state
# of a one-process crawl, or the shared crawl's wiring with CIVITAI_REDIS_URL.
ADDONS = {"civitai_spider.addon.CivitaiAddon": 0}

TWISTED_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"
FEED_EXPORT_ENCODING = "utf-8"
LOG_LEVEL = "INFO"
