"""Fixtures for the HTTP edge tests (the harness itself lives in api_harness.py)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from api_harness import PROJECT, TOKEN, RecordingEngine, ServerThread, client_for

from callplane.api import MemoryIdempotencyStore, create_app


@pytest.fixture(scope="module")
def engine() -> RecordingEngine:
    return RecordingEngine()


@pytest.fixture(scope="module")
def store() -> MemoryIdempotencyStore:
    return MemoryIdempotencyStore()


@pytest.fixture(scope="module")
def server(engine: RecordingEngine, store: MemoryIdempotencyStore) -> Iterator[ServerThread]:
    app = create_app(engine, project_id=PROJECT, token=TOKEN, idempotency=store)
    with ServerThread(app) as running:
        yield running


@pytest.fixture
def http(server: ServerThread, engine: RecordingEngine) -> Iterator[httpx.Client]:
    engine.reset()
    with client_for(server.base_url) as client:
        yield client
