"""N workers on one shared crawl (scrapy-redis), as one command, for the race.

    python bench/workers.py --workers 2 -- scrapy crawl civitai -a min_hearts=10 -s ...

Starts a private ``redis-server`` on a free 127.0.0.1 port (nothing saved to
disk), runs the given crawl command as worker 1 with ``CIVITAI_REDIS_START=new`` and,
at the same moment, as workers 2..N with ``resume`` (they wait for worker 1 to
create the crawl), and waits for all of them. Exits with the highest worker exit status. Every
worker is a child of this process (and redis-server too), so the race measures
the whole tree: wall time, CPU, peak RSS. Worker logs go to this process's
stdout, prefixed with the worker's name.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def relay(name: str, stream: IO[bytes]) -> None:
    for line in iter(stream.readline, b""):
        sys.stdout.buffer.write(f"[{name}] ".encode() + line)
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the crawl command")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the crawl command after --")
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        print("redis-server is not installed (apt-get install redis-server)", file=sys.stderr)
        return 3
    import redis

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as folder:
        server = subprocess.Popen(
            [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", folder], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(url)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    client.ping()
                    break
                except redis.exceptions.ConnectionError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        print("redis-server did not start", file=sys.stderr)
                        return 3
                    time.sleep(0.05)
            workers: list[subprocess.Popen[bytes]] = []
            relays: list[threading.Thread] = []

            def start(n: int, mode: str) -> None:
                env = {**os.environ, "CIVITAI_REDIS_URL": url}
                argv = [*command, "-s", f"CIVITAI_REDIS_START={mode}", "-s", f"CIVITAI_REDIS_WORKER=w{n}"]
                process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                workers.append(process)
                thread = threading.Thread(target=relay, args=(f"w{n}", process.stdout), daemon=True)
                thread.start()
                relays.append(thread)

            # All at once, as on many machines: "resume" waits for the "new" worker to create the
            # crawl (CIVITAI_REDIS_JOIN_WAIT).
            start(1, "new")
            for n in range(2, args.workers + 1):
                start(n, "resume")
            codes = [process.wait() for process in workers]
            for thread in relays:
                thread.join(5)
            return max(codes)
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    sys.exit(main())
