"""Fixtures for the HTTP edge tests (the harness itself lives in api_harness.py)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from api_harness import PROJECT, TOKEN, RecordingEngine, ServerThread, client_for

from callplane.api import MemoryIdempotencyStore, create_app
from callplane.api.auth import FailureLimiter


@pytest.fixture(scope="module")
def engine() -> RecordingEngine:
    return RecordingEngine()


@pytest.fixture(scope="module")
def store() -> MemoryIdempotencyStore:
    return MemoryIdempotencyStore()


@pytest.fixture(scope="module")
def server(engine: RecordingEngine, store: MemoryIdempotencyStore) -> Iterator[ServerThread]:
    # The module's tests share this server and send wrong credentials on purpose, many more than
    # the default limit; the limit itself is tested in test_auth_limits.py.
    limiter = FailureLimiter(max_failures=1_000_000)
    app = create_app(engine, project_id=PROJECT, token=TOKEN, idempotency=store, limiter=limiter)
    with ServerThread(app) as running:
        yield running


@pytest.fixture
def http(server: ServerThread, engine: RecordingEngine) -> Iterator[httpx.Client]:
    engine.reset()
    with client_for(server.base_url) as client:
        yield client
