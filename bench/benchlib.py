"""Shared machinery of the benchmarks: a generated corpus, an nginx that serves it, process measurement.

Not part of the project or its tests. Used by ``race.py``, ``walk.py`` and ``resume_start.py``.

- ``make_corpus``: N Civitai-like images (JPEG, PNG with an A1111 ``parameters`` chunk,
  RGBA PNG, WebP, palette PNG, GIF, CMYK JPEG) plus their API items, generated with
  multiprocessing into a cache directory keyed by the parameters, so reruns are instant.
- ``render_pages``: the API pages as static JSON files (``p1.json``, ``p2.json``...), each
  with ``metadata.nextCursor`` = the next file's name, the last one without it.
- ``Nginx``: our own nginx (Debian package ``nginx``) on free 127.0.0.1 ports, with a
  generated config: the API (``/api/v1/images?cursor=pN`` -> ``pN.json``; no cursor ->
  ``p1.json``) and a CDN (``/<uuid>/original=true/<uuid>.jpeg`` -> ``img/<uuid>.jpeg``).
- ``run_measured``: one contender as a separate process: wall time, CPU (user+sys of the
  whole process tree, from ``RUSAGE_CHILDREN`` deltas), peak RSS of the tree (summed over
  the process and its descendants, polled from /proc every 50 ms).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid as uuidlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
CORPUS_VERSION = 1  # bump when the generator changes: the cache key includes it
PAGE_SIZE = 200
# The query string the spider sends (and the other contenders copy).
API_PARAMS = {"limit": "200", "withMeta": "true", "sort": "Most Reactions", "period": "AllTime", "type": "image"}
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Format mix: (kind, weight). ~70% JPEG, ~15% PNG with A1111 parameters, the rest odd ones.
KINDS = [
    ("jpeg", 70),
    ("png_params", 15),
    ("png_rgba", 4),
    ("webp", 4),
    ("png_palette", 2.5),
    ("gif", 2),
    ("jpeg_cmyk", 2.5),
]
# (width, height, weight): the common SD / SDXL portrait sizes, 512x768 .. 1024x1536.
SIZES = [(512, 768, 20), (640, 960, 10), (768, 1152, 15), (832, 1216, 35), (896, 1152, 10), (1024, 1536, 10)]

SUBJECTS = ["a lighthouse on a cliff", "a red fox in the snow", "an old robot reading", "a mountain lake at dawn",
            "a tea house in the rain", "a dragon over a castle", "a city at night, neon", "a cat astronaut",
            "a sunflower field", "a knight in silver armour", "portrait of a woman, freckles", "a cyberpunk street"]
STYLES = ["watercolor", "oil painting", "photo, 35mm, film grain", "anime style", "pixel art", "ink sketch",
          "cinematic lighting", "studio ghibli style", "octane render, 8k", "masterpiece, best quality"]
NEGATIVES = ["blurry, lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit",
             "worst quality, low quality, jpeg artifacts, watermark, signature", "nsfw, deformed, ugly"]
SAMPLERS = ["Euler a", "DPM++ 2M Karras", "DPM++ SDE Karras", "DDIM", "UniPC"]
BASE_MODELS = ["SD 1.5", "SDXL 1.0", "Pony", "Flux.1 D", "Illustrious"]
USERS = ["Ajuro", "pixelpainter", "NightOwl", "lumen_ai", "mockuser", "RalFinger", "zovya", "Konan"]


# --------------------------------------------------------------------------------------
# Corpus


def cache_root(path: str | None = None) -> Path:
    root = Path(path or os.environ.get("CIVITAI_BENCH_CACHE") or Path(tempfile.gettempdir(), "civitai-bench"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def _stats(rng: random.Random) -> dict[str, int]:
    # About half the images have >= 10 hearts (min_hearts=10 keeps them).
    hearts = rng.randrange(0, 10) if rng.random() < 0.5 else 10 + int((rng.paretovariate(1.1) - 1) * 60)
    return {
        "cryCount": int((rng.paretovariate(1.5) - 1) * 5),
        "laughCount": int((rng.paretovariate(1.5) - 1) * 8),
        "likeCount": hearts * rng.randrange(1, 4) + rng.randrange(0, 20),
        "dislikeCount": int((rng.paretovariate(2.5) - 1) * 2),
        "heartCount": hearts,
        "commentCount": int((rng.paretovariate(1.8) - 1) * 3),
    }


def _meta(rng: random.Random, width: int, height: int, seed: int) -> dict[str, Any] | None:
    roll = rng.random()
    if roll < 0.03:
        return None  # meta null
    steps, cfg, sampler = rng.choice([20, 25, 30, 40]), rng.choice([4, 5, 6.5, 7, 7.5]), rng.choice(SAMPLERS)
    version = rng.randrange(100_000, 2_000_000)
    meta: dict[str, Any] = {
        "Size": f"{width}x{height}", "seed": seed, "steps": steps, "sampler": sampler, "cfgScale": cfg,
        "clipSkip": rng.choice([1, 2]), "Model": f"model_{version % 97}", "Model hash": f"{seed & 0xFFFFFFFFFF:010x}",
        "resources": [{"name": f"model_{version % 97}", "type": "model", "hash": f"{seed & 0xFFFFFFFFFF:010x}"}],
        "civitaiResources": [{"type": "checkpoint", "modelVersionId": version}],
    }
    if roll < 0.05:
        return meta  # a meta without a prompt (e.g. a ComfyUI upload)
    parts = [rng.choice(SUBJECTS), rng.choice(STYLES)] + rng.sample(STYLES, rng.randrange(0, 4))
    if rng.random() < 0.3:
        parts.append(f"<lora:detail_tweaker_{rng.randrange(9)}:{rng.choice([0.5, 0.8, 1])}>")
    parts += ["highly detailed"] * rng.randrange(1, 3) + [f"tag{rng.randrange(1000)}" for _ in range(rng.randrange(0, 40))]
    meta["prompt"] = ", ".join(parts)
    meta["negativePrompt"] = rng.choice(NEGATIVES)
    return meta


def _a1111_parameters(item: dict[str, Any]) -> str:
    meta = item.get("meta") or {}
    return (f"{meta.get('prompt', '')}\nNegative prompt: {meta.get('negativePrompt', '')}\n"
            f"Steps: {meta.get('steps', 30)}, Sampler: {meta.get('sampler', 'Euler a')}, "
            f"CFG scale: {meta.get('cfgScale', 7)}, Seed: {meta.get('seed', 0)}, Size: {item['width']}x{item['height']}, "
            f"Model hash: {meta.get('Model hash', '')}, Model: {meta.get('Model', '')}, Version: v1.10.1")


def _picture(width: int, height: int, seed: int) -> Any:
    """Structured content plus grain, so JPEG/PNG sizes land near real SD outputs."""
    from PIL import Image, ImageChops

    rng = random.Random(seed)
    x0, y0, span = rng.uniform(-2.2, -0.6), rng.uniform(-1.2, 0.2), rng.uniform(0.15, 1.5)
    # Computed at half size (the costly part) and scaled up: smooth shapes, like a render.
    mandel = Image.effect_mandelbrot((width // 2, height // 2), (x0, y0, x0 + span, y0 + span * height / width),
                                     rng.randrange(30, 120)).resize((width, height), Image.BILINEAR)
    gradient = Image.linear_gradient("L").resize((width, height)).rotate(rng.uniform(0, 360), resample=Image.BILINEAR)
    radial = Image.radial_gradient("L").resize((width, height))
    inverse = mandel.point(lambda v: 255 - v)
    channels = [mandel, gradient, ImageChops.multiply(radial, inverse)]
    rng.shuffle(channels)
    base = Image.merge("RGB", channels)
    # Grain: stronger on small pictures (bytes per pixel of real small images are higher).
    sigma = max(3.5, min(9.0, 6.0 * math.sqrt(0.9e6 / (width * height)))) * rng.uniform(0.85, 1.15)
    grain = Image.effect_noise((width, height), sigma)
    return ImageChops.add(base, Image.merge("RGB", (grain, grain, grain)), 1.0, -128)


def _encode(kind: str, picture: Any, item: dict[str, Any]) -> bytes:
    from PIL import Image, PngImagePlugin

    out = io.BytesIO()
    if kind == "jpeg":
        picture.save(out, "JPEG", quality=90)
    elif kind == "png_params":
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", _a1111_parameters(item))
        picture.save(out, "PNG", pnginfo=info)
    elif kind == "png_rgba":
        alpha = Image.radial_gradient("L").resize(picture.size).point(lambda v: 255 if v < 200 else 255 - v)
        rgba = picture.convert("RGBA")
        rgba.putalpha(alpha)
        rgba.save(out, "PNG")
    elif kind == "webp":
        picture.save(out, "WEBP", quality=90)
    elif kind == "png_palette":
        picture.quantize(256).save(out, "PNG")
    elif kind == "gif":
        picture.quantize(256).save(out, "GIF")
    elif kind == "jpeg_cmyk":
        picture.convert("CMYK").save(out, "JPEG", quality=90)
    else:
        raise ValueError(kind)
    return out.getvalue()


def _make_one(job: tuple[str, dict[str, Any], str, int]) -> tuple[str, int]:
    path, item, kind, seed = job
    data = _encode(kind, _picture(item["width"], item["height"], seed), item)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return kind, len(data)


def _public_item(rng: random.Random, index: int, image_id: int, width: int, height: int,
                 meta: dict[str, Any] | None, stats: dict[str, int]) -> dict[str, Any]:
    image_uuid = str(uuidlib.UUID(int=rng.getrandbits(128), version=4))
    level = rng.choices([1, 2, 4, 8], weights=[70, 15, 10, 5])[0]
    nsfw = {1: "None", 2: "Soft", 4: "Mature", 8: "X"}[level]
    version = (meta or {}).get("civitaiResources", [{}])[0].get("modelVersionId", 345685)
    return {
        "id": image_id,
        "uuid": image_uuid,  # -> url at render time (the CDN port changes per run)
        "hash": "U" + hashlib.sha256(str(image_id).encode()).hexdigest()[:35],
        "width": width, "height": height, "nsfwLevel": nsfw, "nsfw": level > 1, "browsingLevel": level,
        "type": "image", "createdAt": f"2024-{1 + index % 12:02d}-{1 + index % 28:02d}T12:{index % 60:02d}:07.499Z",
        "postId": 1_000_000 + index // 4, "username": rng.choice(USERS), "baseModel": rng.choice(BASE_MODELS),
        "modelVersionIds": [version], "stats": stats, "meta": meta,
    }


def passes(item: dict[str, Any], min_hearts: int = 10) -> bool:
    """The filter every contender applies: hearts >= min_hearts and a non-empty prompt."""
    hearts = (item.get("stats") or {}).get("heartCount") or 0
    prompt = (item.get("meta") or {}).get("prompt")
    return hearts >= min_hearts and isinstance(prompt, str) and bool(prompt.strip())


@dataclass
class Corpus:
    root: Path
    items: list[dict[str, Any]]
    kinds: dict[int, str]

    @property
    def img_dir(self) -> Path:
        return self.root / "img"

    def expected(self, min_hearts: int = 10) -> list[dict[str, Any]]:
        return [item for item in self.items if passes(item, min_hearts)]


def make_corpus(count: int, seed: int = 0, folder: str | None = None, cache: str | None = None,
                log: Any = print) -> Corpus:
    root = Path(folder) if folder else cache_root(cache) / f"corpus-n{count}-s{seed}-v{CORPUS_VERSION}"
    manifest = root / "items.json"
    if manifest.exists():
        data = json.loads(manifest.read_text())
        if data.get("count") == count and data.get("seed") == seed and data.get("version") == CORPUS_VERSION:
            return Corpus(root, data["items"], {int(k): v for k, v in data["kinds"].items()})
        raise SystemExit(f"{root} holds another corpus (count/seed/version differ): use another --corpus")
    rng = random.Random(seed)
    ids = rng.sample(range(1_000_000, 120_000_000), count)
    kinds_, weights = zip(*KINDS)
    items, jobs, kinds = [], [], {}
    (root / "img").mkdir(parents=True, exist_ok=True)
    for index, image_id in enumerate(ids):
        width, height = rng.choices([(w, h) for w, h, _ in SIZES], weights=[x for *_, x in SIZES])[0]
        picture_seed = rng.getrandbits(32)
        item = _public_item(rng, index, image_id, width, height, _meta(rng, width, height, picture_seed), _stats(rng))
        kind = rng.choices(kinds_, weights=weights)[0]
        items.append(item)
        kinds[image_id] = kind
        jobs.append((str(root / "img" / f"{item['uuid']}.jpeg"), item, kind, picture_seed))
    started = time.monotonic()
    sizes: dict[str, list[int]] = {}
    with ProcessPoolExecutor(os.cpu_count() or 2) as pool:
        for done, (kind, size) in enumerate(pool.map(_make_one, jobs, chunksize=8), 1):
            sizes.setdefault(kind, []).append(size)
            if done % 500 == 0 or done == count:
                log(f"corpus: {done}/{count} images ({time.monotonic() - started:.0f} s)")
    summary = {kind: {"count": len(v), "mean_kB": round(sum(v) / len(v) / 1000)} for kind, v in sorted(sizes.items())}
    log("corpus: " + ", ".join(f"{k} {v['count']} (~{v['mean_kB']} kB)" for k, v in summary.items()))
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps({"count": count, "seed": seed, "version": CORPUS_VERSION, "summary": summary,
                               "kinds": kinds, "items": items}))
    os.replace(tmp, manifest)
    return Corpus(root, items, kinds)


def corpus_summary(corpus: Corpus) -> dict[str, Any]:
    data = json.loads((corpus.root / "items.json").read_text())
    return data.get("summary", {})


def warm_cache(folder: Path) -> int:
    """Read every file once so that no contender pays for a cold page cache."""
    total = 0
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    total += len(chunk)
    return total


# --------------------------------------------------------------------------------------
# API pages and nginx


def api_item(item: dict[str, Any], cdn_root: str) -> dict[str, Any]:
    """The item as the API answers it: ``url`` second, on the CDN, always ``.jpeg``."""
    out = {"id": item["id"], "url": f"{cdn_root}/{item['uuid']}/original=true/{item['uuid']}.jpeg"}
    out.update((k, v) for k, v in item.items() if k not in ("id", "uuid"))
    return out


def render_pages(items: list[dict[str, Any]], folder: Path, api_url: str, cdn_root: str,
                 per_page: int = PAGE_SIZE) -> int:
    """Write ``p1.json``..``pM.json``; page k's ``nextCursor`` is ``p{k+1}``, the last has none."""
    folder.mkdir(parents=True, exist_ok=True)
    pages = max(1, math.ceil(len(items) / per_page))
    for page in range(1, pages + 1):
        chunk = items[(page - 1) * per_page: page * per_page]
        metadata: dict[str, str] = {}
        if page < pages:
            cursor = f"p{page + 1}"
            metadata = {"nextCursor": cursor, "nextPage": f"{api_url}?{urlencode({**API_PARAMS, 'cursor': cursor})}"}
        body = json.dumps({"items": [api_item(it, cdn_root) for it in chunk], "metadata": metadata},
                          ensure_ascii=False, separators=(",", ":"))
        (folder / f"p{page}.json").write_text(body, encoding="utf-8")
    return pages


