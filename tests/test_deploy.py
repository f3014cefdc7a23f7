"""Deployment: the egg that Scrapyd and Zyte Scrapy Cloud run, built and run as they do.

* ``scrapyd-deploy`` builds the egg from ``setup.py`` and uploads it to a real Scrapyd 1.6
  started here on 127.0.0.1; a ``schedule.json`` job then crawls the local stand-in.
* ``shub deploy --build-egg`` builds Zyte's egg offline; the spider then runs from that egg
  alone (egg on ``PYTHONPATH``, not the repository), as Scrapy Cloud runs it.

The tools live in virtualenvs of their own, made once and kept under the system temp dir,
keyed by the pins below, the interpreter and requirements.txt (a later run reuses them):

* ``scrapyd``: Scrapyd, ``setuptools<81`` (Scrapyd 1.6 imports ``pkg_resources``),
  scrapyd-client and the project's runtime requirements (what a Scrapyd host has);
* ``shub``: shub alone. It pins ``tqdm==4.55.1``, which cannot be installed beside
  requirements.txt's tqdm: it must not share an environment with the project.

The first run builds them (about 45 s with a warm pip cache); later runs take seconds.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.mockserver import image_uuid
from tests.support import REPO, api_image, image_bytes, scenario, server_process

pytestmark = pytest.mark.slow

# The tools, pinned (tested together with requirements.txt).
SCRAPYD_PINS = ("scrapyd==1.6.0", "setuptools<81", "scrapyd-client==2.0.3")
SHUB_PINS = ("shub==2.18.1",)  # any setuptools builds its egg (tried up to 84)
BUILD_TIMEOUT = 900  # seconds for one environment's pip install (a cold cache downloads ~100 MB)
JOB_TIMEOUT = 120  # seconds for a Scrapyd job to finish
SHUB_APIKEY = "0123456789abcdef0123456789abcdef"  # any 32 hex digits: --build-egg never uploads

FILES = {"jpeg": image_bytes("JPEG"), "png": image_bytes("PNG", "RGBA")}
UNICODE_PROMPT = "café ☕, <lora:detail:0.6> 城"
IMAGES = [
    api_image(1, hearts=12, file="jpeg"),
    api_image(2, hearts=5, file="png"),  # the threshold is inclusive
    api_image(3, hearts=4, file="jpeg"),  # under it
    api_image(4, hearts=0, file="png"),
    api_image(5, hearts=30, meta=None, file="jpeg"),  # no meta: dropped (require_meta)
    api_image(6, hearts=7, prompt=UNICODE_PROMPT, file="jpeg"),
    api_image(7, hearts=100, file="png"),
]
PASSING = {1: "jpg", 2: "png", 6: "jpg", 7: "png"}  # with min_hearts=5

# Variables of the calling shell that must not leak into the tools or the crawls.
LEAKY_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "SCRAPY_SETTINGS_MODULE",
             "SCRAPY_PROJECT", "SCRAPY_PYTHON_SHELL", "SCRAPYD_EGG_VERSION", "SHUB_APIKEY", "CIVITAI_API_KEY")


def clean_env(bin_dir: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LEAKY_ENV}
    if bin_dir is not None:
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"{result.args}: exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


# --- the tool environments ----------------------------------------------------------


@dataclass
class ToolEnvs:
    scrapyd: Path  # a virtualenv: Scrapyd + scrapyd-client + requirements.txt
    shub: Path  # a virtualenv: shub

    @staticmethod
    def bin(venv: Path) -> Path:
        return venv / "bin"


def _envs_key() -> str:
    parts = [sys.version, os.path.realpath(sys.executable), *SCRAPYD_PINS, "|", *SHUB_PINS,
             (REPO / "requirements.txt").read_text()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _make_venv(venv: Path, requirements: list[str], log: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120,
                   env=clean_env(), capture_output=True)
    with open(log, "ab") as out:
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
             "--no-input", *requirements],
            check=False, cwd=REPO, env=clean_env(), stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT,
        )
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"pip install into {venv} failed (exit {done.returncode}); log {log}:\n{tail}")


def _usable(envs: ToolEnvs) -> bool:
    """Both environments import their tools, and the project is NOT importable in them."""
    checks = ((envs.scrapyd, "import scrapyd, scrapyd_client, scrapy, pkg_resources, numpy, PIL, tqdm"),
              (envs.shub, "import shub.deploy"))
    for venv, code in checks:
        code += "\ntry:\n    import civitai_spider\nexcept ImportError:\n    pass\nelse:\n    raise SystemExit(3)"
        try:
            result = subprocess.run([str(venv / "bin" / "python"), "-c", code], check=False, cwd=venv,
                                    env=clean_env(), capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return False
        if result.returncode != 0:
            return False
    return True


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl

    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def tool_envs() -> ToolEnvs:
    """The two virtualenvs, made on first use and reused while the pins are the same."""
    root = Path(tempfile.gettempdir()) / f"civitai-spider-deploy-envs-{_envs_key()}"
    envs = ToolEnvs(scrapyd=root / "scrapyd", shub=root / "shub")
    ready = root / "ready"
    root.parent.mkdir(parents=True, exist_ok=True)
    with _locked(root.parent / f"{root.name}.lock"):
        if ready.exists() and _usable(envs):
            return envs
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        log = root / "pip.log"
        try:
            _make_venv(envs.scrapyd, [*SCRAPYD_PINS, "-r", str(REPO / "requirements.txt")], log)
            _make_venv(envs.shub, list(SHUB_PINS), log)
            if not _usable(envs):
                raise RuntimeError(f"the tool environments under {root} do not work as expected")
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        ready.write_text("ok\n")
    return envs


# --- a Scrapyd on 127.0.0.1 -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy


def http_json(url: str, fields: list[tuple[str, str]] | None = None, timeout: float = 10) -> Any:
    data = urllib.parse.urlencode(fields).encode() if fields is not None else None
    with _opener.open(urllib.request.Request(url, data=data), timeout=timeout) as response:
        return json.loads(response.read())


@dataclass
class Scrapyd:
    url: str
    workdir: Path
    log: Path

    def job_log(self, job: str) -> Path:
        return self.workdir / "logs" / "civitai_spider" / "civitai" / f"{job}.log"

    def job_items(self, job: str) -> Path:
        return self.workdir / "items" / "civitai_spider" / "civitai" / f"{job}.jl"


@pytest.fixture(scope="module")
def scrapyd(tool_envs: ToolEnvs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrapyd]:
    """Scrapyd 1.6 on a free port, with its own working dir and config; stopped at the end."""
    workdir = tmp_path_factory.mktemp("scrapyd")
    port = _free_port()
    (workdir / "scrapyd.conf").write_text(
        "[scrapyd]\n"
        "bind_address = 127.0.0.1\n"
        f"http_port = {port}\n"
        f"eggs_dir = {workdir / 'eggs'}\n"
        f"logs_dir = {workdir / 'logs'}\n"
        f"items_dir = {workdir / 'items'}\n"
        f"dbs_dir = {workdir / 'dbs'}\n"
        "poll_interval = 0.2\n"  # default 5 s: a job would wait that long to start
        "max_proc = 2\n"
    )
    log = workdir / "scrapyd.log"
    bin_dir = ToolEnvs.bin(tool_envs.scrapyd)
    url = f"http://127.0.0.1:{port}"
    def ready() -> bool:
        try:
            return http_json(f"{url}/daemonstatus.json", timeout=2).get("status") == "ok"
        except OSError:
            return False

    # HOME=workdir: no ~/.scrapyd.conf or ~/.scrapy.cfg of the caller's is read.
    with server_process([str(bin_dir / "scrapyd")], log, ready, timeout=60, cwd=workdir,
                        env=clean_env(bin_dir, HOME=str(workdir))):
        yield Scrapyd(url=url, workdir=workdir, log=log)


# --- the project, as a deploy tool sees it --------------------------------------------


PACKAGING_FILES = {"setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "scrapy.cfg", "scrapinghub.yml",
                   "requirements.txt"}


def project_copy(dest: Path) -> Path:
    """The repository's packaging and config files and its Python packages, copied to ``dest``.

    The deploy tools run ``setup.py`` where the project is, which leaves ``build/`` and
    ``*.egg-info`` behind: they do it in this copy, never in the working tree. ``tests`` is
    copied too, so that its exclusion from the egg is checked.
    """
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for entry in REPO.iterdir():
        if entry.name in PACKAGING_FILES and entry.is_file():
            shutil.copy2(entry, dest / entry.name)
        elif not entry.name.startswith(".") and (entry / "__init__.py").is_file():
            shutil.copytree(entry, dest / entry.name, ignore=ignore)
    return dest


def check_egg(egg: Path) -> None:
    with zipfile.ZipFile(egg) as archive:
        names = set(archive.namelist())
        entry_points = archive.read("EGG-INFO/entry_points.txt").decode()
    assert {"civitai_spider/__init__.py", "civitai_spider/settings.py", "civitai_spider/spiders/civitai.py",
            "civitai_spider/commands/crawl.py", "civitai_spider/templates/gallery.html",
            "civitai_spider/templates/gallery.css", "civitai_spider/templates/gallery.js"} <= names
    assert not [n for n in names if n.startswith(("tests/", "bench/"))], sorted(names)
    assert "EGG-INFO/requires.txt" not in names  # dependencies come from requirements.txt, not the egg
    assert re.search(r"^\[scrapy\]\s*^settings = civitai_spider\.settings$", entry_points, re.MULTILINE), entry_points


def check_store(store: Path, server: Any) -> None:
    """Exactly the passing images, byte for byte, with their metadata files and the done-id record."""
    names = {p.name for p in store.iterdir()}
    per_image = {n for n in names if re.match(r"^\d+[._]", n)}
    expected = set()
    for image_id, ext in PASSING.items():
        expected |= {f"{image_id}.{ext}", f"{image_id}_pos-prompt.txt", f"{image_id}_neg-prompt.txt",
                     f"{image_id}_meta.json", f"{image_id}.json"}
    assert per_image == expected, sorted(names)
    assert "failures.jsonl" not in names
    by_id = {image["id"]: image for image in IMAGES}
    for image_id, ext in PASSING.items():
        image = by_id[image_id]
        assert (store / f"{image_id}.{ext}").read_bytes() == FILES[image["_file"]]
        assert (store / f"{image_id}_pos-prompt.txt").read_text(encoding="utf-8") == image["meta"]["prompt"]
        assert json.loads((store / f"{image_id}_meta.json").read_text(encoding="utf-8")) == image["meta"]
        assert json.loads((store / f"{image_id}.json").read_text(encoding="utf-8"))["stored"]["file"] == f"{image_id}.{ext}"
    done = (store / "downloaded_ids.txt").read_text().split()
    assert sorted(map(int, done)) == sorted(PASSING)
    fetched = sorted(r["path"].split("/")[2] for r in server.requests("cdn"))
    assert fetched == sorted(image_uuid(i) for i in PASSING)


# --- the tests ---------------------------------------------------------------------------


def deploy(scrapyd: Scrapyd, tool_envs: ToolEnvs, tmp_path: Path) -> None:
    """scrapyd-deploy a copy of the project to ``scrapyd``, as README says, and check what landed."""
    project = project_copy(tmp_path / "project")
    with open(project / "scrapy.cfg", "a") as cfg:
        cfg.write(f"\n[deploy:pytest]\nurl = {scrapyd.url}\nproject = civitai_spider\n")
    bin_dir = ToolEnvs.bin(tool_envs.scrapyd)
    deployed = run([str(bin_dir / "scrapyd-deploy"), "pytest"], cwd=project,
                   env=clean_env(bin_dir, HOME=str(tmp_path)))
    assert deployed.returncode == 0, explain(deployed)
    answer = json.loads(deployed.stdout.strip().splitlines()[-1])
    assert answer["status"] == "ok" and answer["project"] == "civitai_spider" and answer["spiders"] == 1, answer
    # the egg of this deploy (a module's tests may deploy more than one version)
    egg = max((scrapyd.workdir / "eggs" / "civitai_spider").glob("*.egg"), key=lambda path: path.stat().st_mtime)
    check_egg(egg)
    spiders = http_json(f"{scrapyd.url}/listspiders.json?project=civitai_spider")
    assert spiders["spiders"] == ["civitai"], spiders


def wait_finished(scrapyd: Scrapyd, jobs: list[str]) -> None:
    deadline = time.monotonic() + JOB_TIMEOUT
    while True:
        listed = http_json(f"{scrapyd.url}/listjobs.json?project=civitai_spider")
        if set(jobs) <= {j["id"] for j in listed["finished"]}:
            return
        assert time.monotonic() < deadline, f"jobs {jobs} not finished after {JOB_TIMEOUT} s: {listed}"
        time.sleep(0.2)


def test_scrapyd_deploy_schedule_and_crawl(scrapyd: Scrapyd, tool_envs: ToolEnvs, server: Any,
                                           tmp_path: Path) -> None:
    # The repository's own deploy target, untouched: the test deploys with a copy.
    config = configparser.ConfigParser()
    config.read(REPO / "scrapy.cfg")
    assert config["settings"]["default"] == "civitai_spider.settings"
    assert config["deploy"]["project"] == "civitai_spider"
    assert not config["deploy"]["url"].endswith("/")
    deploy(scrapyd, tool_envs, tmp_path)

    server.load(scenario(IMAGES, FILES))
    store = tmp_path / "store"
    scheduled = http_json(f"{scrapyd.url}/schedule.json", [
        ("project", "civitai_spider"), ("spider", "civitai"), ("min_hearts", "5"),
        ("setting", f"CIVITAI_API_URL={server.api_url}"), ("setting", f"IMAGES_STORE={store}"),
    ])
    assert scheduled["status"] == "ok", scheduled
    job = scheduled["jobid"]
    wait_finished(scrapyd, [job])

    log = scrapyd.job_log(job).read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log, log
    assert " ERROR: " not in log, log
    assert "'finish_reason': 'finished'" in log, log
    check_store(store, server)
    items = [json.loads(line) for line in scrapyd.job_items(job).read_text().splitlines()]
    assert sorted(item["id"] for item in items) == sorted(PASSING)
    assert "Traceback" not in scrapyd.log.read_text(errors="replace")


def test_zyte_egg_builds_offline_and_runs_alone(tool_envs: ToolEnvs, server: Any, tmp_path: Path) -> None:
    project = project_copy(tmp_path / "project")
    egg = tmp_path / "out.egg"
    home = tmp_path / "home"  # shub reads (and may write) ~/.scrapinghub.yml: not the caller's
    home.mkdir()
    shub_bin = ToolEnvs.bin(tool_envs.shub)
    built = run([str(shub_bin / "shub"), "deploy", "--build-egg", str(egg)], cwd=project,
                env=clean_env(shub_bin, HOME=str(home), SHUB_APIKEY=SHUB_APIKEY))
    assert built.returncode == 0, explain(built)
    check_egg(egg)

    # As Scrapy Cloud runs a job: requirements installed, the egg on the path, `scrapy crawl`.
    # The interpreter has no civitai_spider of its own (see _usable) and cwd is an empty dir.
    workdir = tmp_path / "job"
    workdir.mkdir()
    store = tmp_path / "store"
    python = str(ToolEnvs.bin(tool_envs.scrapyd) / "python")
    env = clean_env(HOME=str(workdir), PYTHONPATH=str(egg), SCRAPY_SETTINGS_MODULE="civitai_spider.settings")
    launcher = (
        "import sys, civitai_spider, civitai_spider.settings, civitai_spider.spiders.civitai as spider\n"
        "for module in (civitai_spider, civitai_spider.settings, spider):\n"
        "    print('MODULE', module.__file__, flush=True)\n"
        "from scrapy.cmdline import execute\n"  # what the `scrapy` command runs
        "execute(['scrapy', *sys.argv[1:]])\n"
    )

    server.load(scenario(IMAGES, FILES))
    crawled = run([python, "-c", launcher, "crawl", "civitai", "-a", "min_hearts=5",
                   "-s", f"CIVITAI_API_URL={server.api_url}", "-s", f"IMAGES_STORE={store}"],
                  cwd=workdir, env=env)
    assert crawled.returncode == 0, explain(crawled)
    modules = re.findall(r"^MODULE (.+)$", crawled.stdout, re.MULTILINE)
    assert len(modules) == 3 and all(m.startswith(f"{egg}{os.sep}") for m in modules), crawled.stdout
    assert "Traceback" not in crawled.stderr, crawled.stderr
    assert "'finish_reason': 'finished'" in crawled.stderr, crawled.stderr
    check_store(store, server)
    assert {p.name for p in workdir.iterdir()} == set()  # nothing written beside the job

    # The project's own `crawl` command (COMMANDS_MODULE) is loaded from the egg too.
    refused = run([python, "-c", launcher, "crawl", "civitai", "-a", "min_hearts=lots"], cwd=workdir, env=env)
    assert refused.returncode == 2, explain(refused)
    assert "min_hearts" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr


def test_scrapyd_jobs_as_workers_of_one_shared_crawl(scrapyd: Scrapyd, tool_envs: ToolEnvs, server: Any,
                                                     redis_server: Any, tmp_path: Path) -> None:
    """README's Scrapyd recipe for many workers: the same job scheduled twice."""
    deploy(scrapyd, tool_envs, tmp_path)
    server.load(scenario(IMAGES, FILES))
    store = tmp_path / "store"
    common = [("project", "civitai_spider"), ("spider", "civitai"), ("min_hearts", "5"),
              ("setting", f"CIVITAI_API_URL={server.api_url}"), ("setting", f"IMAGES_STORE={store}"),
              ("setting", f"CIVITAI_REDIS_URL={redis_server.url}"), ("setting", "CIVITAI_REDIS_CRAWL=scrapyd-test"),
              ("setting", "CIVITAI_PAGE_LIMIT=2")]
    jobs = [http_json(f"{scrapyd.url}/schedule.json", common + extra)["jobid"]
            for extra in ([], [])]
    wait_finished(scrapyd, jobs)

    logs = [scrapyd.job_log(job).read_text(encoding="utf-8", errors="replace") for job in jobs]
    for log in logs:
        assert "Traceback" not in log and " ERROR: " not in log, log
        assert "'finish_reason': 'finished'" in log, log
    # One starts the crawl, the other joins it (or, scheduled after it finished, walks it anew):
    # both ran the spider as workers, and between them stored each passing image once.
    started = ["Started crawl 'scrapyd-test'" in log for log in logs]
    joined = ["Joining crawl 'scrapyd-test'" in log for log in logs]
    assert all(s != j for s, j in zip(started, joined)) and any(started), logs
    assert all("Worker " in log and "on crawl 'scrapyd-test'" in log for log in logs), logs
    stored = [int(re.findall(r"stored: (\d+) new images", log)[-1]) for log in logs]
    assert sum(stored) == len(PASSING), stored
    check_store(store, server)  # exactly the passing images, each fetched once in all
