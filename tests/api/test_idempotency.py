"""Idempotency-Key: replay, reuse with another body, concurrency, scope and expiry."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
from api_harness import CALL_ID, PROJECT, TOKEN, RecordingEngine, ServerThread, client_for

from callplane.api import MemoryIdempotencyStore, create_app
from callplane.engine.facade import CommandError

URL = "/api/calling/calls"
PLAY = {
    "command": "calling.play",
    "id": CALL_ID,
    "params": {"control_id": "p1", "play": [{"type": "tts", "text": "Hi"}]},
}


def key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def test_replay_returns_the_original_response(http: httpx.Client, engine: RecordingEngine) -> None:
    headers = key()
    first = http.post(URL, json=PLAY, headers=headers)
    # Same meaning, different bytes: key order and whitespace do not matter.
    reordered = json.dumps(dict(reversed(list(PLAY.items()))), indent=2)
    second = http.post(URL, content=reordered, headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert len(engine.executed) == 1


def test_engine_refusals_are_replayed_too(http: httpx.Client, engine: RecordingEngine) -> None:
    engine.failures["calling.play"] = CommandError(409, "invalid_state", "control_id in use")
    headers = key()
    first = http.post(URL, json=PLAY, headers=headers)
    engine.failures.clear()
    second = http.post(URL, json=PLAY, headers=headers)
    assert first.status_code == second.status_code == 409
    assert first.json() == second.json()
    assert len(engine.executed) == 1


def test_a_503_is_not_replayed_and_says_when_to_retry(
    http: httpx.Client, engine: RecordingEngine
) -> None:
    engine.failures["calling.play"] = CommandError(
        503, "service_unavailable", "no RTP ports", retry_after=5
    )
    headers = key()
    refused = http.post(URL, json=PLAY, headers=headers)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "5"
    engine.failures.clear()
    retried = http.post(URL, json=PLAY, headers=headers)  # the client's retry, same key
    assert retried.status_code == 200
    assert "idempotent-replayed" not in retried.headers
    assert "retry-after" not in retried.headers
    assert len(engine.executed) == 2


def test_key_reused_with_another_body_is_422(http: httpx.Client, engine: RecordingEngine) -> None:
    headers = key()
    assert http.post(URL, json=PLAY, headers=headers).status_code == 200
    other = {**PLAY, "params": {**PLAY["params"], "control_id": "p2"}}
    response = http.post(URL, json=other, headers=headers)
    assert response.status_code == 422
    [item] = response.json()["errors"]
    assert (item["code"], item["attribute"]) == ("idempotency_key_reused", "Idempotency-Key")
    assert len(engine.executed) == 1


@pytest.mark.parametrize(
    "first_body",
    [
        {**PLAY, "params": {"play": []}},  # 422 validation failure
        b"{not json",  # 400
    ],
)
def test_requests_that_never_reached_the_engine_are_not_remembered(
    http: httpx.Client, engine: RecordingEngine, first_body: object
) -> None:
    headers = key()
    if isinstance(first_body, bytes):
        assert http.post(URL, content=first_body, headers=headers).status_code == 400
    else:
        assert http.post(URL, json=first_body, headers=headers).status_code == 422
    fixed = http.post(URL, json=PLAY, headers=headers)
    assert fixed.status_code == 200
    assert len(engine.executed) == 1


def test_crashes_are_not_remembered(http: httpx.Client, engine: RecordingEngine) -> None:
    headers = key()
    engine.failures["calling.play"] = RuntimeError("engine bug")
    assert http.post(URL, json=PLAY, headers=headers).status_code == 500
    engine.failures.clear()
    assert http.post(URL, json=PLAY, headers=headers).status_code == 200
    assert len(engine.executed) == 2


def test_overlong_key_is_rejected(http: httpx.Client, engine: RecordingEngine) -> None:
    response = http.post(URL, json=PLAY, headers={"Idempotency-Key": "k" * 256})
    assert response.status_code == 422
    assert response.json()["errors"][0]["attribute"] == "Idempotency-Key"
    assert engine.executed == []


def test_blank_key_is_ignored(http: httpx.Client, engine: RecordingEngine) -> None:
    for _ in range(2):
        assert http.post(URL, json=PLAY, headers={"Idempotency-Key": ""}).status_code == 200
    assert len(engine.executed) == 2


async def test_concurrent_duplicates_wait_for_the_first(
    server: ServerThread, engine: RecordingEngine
) -> None:
    engine.reset()
    engine.delay = 0.3
    headers = key()
    async with httpx.AsyncClient(
        base_url=server.base_url, auth=(PROJECT, TOKEN), timeout=10, trust_env=False
    ) as client:
        responses = await asyncio.gather(
            *(client.post(URL, json=PLAY, headers=headers) for _ in range(5))
        )
    engine.delay = 0.0
    assert [r.status_code for r in responses] == [200] * 5
    assert len({r.text for r in responses}) == 1
    assert len(engine.executed) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 4


def test_keys_are_scoped_per_project() -> None:
    shared = MemoryIdempotencyStore()
    engine = RecordingEngine()
    other_project = "0c7e3d7a-8a47-4b43-9f0e-9b3f3c1c2d11"
    app_a = create_app(engine, project_id=PROJECT, token=TOKEN, idempotency=shared)
    app_b = create_app(engine, project_id=other_project, token=TOKEN, idempotency=shared)
    headers = key()
    with ServerThread(app_a) as a, ServerThread(app_b) as b:
        with client_for(a.base_url) as client:
            assert client.post(URL, json=PLAY, headers=headers).status_code == 200
        with client_for(b.base_url, auth=(other_project, TOKEN)) as client:
            response = client.post(URL, json=PLAY, headers=headers)
            assert response.status_code == 200
            assert "idempotent-replayed" not in response.headers
    assert [e.project_id for e in engine.executed] == [PROJECT, other_project]


def test_without_a_store_the_header_is_ignored() -> None:
    engine = RecordingEngine()
    app = create_app(engine, project_id=PROJECT, token=TOKEN)
    headers = key()
    with ServerThread(app) as running, client_for(running.base_url) as client:
        for _ in range(2):
            assert client.post(URL, json=PLAY, headers=headers).status_code == 200
    assert len(engine.executed) == 2


def test_memory_store_forgets_after_the_window() -> None:
    now = [1000.0]
    store = MemoryIdempotencyStore(clock=lambda: now[0])
    store.put(PROJECT, "k", 200, {"body": {"id": CALL_ID}})
    now[0] += 24 * 3600 - 1
    assert store.get(PROJECT, "k") == (200, {"body": {"id": CALL_ID}})
    assert store.get("another-project", "k") is None
    now[0] += 2
    assert store.get(PROJECT, "k") is None
