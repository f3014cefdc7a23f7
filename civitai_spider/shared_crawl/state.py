"""The Redis data of one shared crawl, and the atomic steps the workers take on it.

Keys, all under ``civitai:<CIVITAI_REDIS_CRAWL>:``:

========================  ==================================================================
``requests``              scrapy-redis's request queue (a sorted set of pickled page requests)
``dupefilter``            scrapy-redis's dupefilter (fingerprints of every page request seen)
``leases`` / ``owners``   hashes: lease id -> the taken page request / the worker holding it
``lease_seq``             the last lease id given
``worker:<id>``           one key per live worker, expiring ``CIVITAI_REDIS_WORKER_TIMEOUT``
                          seconds after its last heartbeat
``claims``                hash: image id -> the worker storing it now
``done``                  set: image ids stored in this crawl
``info``                  hash: the crawl's arguments, state (running/finished), times
``chains``                hash: chain key -> how it ended
========================  ==================================================================

Every step that moves a page into the queue or between the queue and a lease
is one Lua script, so a worker killed at any instant leaves each page either
queued or leased (or not yet seen, to be asked for again by whoever re-walks the
page before it).
Scripts read worker keys they compute, so this needs a plain Redis (or a
primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError
from scrapy_redis import defaults as redis_defaults
from scrapy_redis.connection import get_redis

from civitai_spider.config import CivitaiConfig, choices
from civitai_spider.shared_crawl.urls import redacted

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

START_MODES = choices("CIVITAI_REDIS_START")


class SharedCrawlError(Exception):
    """The shared crawl cannot be used as asked; ``reason`` is the close reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class CrawlKeys:
    prefix: str

    @classmethod
    def named(cls, crawl: str) -> CrawlKeys:
        return cls(f"civitai:{crawl}")

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        return f"{self.prefix}:{name}"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}"


# KEYS: requests, leases, owners, lease_seq. ARGV: worker id.
# The page with the lowest score (scrapy-redis's PriorityQueue order) becomes a lease of ARGV[1].
POP_SCRIPT = """
local got = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #got == 0 then return false end
redis.call('ZREM', KEYS[1], got[1])
local lease = tostring(redis.call('INCR', KEYS[4]))
redis.call('HSET', KEYS[2], lease, got[1])
redis.call('HSET', KEYS[3], lease, ARGV[1])
return {lease, got[1]}
"""

# KEYS: dupefilter, requests. ARGV: request fingerprint, request data, score.
# A new page request: queued unless seen before, and marked seen, in one step. As two
# commands (scrapy-redis's request_seen, then its queue push), a worker killed between
# them leaves the page seen but never queued: the re-walk of its previous page finds
# it a duplicate, and the rest of the chain is lost.
ENQUEUE_SCRIPT = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('SADD', KEYS[1], ARGV[1])
return 1
"""

# KEYS: requests, leases, owners. ARGV: lease id, request data, score.
# A leased page goes back to the queue as a new request (a retry): pushed, then the lease dropped.
REQUEUE_SCRIPT = """
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
"""

# KEYS: requests, leases, owners. ARGV: worker key prefix, worker id ('' = every dead worker).
# Leases of the given worker (or of every worker whose key has expired) go back to the queue.
REAP_SCRIPT = """
local owners = redis.call('HGETALL', KEYS[3])
local moved = 0
for i = 1, #owners, 2 do
  local lease, owner = owners[i], owners[i + 1]
  local take
  if ARGV[2] ~= '' then
    take = owner == ARGV[2]
  else
    take = redis.call('EXISTS', ARGV[1] .. owner) == 0
  end
  if take then
    local data = redis.call('HGET', KEYS[2], lease)
    if data then redis.call('ZADD', KEYS[1], 0, data) end
    redis.call('HDEL', KEYS[2], lease)
    redis.call('HDEL', KEYS[3], lease)
    moved = moved + 1
  end
end
return moved
"""

# KEYS: done, claims. ARGV: image id, worker id, worker key prefix.
# 'done' (stored already in this crawl), 'taken' (a live worker is storing it) or 'mine'.
CLAIM_SCRIPT = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 'done' end
local owner = redis.call('HGET', KEYS[2], ARGV[1])
if owner and owner ~= ARGV[2] and redis.call('EXISTS', ARGV[3] .. owner) == 1 then return 'taken' end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if owner and owner ~= ARGV[2] then return 'mine_from_dead' end
return 'mine'
"""


