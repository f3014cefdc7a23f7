"""Shared fixtures: the one local Civitai stand-in (API + CDN) for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.mockserver import MockServer


@pytest.fixture(scope="session")
def mockserver() -> Iterator[MockServer]:
    with MockServer() as server:
        yield server


@pytest.fixture
def server(mockserver: MockServer) -> MockServer:
    """The stand-in, with an empty scenario: each test loads its own."""
    mockserver.load({"images": [], "files": {}})
    return mockserver
