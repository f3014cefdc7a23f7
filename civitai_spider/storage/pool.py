"""Store processes: downloaded images checked (or converted) and files written beside the crawl.

With a local store, the crawl's own process only downloads; every image's check
or conversion, its writes, and the metadata files' writes are done by
``CIVITAI_STORE_PROCESSES`` child processes (``civitai_spider.storage.worker``). In
the crawl's process they would share one interpreter lock with Scrapy: measured
on 2 cores, worker threads doing this work made the reactor thread wait for the
lock tens of thousands of times a run (most of the run's system CPU), and the
crawl used 1.3 of the 2 cores. A process of its own uses the other core.

Jobs go to the child with the fewest waiting; each child answers in order. When a
child dies (or holds a job longer than ``CIVITAI_STORE_PROCESS_TIMEOUT`` and is
killed), a new one is started and the jobs it held are given to the pool again:
the one it was working on is tried once more, and if it kills a second child it
fails (``StoreProcessFailed``: the images pipeline records the image as failed,
``store_process_died``, and the next run tries it again). A hostile file that
crashes a decoder costs one image, not the crawl. If no child can be started, the
pool says why and ``processes.ProcessStorage`` does the work in threads of the
crawl's process instead. Messages are JSON (``worker``), never pickles.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import mmap
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from civitai_spider.imaging import ImagePolicy, ImageRejected, StoredImage
from civitai_spider.storage.base import StoreWriteError
from civitai_spider.storage.metadata_files import MetadataTooLarge
from civitai_spider.storage.worker import FRAME, decode_header, encode_header

if TYPE_CHECKING:
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)

CHILD_CODE = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "from civitai_spider.storage.worker import main; sys.exit(main())"
)
PIPE_SIZE = 1 << 20  # asked for on the pipe to a child: a whole image in one write, mostly
RING_SIZE = 8 << 20  # bytes of memory shared with each child for the images it has in hand
STDERR_LINES = 20  # kept per child, quoted when it dies
START_TIMEOUT = 60.0  # for a child to import and answer "ready"
STOP_TIMEOUT = 10.0  # for a child to finish after its input is closed
WATCH_INTERVAL = 5.0  # how often (at most) the oldest job of each child is checked against the timeout


class StoreProcessFailed(Exception):
    """A job that no store process could finish (it died with it twice), or no process to run it."""


def rebuild_error(described: list[Any]) -> Exception:
    """An exception like the one a store process met (``worker.describe_error``)."""
    name, errno, message, filename = described
    if errno is not None:
        exc: Exception = OSError(errno, message, filename) if filename else OSError(errno, message)
        return exc
    return RuntimeError(f"{name}: {message}")


class _Ring:
    """Memory shared with one child (a ``memfd``) that image bytes are copied into, instead of
    being written through its pipe: one ``memcpy`` instead of a copy into the kernel and
    another out of it. Regions are taken in order and given back in order (the child
    answers its jobs in order); a job that does not fit goes through the pipe."""

    def __init__(self, size: int) -> None:
        self.fd = os.memfd_create("civitai-store-ring")
        try:
            os.ftruncate(self.fd, size)
            self.map = mmap.mmap(self.fd, size)
        except BaseException:
            os.close(self.fd)
            raise
        self.size = size
        self.regions: deque[int] = deque()  # start of each region in use, oldest first
        self.head = 0  # where the next region starts

    def put(self, data: bytes) -> tuple[int, int] | None:
        """Copy ``data`` in; (offset, length), or None when it does not fit now."""
        n = len(data)
        if not n or n >= self.size:
            return None
        if not self.regions:
            offset = 0
        elif self.head >= (tail := self.regions[0]):  # free: [head, size) and [0, tail)
            if self.size - self.head >= n:
                offset = self.head
            elif tail > n:
                offset = 0
            else:
                return None
        elif tail - self.head > n:  # free: [head, tail); never filled to head == tail
            offset = self.head
        else:
            return None
        self.map[offset:offset + n] = data
        self.regions.append(offset)
        self.head = offset + n
        return offset, n

    def release(self) -> None:
        """Give back the oldest region."""
        self.regions.popleft()

    def close(self) -> None:
        if self.fd < 0:
            return
        self.map.close()
        os.close(self.fd)
        self.fd = -1


@dataclass
class _Job:
    header: list[Any]
    data: bytes
    future: asyncio.Future[list[Any]]
    tries: int = 0
    started_at: float = 0.0  # when the child got to it (answered the job before it)
    in_ring: bool = False  # its bytes are in the child's ring, not in its frame


@dataclass
class _Child:
    proc: asyncio.subprocess.Process
    pending: deque[_Job] = field(default_factory=deque)
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_LINES))
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    ring: _Ring | None = None
    ready: bool = False
    killed_for: str = ""  # why we killed it, if we did


class StorePool:
    """``size`` store processes writing under ``basedir``; ``timeout``: seconds a job may take (0: no limit)."""

    def __init__(self, basedir: str, size: int, timeout: float, stats: StatsCollector) -> None:
        self.stats = stats
        self.size = size
        self.basedir = basedir
        self.timeout = timeout
        self.children: list[_Child] = []
        self.closing = False
        self.broken = False  # no child could be started: the pipelines use threads
        self._starting: asyncio.Task[None] | None = None
        self._restarting = 0  # children being started in place of dead ones
        self._changed = asyncio.Event()  # a child became ready, or the pool broke
        self._watch: asyncio.Task[None] | None = None
        self._policies: dict[ImagePolicy, dict[str, Any]] = {}

    @property
    def usable(self) -> bool:
        return not self.broken and not self.closing

    # --- jobs ---------------------------------------------------------------------

    async def store_image(
        self, data: bytes, stem: str, thumb_paths: dict[str, str], policy: ImagePolicy
    ) -> tuple[StoredImage, str, Exception | None]:
        """Check or convert ``data`` and write it as ``<stem>.<ext>`` (and its thumbnails).

        Returns (what was stored, its path, None), or (what would have been, its path,
        the store's error); raises ``ImageRejected`` for bytes that are not stored and
        ``StoreProcessFailed``.
        """
        encoded = self._policies.get(policy)
        if encoded is None:  # one policy a crawl: turned into JSON-ready data once, not per image
            encoded = self._policies[policy] = policy.to_json()
        answer = await self._run(["image", stem, thumb_paths, encoded], data)
        kind = answer[0]
        if kind in ("stored", "store_error"):
            stored = StoredImage.from_summary(answer[1])
            return stored, f"{stem}.{stored.ext}", rebuild_error(answer[2]) if kind == "store_error" else None
        if kind == "rejected":
            raise ImageRejected(answer[1], answer[2])
        raise StoreProcessFailed(f"store process error: {answer[1]}")

    async def write_metadata(
        self, stem: str, meta: Any, captions: bool, max_bytes: int, record: dict[str, Any] | None = None
    ) -> tuple[int, int]:
        """Build an image's metadata files (``metadata_files``) and write them atomically.

        Returns (files, bytes) written; raises ``MetadataTooLarge`` over ``max_bytes``
        (nothing written), ``StoreWriteError``, or ``StoreProcessFailed``.
        """
        answer = await self._run(["metadata", stem, meta, captions, max_bytes, record])
        if answer[0] == "written":
            return answer[1], answer[2]
        if answer[0] == "too_large":
            raise MetadataTooLarge(answer[1])
        if answer[0] == "store_error":
            raise StoreWriteError(rebuild_error(answer[2]))
        raise StoreProcessFailed(f"store process error: {answer[1]}")

    async def _run(self, header: list[Any], data: bytes = b"") -> list[Any]:
        await self._started()
        if self.broken:
            raise StoreProcessFailed("no store process could be started (see the log)")
        job = _Job(header, data, asyncio.get_running_loop().create_future())
        await self._send(job)
        self.stats.inc_value("store_processes/jobs")
        return await job.future

    async def _send(self, job: _Job) -> None:
        while (child := min((c for c in self.children if c.ready), key=lambda c: len(c.pending), default=None)) is None:
            if self.broken or not self._restarting:
                job.future.set_exception(StoreProcessFailed("no store process running"))
                return
            self._changed.clear()
            await self._changed.wait()  # one is being started in place of a dead one
        assert child.proc.stdin is not None
        header, data = job.header, job.data
        where = child.ring.put(data) if child.ring is not None and data else None
        job.in_ring = where is not None
        if where is not None:
            header, data = [*header, list(where)], b""
        if job.data:
            self.stats.inc_value(f"store_processes/images_via_{'memory' if job.in_ring else 'pipe'}")
        meta = encode_header(header)
        if not child.pending:
            job.started_at = time.monotonic()
        child.pending.append(job)
        stdin = child.proc.stdin
        stdin.write(FRAME.pack(len(meta), len(data)) + meta)
        if data:
            stdin.write(data)
        with contextlib.suppress(ConnectionError):  # a dead child: its reader hands the job on
            await stdin.drain()

    # --- children -----------------------------------------------------------------

    def start(self) -> None:
        """Start the children, not waiting for them: the crawl's first requests leave while they
        import Pillow; the first job waits for them (``_started``)."""
        self._start()

    def _start(self) -> asyncio.Task[None]:
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start_all())
        return self._starting

    async def _started(self) -> None:
        await asyncio.shield(self._start())

    async def _start_all(self) -> None:
        results = await asyncio.gather(*(self._start_child() for _ in range(self.size)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if len(errors) == self.size:
            self.broken = True
            logger.error(
                "No store process could be started (%s): images are checked and written in threads of "
                "the crawl's process instead (slower; set CIVITAI_STORE_PROCESSES=0 to do so "
                "without trying).", errors[0],
            )
            return
        for error in errors:
            logger.warning("A store process could not be started: %s", error)
        self._watch = asyncio.ensure_future(self._watch_timeouts())

    async def _start_child(self) -> None:
        ring = _make_ring()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-X", "faulthandler", "-c", CHILD_CODE, json.dumps(sys.path),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                pass_fds=(ring.fd,) if ring is not None else (),
            )
        except BaseException:
            if ring is not None:
                ring.close()
            raise
        child = _Child(proc, ring=ring)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        _grow_pipe(proc.stdin)
        child.tasks.append(asyncio.ensure_future(self._log_stderr(child)))
        shared = [ring.fd, ring.size] if ring is not None else None
        meta = encode_header(["init", self.basedir, shared])
        proc.stdin.write(FRAME.pack(len(meta), 0) + meta)
        try:
            answer = await asyncio.wait_for(_read_answer(proc.stdout), START_TIMEOUT)
            if answer[0] != "ready":
                raise ValueError(f"unexpected first answer {answer!r}")
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, ValueError) as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            code = await proc.wait()
            await asyncio.gather(*child.tasks, return_exceptions=True)
            if ring is not None:
                ring.close()
            tail = " | ".join(child.stderr_tail) or "no output"
            raise StoreProcessFailed(f"exit code {code} before it was ready ({exc.__class__.__name__}: {exc}); "
                                     f"its stderr: {tail}") from None
        child.ready = True
        self.children.append(child)
        self._changed.set()
        if self.closing:  # started in place of a dead one as the crawl closed: let it end too
            proc.stdin.close()
        child.tasks.append(asyncio.ensure_future(self._read_answers(child)))
        self.stats.inc_value("store_processes/started")
        logger.debug("Store process %s ready", answer[1])

    async def _read_answers(self, child: _Child) -> None:
        assert child.proc.stdout is not None
        while True:
            try:
                answer = await _read_answer(child.proc.stdout)
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            except ValueError as exc:  # not a message: the child is not what it should be
                child.killed_for = f"killed: it sent something that is not an answer ({exc})"
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
                break
            job = child.pending.popleft()
            if job.in_ring and child.ring is not None:
                child.ring.release()
            if child.pending:
                child.pending[0].started_at = time.monotonic()
            if not job.future.done():
                job.future.set_result(answer)
        await self._child_gone(child)

    async def _log_stderr(self, child: _Child) -> None:
        assert child.proc.stderr is not None
        while line := await child.proc.stderr.readline():
            text = line.decode("utf-8", "replace").rstrip()
            child.stderr_tail.append(text)
            logger.warning("store process %s: %s", child.proc.pid, text)

    async def _child_gone(self, child: _Child) -> None:
        child.ready = False
        replace = not self.closing
        if replace:
            self._restarting += 1  # from now: jobs wait for its successor instead of failing
        try:
            code = await child.proc.wait()
            await asyncio.gather(*child.tasks[:1], return_exceptions=True)  # its stderr, read to the end
            if child in self.children:
                self.children.remove(child)
            if child.ring is not None:
                child.ring.close()  # its jobs' bytes are sent again from the jobs themselves
            orphans = list(child.pending)
            child.pending.clear()
            if self.closing and not orphans:
                return
            why = child.killed_for or f"exit code {code}"
            self.stats.inc_value("store_processes/died")
            logger.error(
                "A store process (pid %s) ended with %d job(s) in hand: %s. Last lines of its stderr: %s",
                child.proc.pid, len(orphans), why, " | ".join(child.stderr_tail) or "none",
            )
            if orphans:
                orphans[0].tries += 1  # the job it was working on
            if replace:
                try:
                    await self._start_child()
                except Exception as exc:
                    logger.error("Could not start a store process in its place: %s", exc)
        finally:
            if replace:
                self._restarting -= 1
                if not self.children and not self._restarting and not self.broken:
                    self.broken = True
                    logger.error("No store process left: images are checked and written in threads from now on")
                self._changed.set()
        for job in orphans:
            if job.tries >= 2:
                job.future.set_exception(StoreProcessFailed(f"a store process died twice with this job ({why})"))
            else:
                await self._send(job)

    async def _watch_timeouts(self) -> None:
        if self.timeout <= 0:
            return
        while not self.closing:
            await asyncio.sleep(min(WATCH_INTERVAL, self.timeout / 2))
            now = time.monotonic()
            for child in list(self.children):
                if child.pending and now - child.pending[0].started_at > self.timeout and not child.killed_for:
                    child.killed_for = f"killed: a job took over CIVITAI_STORE_PROCESS_TIMEOUT={self.timeout:g} s"
                    with contextlib.suppress(ProcessLookupError):
                        child.proc.kill()

    async def stop(self) -> None:
        """Let every child finish its jobs and end (its input closed), or kill it after a while."""
        self.closing = True
        if self._watch is not None:
            self._watch.cancel()
        if self._starting is not None:
            await asyncio.gather(self._starting, return_exceptions=True)
        for child in list(self.children):
            if child.proc.stdin is not None:
                child.proc.stdin.close()
        for child in list(self.children):
            try:
                await asyncio.wait_for(child.proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                logger.warning("Store process %s did not stop in %g s: killed", child.proc.pid, STOP_TIMEOUT)
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
                await child.proc.wait()
            await asyncio.gather(*child.tasks, return_exceptions=True)
            if child.ring is not None:
                child.ring.close()


async def _read_answer(stdout: asyncio.StreamReader) -> list[Any]:
    meta_len, data_len = FRAME.unpack(await stdout.readexactly(FRAME.size))
    answer = decode_header(await stdout.readexactly(meta_len))  # JSON: a child's answer is data, never code
    if data_len:
        await stdout.readexactly(data_len)
    return answer


def _make_ring() -> _Ring | None:
    """A ring for a new child, or None (no ``memfd`` here, or no memory for it): the pipe alone."""
    if not hasattr(os, "memfd_create"):
        return None
    try:
        return _Ring(RING_SIZE)
    except OSError as exc:
        logger.debug("No shared memory for a store process (%s): its images go through its pipe", exc)
        return None


def _grow_pipe(stdin: asyncio.StreamWriter) -> None:
    """Ask for a larger pipe buffer (Linux; best effort: the default 64 kB works, with more wake-ups)."""
    fcntl_set_pipe_size = 1031  # F_SETPIPE_SZ
    transport = stdin.transport
    pipe = transport.get_extra_info("pipe")
    if pipe is None:
        return
    with contextlib.suppress(ImportError, OSError, ValueError):
        import fcntl  # noqa: PLC0415 (not on Windows)

        fcntl.fcntl(pipe.fileno(), fcntl_set_pipe_size, PIPE_SIZE)