# KEYS: info, requests, leases, dupefilter, owners, claims, done, chains. ARGV: mode ('auto',
# 'new', 'restart'), arguments fingerprint, arguments, now, worker id, then (fingerprint, request
# data, score) for each first page. Starting a crawl and queuing its first pages is one step, so
# that "nothing queued and nothing leased" always means finished. With 'auto' the step also
# decides, so that workers started at the same instant agree: 'join' an unfinished crawl with
# these arguments ('other' if it has other arguments), or start one: 'start' (none yet) or
# 'anew' (the last one is finished). 'new' refuses an unfinished crawl ('exists').
START_SCRIPT = """
local fingerprint = redis.call('HGET', KEYS[1], 'fingerprint')
local pending = redis.call('ZCARD', KEYS[2]) + redis.call('HLEN', KEYS[3])
local outcome = 'start'
if fingerprint then
  outcome = 'anew'
  if pending > 0 and ARGV[1] == 'auto' then
    if fingerprint ~= ARGV[2] then return 'other' end
    return 'join'
  end
  if pending > 0 and ARGV[1] == 'new' then return 'exists' end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8])
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[2], 'arguments', ARGV[3], 'state', 'running',
           'started', ARGV[4], 'started_by', ARGV[5])
for i = 6, #ARGV, 3 do
  redis.call('ZADD', KEYS[2], ARGV[i + 2], ARGV[i + 1])
  if ARGV[i] ~= '' then redis.call('SADD', KEYS[4], ARGV[i]) end
end
return outcome
"""


