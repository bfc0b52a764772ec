from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "providers"))

from farend import FarEnd
from harness import Receiver, Server, sipp_available
from llm_server import ModelServer

pytestmark = pytest.mark.e2e


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[object]:
    servers: list[Server] = []

    def make(**kwargs: object) -> Server:
        server = Server(data_dir=tmp_path / f"server{len(servers)}", **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.kill()


@pytest.fixture
def server(make_server: object) -> Server:
    return make_server()  # type: ignore[operator, no-any-return]


requires_sipp = pytest.mark.skipif(not sipp_available(), reason="sipp (Debian sip-tester) missing")


@pytest.fixture
async def far_end() -> AsyncIterator[FarEnd]:
    far = FarEnd()
    await far.start()
    yield far
    await far.stop()


@pytest.fixture
async def far_b() -> AsyncIterator[FarEnd]:
    """A second far end: the other party of a bridge."""
    far = FarEnd()
    await far.start()
    yield far
    await far.stop()


@pytest.fixture
async def far_c() -> AsyncIterator[FarEnd]:
    """A third far end: a transfer target."""
    far = FarEnd()
    await far.start()
    yield far
    await far.stop()


@pytest.fixture
async def model() -> AsyncIterator[ModelServer]:
    """The local OpenAI-compatible model server (127.0.0.1), scripted per test."""
    server = await ModelServer().start()
    yield server
    await server.stop()
