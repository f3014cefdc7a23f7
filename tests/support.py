"""Test support: one helper that runs a real crawl with the project's settings,
and builders for stand-in scenarios (API items and image bytes made with Pillow).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import io
import os
import pickle
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scrapy import signals
from scrapy.settings import SETTINGS_PRIORITIES, Settings
from scrapy.utils.test import get_crawler

from civitai_spider.spiders.civitai import CivitaiSpider

REPO = Path(__file__).resolve().parents[1]


def project_settings(**overrides: Any) -> dict[str, Any]:
    """The project's settings module as a dict, with test overrides on top."""
    settings = Settings()
    settings.setmodule("civitai_spider.settings", priority="project")
    values = {
        name: settings[name]
        for name, attribute in settings.attributes.items()
        if attribute.priority >= SETTINGS_PRIORITIES["project"]
    }
    values.update(overrides)
    return values


@dataclass
class CrawlResult:
    items: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    # Every request as the scheduler got it, serialised as JOBDIR / Redis would pickle it.
    scheduled: list[bytes] = field(default_factory=list)

    # Bound methods: Scrapy holds signal handlers weakly, so they live on this object.
    def on_item_scraped(self, item: Any) -> None:
        self.items.append(dict(item))

    def on_item_dropped(self, item: Any, exception: BaseException) -> None:
        self.dropped.append((dict(item), str(exception)))

    def on_request_scheduled(self, request: Any, spider: Any) -> None:
        self.scheduled.append(pickle.dumps(request.to_dict(spider=spider)))

    @property
    def ids(self) -> list[int]:
        return [item["id"] for item in self.items]


def base_settings(server: Any, **overrides: Any) -> dict[str, Any]:
    return project_settings(**{
        "CIVITAI_API_URL": server.api_url,
        "CIVITAI_RETRY_BACKOFF_BASE": 0.05,
        "DOWNLOAD_TIMEOUT": 5,
        "LOG_LEVEL": "DEBUG",
        **overrides,
    })


async def run_crawl(server: Any, settings: dict[str, Any] | None = None, **spider_args: Any) -> CrawlResult:
    """Run the ``civitai`` spider in this process against the stand-in; return what it yielded."""
    crawler = get_crawler(CivitaiSpider, base_settings(server, **(settings or {})))
    result = CrawlResult()
    crawler.signals.connect(result.on_item_scraped, signals.item_scraped)
    crawler.signals.connect(result.on_item_dropped, signals.item_dropped)
    crawler.signals.connect(result.on_request_scheduled, signals.request_scheduled)
    await crawler.crawl(**spider_args)
    result.stats = crawler.stats.get_stats()
    return result


def run_scrapy(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``scrapy <args>`` as a user would, in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "scrapy", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_in_terminal(args: list[str], timeout: float = 60, rows: int = 50, module: str = "scrapy") -> tuple[int, str]:
    """Run ``python -m <module> <args>`` (scrapy by default) with stderr and stdout on a pseudo-terminal;
    return (status, screen text)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", rows, 250, 0, 0))  # rows x 250 columns
    process = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, stdin=subprocess.DEVNULL,
                               stdout=follower, stderr=follower,
                               env={k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")})
    os.close(follower)
    output = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            output += chunk
        elif process.poll() is not None:
            break
    os.close(leader)
    return process.wait(timeout=10), output.decode("utf-8", "replace")


@contextlib.contextmanager
def server_process(
    argv: list[str], log: Path, ready: Callable[[], bool], *, timeout: float = 30, **popen: Any
) -> Iterator[subprocess.Popen[bytes]]:
    """A local server (moto, redis-server, scrapyd) in a subprocess: started, waited for
    until ``ready()``, terminated (then killed) at the end. Its output goes to ``log``."""
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, **popen)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{Path(argv[0]).name} did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- scenarios -----------------------------------------------------------------


def api_image(
    image_id: int,
    *,
    hearts: int = 0,
    likes: int = 0,
    laughs: int = 0,
    cries: int = 0,
    comments: int = 0,
    dislikes: int = 0,
    prompt: str | None = "a prompt",
    meta: Any = "default",
    file: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One API item as the stand-in serves it; ``file`` names its bytes in the scenario."""
    if meta == "default":
        meta = {"prompt": prompt, "negativePrompt": "blurry", "seed": image_id, "steps": 30}
        if prompt is None:
            del meta["prompt"]
    item = {
        "id": image_id,
        "width": 64,
        "height": 64,
        "nsfwLevel": "None",
        "nsfw": False,
        "browsingLevel": 1,
        "type": "image",
        "createdAt": "2024-04-04T21:24:07.499Z",
        "postId": 1000 + image_id,
        "username": "alice",
        "baseModel": "SDXL 1.0",
        "modelVersionIds": [1],
        "stats": {
            "heartCount": hearts,
            "likeCount": likes,
            "laughCount": laughs,
            "cryCount": cries,
            "commentCount": comments,
            "dislikeCount": dislikes,
        },
        "meta": meta,
    }
    if file is not None:
        item["_file"] = file
    item.update(extra)
    return item


def scenario(images: list[dict[str, Any]], files: dict[str, bytes] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "images": images,
        "files": {name: base64.b64encode(data).decode() for name, data in (files or {}).items()},
        **extra,
    }


def image_bytes(fmt: str = "JPEG", mode: str = "RGB", size: tuple[int, int] = (64, 48), **save: Any) -> bytes:
    """A small test picture made with Pillow: a gradient, so encoders have real work."""
    from PIL import Image

    base = Image.linear_gradient("L").resize(size)
    if mode in ("RGB", "RGBA", "CMYK", "YCbCr"):
        image = Image.merge("RGB", (base, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT), base)).convert(mode)
    else:
        image = base.convert(mode)
    out = io.BytesIO()
    image.save(out, fmt, **save)
    return out.getvalue()