class SharedCrawl:
    """One worker's handle on the shared crawl: its Redis connection, its id and its leases."""

    def __init__(self, server: Any, crawl: str, worker: str, worker_timeout: float, url: str = "") -> None:
        self.server = server
        self.crawl = crawl
        self.keys = CrawlKeys.named(crawl)
        self.worker = worker
        self.worker_timeout = worker_timeout
        self.url = url
        self.leases: set[str] = set()  # pages this worker holds now
        self.joined = False  # open() succeeded
        self.refusal = ""  # open() failed: the close reason
        # Writes that failed while Redis was away, done again by flush(). A page whose next
        # page is not queued yet stays leased ("pinned") until it is: if this worker dies
        # first, the page goes back to the queue and whoever walks it queues the next one.
        self._unpushed: deque[tuple[str, bytes, float, str | None]] = deque()  # (fingerprint, data, score, from lease)
        self._unrequeued: deque[tuple[str, bytes, float]] = deque()  # (lease, data, score): retries
        self._pinned: dict[str, int] = {}  # lease -> its next pages not queued yet
        self._unreleased: set[str] = set()  # leases to release once nothing pins them
        self._enqueue = server.register_script(ENQUEUE_SCRIPT)
        self._pop = server.register_script(POP_SCRIPT)
        self._requeue = server.register_script(REQUEUE_SCRIPT)
        self._reap = server.register_script(REAP_SCRIPT)
        self._claim = server.register_script(CLAIM_SCRIPT)
        self._start = server.register_script(START_SCRIPT)

    @classmethod
    def for_crawler(cls, crawler: Crawler) -> SharedCrawl | None:
        """The crawler's one SharedCrawl (made on first use), or None outside Redis mode."""
        shared = getattr(crawler, "civitai_shared_crawl", None)
        if shared is not None:
            return shared
        config = CivitaiConfig.of(crawler)
        if not config.redis_url:
            return None
        worker = config.redis_worker or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        # scrapy-redis's connection defaults and REDIS_PARAMS, with our URL.
        params = {**redis_defaults.REDIS_PARAMS, **crawler.settings.getdict("REDIS_PARAMS"), "url": config.redis_url}
        shared = cls(
            get_redis(**params),
            crawl=config.redis_crawl,
            worker=worker,
            worker_timeout=config.redis_worker_timeout,
            url=config.redis_url,
        )
        crawler.civitai_shared_crawl = shared  # type: ignore[attr-defined]
        return shared

    # --- the crawl as a whole ----------------------------------------------------

    def open(self, mode: str, fingerprint: str, description: str,
             seeds: Sequence[tuple[str, bytes, float]] = ()) -> bool:
        """Start or join the crawl as ``mode`` says; True if this worker started it.

        ``auto`` joins an unfinished crawl with the same arguments and starts one
        otherwise (none yet, or the last one finished); ``new`` starts one (refused
        while one is unfinished), ``restart`` discards any and starts one, ``resume``
        only joins. Starting queues ``seeds``, the first page of each chain as
        (fingerprint, request data, score), in the same step. Raises
        ``SharedCrawlError`` when the crawl cannot be used as asked.
        """
        if mode not in START_MODES:
            raise SharedCrawlError("redis_bad_start", f"CIVITAI_REDIS_START must be one of {', '.join(START_MODES)}, got {mode!r}")
        keys = self.keys
        try:
            self.server.ping()
        except RedisError as exc:  # ConnectionError, TimeoutError, AuthenticationError...
            raise SharedCrawlError("redis_unreachable", f"Cannot reach Redis at {redacted(self.url)}: {exc}") from None
        self.heartbeat()
        before = self.info()
        if mode == "resume":
            if not before:
                raise SharedCrawlError(
                    "redis_no_crawl",
                    f"No crawl named {self.crawl!r} in Redis at {redacted(self.url)}: start one with "
                    "-s CIVITAI_REDIS_START=auto (or new)",
                )
            if before.get("fingerprint") != fingerprint:
                raise SharedCrawlError(
                    "redis_other_arguments",
                    f"Crawl {self.crawl!r} in Redis was started with other arguments ({before.get('arguments')}); "
                    f"this worker has {description}. Use the same arguments, or another CIVITAI_REDIS_CRAWL name",
                )
            if not any(self.pending()):
                logger.info("Crawl %r finished at %s: nothing to do (start another with -s CIVITAI_REDIS_START=auto)",
                            self.crawl, before.get("finished"))
            else:
                self._log_joining()
            self.joined = True
            return False
        args: list[Any] = [mode, fingerprint, description, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), self.worker]
        for seed in seeds:
            args.extend(seed)
        got = self._start(keys=[keys.info, keys.requests, keys.leases, keys.dupefilter, keys.owners, keys.claims,
                                keys.done, keys.chains], args=args)
        outcome = got.decode() if isinstance(got, bytes) else str(got)
        if outcome == "other":
            raise SharedCrawlError(
                "redis_other_arguments",
                f"Crawl {self.crawl!r} in Redis is unfinished and has other arguments ({self.info().get('arguments')}); "
                f"this worker has {description}. Use the same arguments, another CIVITAI_REDIS_CRAWL name, or "
                "-s CIVITAI_REDIS_START=restart to discard it",
            )
        if outcome == "exists":
            queued, leased = self.pending()
            raise SharedCrawlError(
                "redis_crawl_exists",
                f"Crawl {self.crawl!r} in Redis is not finished ({queued} pages queued, {leased} being "
                "worked on): join it with -s CIVITAI_REDIS_START=auto (or resume), or discard it with "
                "-s CIVITAI_REDIS_START=restart",
            )
        self.joined = True
        if outcome == "join":
            self._log_joining()
            return False
        earlier = ""
        if outcome == "anew":
            earlier = (f"; the one started {before.get('started')} "
                       + (f"had finished at {before.get('finished')}" if before.get("finished") else "was discarded"))
        logger.info("Started crawl %r in Redis at %s (%s)%s", self.crawl, redacted(self.url), mode, earlier)
        return True

    def info(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.server.hgetall(self.keys.info).items()}

    def _log_joining(self) -> None:
        info = self.info()
        others = [w for w in self.live_workers() if w != self.worker]
        logger.info(
            "Joining crawl %r (started %s by %s): %d pages queued, %d being worked on; other live workers: %s",
            self.crawl, info.get("started"), info.get("started_by"), *self.pending(), ", ".join(others) or "none",
        )

    def pending(self) -> tuple[int, int]:
        """(pages queued, pages leased), read together."""
        pipe = self.server.pipeline()
        pipe.zcard(self.keys.requests)
        pipe.hlen(self.keys.leases)
        queued, leased = pipe.execute()
        return int(queued), int(leased)

    def finished(self) -> bool:
        """Nothing queued and nothing leased: no page is left and none can appear."""
        return self.pending() == (0, 0)

    def mark_finished(self) -> bool:
        """Record the crawl as finished; True for the worker that recorded it first."""
        first = self.server.hsetnx(self.keys.info, "finished", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self.server.hset(self.keys.info, "state", "finished")
        return bool(first)

    def set_chain(self, chain: str, status: str) -> None:
        self.server.hset(self.keys.chains, chain, status)

    def chains(self) -> dict[str, str]:
        """Each chain's end, as the workers recorded it."""
        return {k.decode(): v.decode() for k, v in self.server.hgetall(self.keys.chains).items()}

    # --- this worker -----------------------------------------------------------------

    def heartbeat(self) -> None:
        self.server.set(self.keys.worker(self.worker), str(time.time()), px=int(self.worker_timeout * 1000))

    def leave(self) -> None:
        self.server.delete(self.keys.worker(self.worker))

    def live_workers(self) -> list[str]:
        prefix = self.keys.worker("")
        return sorted(k.decode()[len(prefix):] for k in self.server.scan_iter(match=prefix + "*", count=1000))

    # --- pages -------------------------------------------------------------------------

    def enqueue(self, fingerprint: str, data: bytes, score: float) -> bool:
        """Queue a new page request unless one with this fingerprint was seen; True if queued.
        An empty fingerprint (a ``dont_filter`` request) is queued without the dupefilter."""
        if not fingerprint:
            self.server.zadd(self.keys.requests, {data: score})
            return True
        return bool(self._enqueue(keys=[self.keys.dupefilter, self.keys.requests], args=[fingerprint, data, score]))

    def hold_push(self, fingerprint: str, data: bytes, score: float, from_lease: str | None) -> None:
        """Redis is away: queue this new page request later (``flush``), its page kept leased till then."""
        self._unpushed.append((fingerprint, data, score, from_lease))
        if from_lease is not None:
            self._pinned[from_lease] = self._pinned.get(from_lease, 0) + 1

    def hold_requeue(self, lease: str, data: bytes, score: float) -> None:
        """Redis is away: put this retry of a leased page in the queue later (``flush``)."""
        self._unrequeued.append((lease, data, score))

    def held(self) -> int:
        """Writes waiting for Redis to come back."""
        return len(self._unpushed) + len(self._unrequeued) + len(self._unreleased)

    def flush(self) -> None:
        """Do the writes that failed while Redis was away, oldest first; raises ``RedisError``
        (and keeps the rest) if it is still away."""
        while self._unpushed:
            fingerprint, data, score, from_lease = self._unpushed[0]
            self.enqueue(fingerprint, data, score)
            self._unpushed.popleft()
            if from_lease is not None:
                self._pinned[from_lease] -= 1
                if not self._pinned[from_lease]:
                    del self._pinned[from_lease]
        while self._unrequeued:
            self.requeue(*self._unrequeued[0])
            self._unrequeued.popleft()
        for lease in list(self._unreleased):
            if lease not in self._pinned:
                self._release_now(lease)
                self._unreleased.discard(lease)

    def take_page(self) -> tuple[str, bytes] | None:
        """The next queued page, leased to this worker: (lease id, request data), or None."""
        got = self._pop(keys=[self.keys.requests, self.keys.leases, self.keys.owners, self.keys.lease_seq], args=[self.worker])
        if not got:
            return None
        lease = got[0].decode()
        self.leases.add(lease)
        return lease, got[1]

    def release(self, lease: str) -> bool:
        """The page is through: every image stored or dropped for good, its next page queued.

        False if that has to wait: its next page is not queued yet, or Redis is away
        (``flush`` releases it later; if this worker dies first, the page is walked again).
        """
        if lease in self._pinned:
            self._unreleased.add(lease)
            return False
        try:
            self._release_now(lease)
        except RedisError:
            self._unreleased.add(lease)
            return False
        return True

    def _release_now(self, lease: str) -> None:
        pipe = self.server.pipeline(transaction=True)
        pipe.hdel(self.keys.leases, lease)
        pipe.hdel(self.keys.owners, lease)
        pipe.execute()
        self.leases.discard(lease)

    def requeue(self, lease: str, data: bytes, score: float) -> None:
        """A leased page asked for again (a retry): queued as ``data``, and the lease dropped, at once."""
        self._requeue(keys=[self.keys.requests, self.keys.leases, self.keys.owners], args=[lease, data, score])
        self.leases.discard(lease)

    def reap_dead(self) -> int:
        """Put back in the queue the pages of every worker whose heartbeat has expired."""
        return int(self._reap(keys=[self.keys.requests, self.keys.leases, self.keys.owners], args=[self.keys.worker(""), ""]))

    def requeue_mine(self) -> int:
        """Put back in the queue every page this worker still holds (it is stopping), after
        the writes held while Redis was away (``flush``; what still fails is lost with the
        leases' pages put back, which are walked again)."""
        self.flush()
        moved = int(self._reap(keys=[self.keys.requests, self.keys.leases, self.keys.owners], args=[self.keys.worker(""), self.worker]))
        self.leases.clear()
        return moved

    # --- images ------------------------------------------------------------------------

    def claim(self, image_id: int) -> str:
        """'done', 'taken' (a live worker has it), 'mine', or 'mine_from_dead' (taken over)."""
        got = self._claim(keys=[self.keys.done, self.keys.claims], args=[image_id, self.worker, self.keys.worker("")])
        return got.decode() if isinstance(got, bytes) else str(got)

    def mark_done(self, image_id: int) -> None:
        pipe = self.server.pipeline(transaction=True)
        pipe.sadd(self.keys.done, image_id)
        pipe.hdel(self.keys.claims, image_id)
        pipe.execute()

    def unclaim(self, image_id: int) -> None:
        self.server.hdel(self.keys.claims, image_id)


def arguments_fingerprint(description: str) -> str:
    return hashlib.sha256(description.encode()).hexdigest()[:16]
