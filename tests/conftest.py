"""Shared fixtures: the one local Civitai stand-in (API + CDN) and one local S3 server for the session."""

from __future__ import annotations

import socket
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.interfaces import IResolverSimple
from zope.interface import implementer

from tests.mockserver import MockServer
from tests.support import server_process


@pytest.fixture(scope="session")
def mockserver() -> Iterator[MockServer]:
    with MockServer() as server:
        yield server


@pytest.fixture
def server(mockserver: MockServer) -> MockServer:
    """The stand-in, with an empty scenario: each test loads its own."""
    mockserver.load({"images": [], "files": {}})
    return mockserver


# --- a real S3 API on 127.0.0.1 (moto_server) ---------------------------------------


@dataclass
class S3Server:
    """A running ``moto_server`` with one bucket, and a boto3 client to look into it."""

    endpoint: str
    bucket: str
    client: Any

    @property
    def settings(self) -> dict[str, Any]:
        """What a crawl needs to use this server (Scrapy's S3 store reads these settings)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION_NAME": "us-east-1",
        }

    def new_store(self) -> str:
        """A fresh ``s3://`` store (its own prefix in the bucket)."""
        return f"s3://{self.bucket}/{uuid.uuid4().hex[:12]}/"

    def objects(self, store: str) -> dict[str, dict[str, Any]]:
        """Key (relative to the store) -> the object's ``body``, ``type``, ``etag``, ``modified``."""
        prefix = store.split("/", 3)[3]
        found: dict[str, dict[str, Any]] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for entry in page.get("Contents", ()):
                got = self.client.get_object(Bucket=self.bucket, Key=entry["Key"])
                found[entry["Key"][len(prefix):]] = {
                    "body": got["Body"].read(),
                    "type": got["ContentType"],
                    "etag": entry["ETag"],
                    "modified": entry["LastModified"],
                }
        return found

    def put(self, store: str, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=store.split("/", 3)[3] + key, Body=body)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """``moto_server`` in a subprocess on a free port, with a bucket; killed at the end."""
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = Path(tmp_path_factory.mktemp("moto")) / "moto_server.log"
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with server_process(argv, log, lambda: answers(port)):
        client = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )
        client.create_bucket(Bucket="civitai-test")
        yield S3Server(endpoint=endpoint, bucket="civitai-test", client=client)


# --- a real Redis on 127.0.0.1 (Debian's redis-server) ------------------------------


@dataclass
class RedisServer:
    url: str
    client: Any


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """``redis-server`` in a subprocess on a free port, nothing saved to disk; killed at the end."""
    import shutil

    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)]
    with server_process(argv, folder / "redis.log", lambda: answers(port)):
        url = f"redis://127.0.0.1:{port}/0"
        yield RedisServer(url=url, client=redis.Redis.from_url(url))


# --- Civitai's host names on 127.0.0.1 (in this process) -----------------------------


@implementer(IResolverSimple)
class LocalNames:
    """Resolves ``names`` and their subdomains to 127.0.0.1; any other name as ``fallback`` does."""

    def __init__(self, fallback: Any, names: tuple[str, ...]) -> None:
        self.fallback = fallback
        self.names = names

    def getHostByName(self, name: str, timeout: Any = ()) -> Any:  # noqa: N802 (Twisted's name)
        if any(name == n or name.endswith("." + n) for n in self.names):
            return defer.succeed("127.0.0.1")
        return self.fallback.getHostByName(name, timeout)


@pytest.fixture
def civitai_names() -> Iterator[None]:
    """civitai.com, civitai.red and their subdomains (image.civitai.red, image-b2.civitai.com...)
    resolve to 127.0.0.1 for the crawls of this test, so that the stand-in answers as both sites."""
    from twisted.internet import reactor

    previous = reactor.resolver
    reactor.installResolver(LocalNames(previous, ("civitai.com", "civitai.red")))
    yield
    reactor.installResolver(previous)