def read_arrivals(log: Path, skip: int) -> list[float]:
    """Arrival times of the requests in an nginx ``arrival`` access log (``$msec - $request_time``),
    after its first ``skip`` lines."""
    lines = log.read_text().splitlines()[skip:] if log.exists() else []
    out = []
    for line in lines:
        msec, request_time, *_ = line.split()
        out.append(float(msec) - float(request_time))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes {workers};
user root;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    types {{ application/json json; image/jpeg jpeg; }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 100000;
    access_log off;
    log_format arrival '$msec $request_time $status "$request_uri"';
    client_body_temp_path {work}/tmp/body;
    proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi;
    uwsgi_temp_path {work}/tmp/uwsgi;
    scgi_temp_path {work}/tmp/scgi;
    # The spider's cursor -> a static page file; no cursor: the first page.
    map $arg_cursor $page {{
        "" p1;
        "~^p[0-9]+$" $arg_cursor;
        default invalid-cursor;
    }}
    server {{
        listen 127.0.0.1:{api_port};
        root {pages};
        {api_log}
        location = /api/v1/images {{ try_files /$page.json =404; }}
        location / {{ return 404; }}
    }}
    server {{
        listen 127.0.0.1:{cdn_port};
        root {images};
        location ~ "{cdn_regex}" {{ try_files {cdn_file} =404; }}
        location / {{ return 404; }}
    }}
}}
"""
# CDN paths like Civitai's: /<uuid>/original=true/<uuid>.jpeg (bytes may be PNG/WebP/GIF).
CDN_REGEX = r"^/([0-9a-f-]{36})/original=true/[0-9a-f-]{36}\.jpeg$"


class Nginx:
    """Our own nginx instance (not the system one): generated config, pid and logs in ``work``."""

    def __init__(self, work: Path, pages: Path, images: Path, *, workers: str = "1", api_log: Path | None = None,
                 cdn_regex: str = CDN_REGEX, cdn_file: str = "/$1.jpeg") -> None:
        self.work = work
        self.pages = pages
        self.images = images
        self.workers = workers
        self.api_log = api_log
        self.cdn_regex = cdn_regex
        self.cdn_file = cdn_file
        self.api_port = free_port()
        self.cdn_port = free_port()
        while self.cdn_port == self.api_port:
            self.cdn_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/api/v1/images"

    @property
    def cdn_root(self) -> str:
        return f"http://127.0.0.1:{self.cdn_port}"

    def start(self) -> Nginx:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(binary):
            raise SystemExit("nginx not found: apt-get update && apt-get install -y nginx")
        (self.work / "tmp").mkdir(parents=True, exist_ok=True)
        conf = self.work / "nginx.conf"
        api_log = f"access_log {self.api_log} arrival;" if self.api_log else ""
        conf.write_text(NGINX_CONF.format(workers=self.workers, work=self.work, api_port=self.api_port,
                                          cdn_port=self.cdn_port, pages=self.pages, images=self.images,
                                          api_log=api_log, cdn_regex=self.cdn_regex, cdn_file=self.cdn_file))
        self.process = subprocess.Popen([binary, "-p", str(self.work), "-c", str(conf)],
                                        stdout=subprocess.DEVNULL, stderr=open(self.work / "stderr.log", "wb"))
        deadline = time.monotonic() + 10
        for port in (self.api_port, self.cdn_port):
            while True:
                if self.process.poll() is not None:
                    raise SystemExit(f"nginx exited: {(self.work / 'stderr.log').read_text()[-2000:]}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"nginx does not listen on {port}") from None
                    time.sleep(0.05)
        return self

    def cpu_seconds(self) -> float:
        """CPU (user+sys) used so far by the nginx master and its workers."""
        if self.process is None:
            return 0.0
        return sum(_proc_cpu(pid) for pid in [self.process.pid, *descendants(self.process.pid)])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful stop
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def interrupt_on_sigterm() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt (even when started in the background, where
    SIGINT is ignored), so that ``with Nginx(...)`` blocks stop their nginx on the way out."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def nginx_version() -> str:
    try:
        out = subprocess.run(["nginx", "-v"], capture_output=True, text=True)
        return (out.stderr or out.stdout).strip().split("/")[-1]
    except OSError:
        return "missing"


# --------------------------------------------------------------------------------------
# Processes: tree, RSS, CPU


def _ppids() -> dict[int, int]:
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(b")") + 2:].split()
        out[int(name)] = int(rest[1])
    return out


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in _ppids().items():
        children.setdefault(ppid, []).append(pid)
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            found.append(child)
            stack.append(child)
    return found


def _proc_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


def _proc_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0.0
    rest = stat[stat.rfind(b")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK  # utime, stime


def tree_rss(root: int) -> int:
    return sum(_proc_rss(pid) for pid in [root, *descendants(root)])


class RssSampler(threading.Thread):
    """Polls the RSS of a process tree (the process plus all its descendants, summed)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.last = 0
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            rss = tree_rss(self.pid)
            if rss:
                self.last = rss
                self.peak = max(self.peak, rss)
                self.samples += 1
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


@dataclass
class Measured:
    returncode: int
    wall_s: float
    cpu_s: float
    cpu_user_s: float
    cpu_sys_s: float
    peak_rss: int
    rss_samples: int
    timed_out: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def run_measured(argv: list[str], *, cwd: Path, log: Path, env: dict[str, str] | None = None,
                 timeout: float = 3600, interval: float = 0.05) -> Measured:
    """Run ``argv`` to its end as one process tree and measure it (stdout+stderr into ``log``)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log.open("wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
        sampler = RssSampler(process.pid, interval)
        sampler.start()
        timed_out = False
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGKILL)  # our own process group only
            process.wait()
        except BaseException:  # Ctrl-C / SIGTERM of the harness: take the contender down with it
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            sampler.stop()
            raise
        wall = time.perf_counter() - started
        sampler.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return Measured(process.returncode, wall, user + system, user, system, sampler.peak, sampler.samples, timed_out)


def dir_bytes(folder: Path) -> tuple[int, int]:
    """(total bytes, number of files) under ``folder``."""
    total = files = 0
    for base, _dirs, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(base, name)).st_size
                files += 1
            except OSError:
                pass
    return total, files


def machine() -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {"nproc": os.cpu_count(), "cpu_model": model, "ram_gib": round(mem_kb / 2**20, 1),
            "kernel": os.uname().release}


def scrapy_bin() -> str:
    here = Path(sys.executable).parent / "scrapy"
    return str(here) if here.exists() else (shutil.which("scrapy") or "scrapy")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a contender: no Scrapy project variables leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRAPY_")}
    env.update(extra)
    return env


def log_problems(log: Path, limit: int = 5) -> tuple[int, list[str]]:
    """How many ERROR / Traceback lines a log has, and the first few."""
    pattern = re.compile(r"\bERROR\b|Traceback|CRITICAL")
    count, first = 0, []
    try:
        with log.open("r", errors="replace") as f:
            for line in f:
                if pattern.search(line):
                    count += 1
                    if len(first) < limit:
                        first.append(line.strip()[:300])
    except OSError:
        pass
    return count, first
