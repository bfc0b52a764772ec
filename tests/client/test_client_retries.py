"""Retries: which failures, in what order, how long between attempts, and idempotency keys."""

from __future__ import annotations

import itertools
import math
import socket
import time
import uuid
from email.utils import formatdate
from typing import Any

import pytest

from callplane import AsyncRestClient, RestClient, RestError, TransportError

CALL_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


def gaps(server: Any) -> list[float]:
    arrivals = [request.at for request in server.requests]
    return [later - earlier for earlier, later in itertools.pairwise(arrivals)]


def keys(server: Any) -> list[str]:
    return [request.headers["idempotency-key"] for request in server.requests]


def retrying(server: Any, **kwargs: Any) -> RestClient:
    return RestClient("p", "t", server.host, timeout=5.0, **kwargs)


def test_off_by_default(client: RestClient, server: Any) -> None:
    server.reply(503)
    with pytest.raises(RestError) as raised:
        client.calling.end(CALL_ID)
    assert raised.value.status_code == 503
    assert len(server.requests) == 1


def test_429_and_503_are_retried_with_one_idempotency_key(server: Any) -> None:
    server.reply(503, json_body={"error": "Service Unavailable"})
    server.reply(429, json_body={"error": "Too Many Requests"})
    server.reply(200, json_body={"id": CALL_ID, "status": "answered"})
    with retrying(server, retries=2, retry_backoff=0.01) as client:
        result = client.calling.play(CALL_ID, play=[{"type": "silence", "duration": 1}])
    assert result == {"id": CALL_ID, "status": "answered"}
    assert len(server.requests) == 3
    assert len(set(keys(server))) == 1
    assert uuid.UUID(keys(server)[0]).version == 4
    assert [r.body for r in server.requests] == [server.requests[0].body] * 3


def test_exhausted_retries_raise_the_last_error(server: Any) -> None:
    for _ in range(3):
        server.reply(503, json_body={"error": "Service Unavailable"})
    server.reply(200)  # never reached
    with (
        retrying(server, retries=2, retry_backoff=0.01) as client,
        pytest.raises(RestError) as raised,
    ):
        client.calling.end(CALL_ID)
    assert raised.value.status_code == 503
    assert len(server.requests) == 3


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422, 500, 502, 504])
def test_other_statuses_are_not_retried(server: Any, status: int) -> None:
    server.reply(status, json_body={"error": "no"})
    with retrying(server, retries=3, retry_backoff=0.01) as client, pytest.raises(RestError):
        client.calling.end(CALL_ID)
    assert len(server.requests) == 1


def test_each_command_gets_its_own_key(client: RestClient, server: Any) -> None:
    client.calling.end(CALL_ID)
    client.calling.end(CALL_ID)
    client.calling.denoise(CALL_ID)
    assert len(set(keys(server))) == 3


def test_backoff_is_exponential_with_jitter(server: Any) -> None:
    for _ in range(3):
        server.reply(503)
    with retrying(server, retries=3, retry_backoff=0.1) as client:
        client.calling.end(CALL_ID)
    assert len(server.requests) == 4
    for gap, ceiling in zip(gaps(server), (0.1, 0.2, 0.4), strict=True):
        assert ceiling / 2 <= gap < ceiling + 0.15


def test_retry_after_seconds_is_honoured(server: Any) -> None:
    # A backoff of 20 s would fail the test: only Retry-After can explain a ~1 s gap.
    server.reply(429, headers={"Retry-After": "1"})
    with retrying(server, retries=1, retry_backoff=20) as client:
        client.calling.end(CALL_ID)
    [gap] = gaps(server)
    assert 1.0 <= gap < 1.5


def test_retry_after_http_date_is_honoured(server: Any) -> None:
    # HTTP-dates have whole seconds: a date 2 s past the next whole second means a wait of 2-3 s.
    retry_at = math.ceil(time.time()) + 2
    server.reply(503, headers={"Retry-After": formatdate(retry_at, usegmt=True)})
    started = time.monotonic()
    with retrying(server, retries=1, retry_backoff=20) as client:
        client.calling.end(CALL_ID)
    [gap] = gaps(server)
    assert 1.5 <= gap < 3.5
    assert time.monotonic() - started < 4.0


def test_retry_after_in_the_past_retries_at_once(server: Any) -> None:
    server.reply(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    with retrying(server, retries=1, retry_backoff=20) as client:
        client.calling.end(CALL_ID)
    [gap] = gaps(server)
    assert gap < 0.3


def test_unparseable_retry_after_falls_back_to_backoff(server: Any) -> None:
    server.reply(503, headers={"Retry-After": "soon"})
    with retrying(server, retries=1, retry_backoff=0.2) as client:
        client.calling.end(CALL_ID)
    [gap] = gaps(server)
    assert 0.1 <= gap < 0.35


def test_retry_after_beyond_max_delay_is_not_waited_for(server: Any) -> None:
    server.reply(429, json_body={"error": "Too Many Requests"}, headers={"Retry-After": "3600"})
    started = time.monotonic()
    with (
        retrying(server, retries=3, retry_max_delay=10) as client,
        pytest.raises(RestError) as raised,
    ):
        client.calling.end(CALL_ID)
    assert raised.value.status_code == 429
    assert len(server.requests) == 1
    assert time.monotonic() - started < 0.5


def test_transport_failures_are_retried_with_the_same_key(server: Any) -> None:
    server.reply(drop=True)
    server.reply(drop=True)
    with retrying(server, retries=2, retry_backoff=0.01) as client:
        assert client.calling.end(CALL_ID, reason="hangup") == server.call_leg
    assert len(server.requests) == 3
    assert len(set(keys(server))) == 1


def test_refused_connection_is_retried_then_raised() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        host = f"127.0.0.1:{sock.getsockname()[1]}"
    started = time.monotonic()
    client = RestClient("p", "t", host, retries=2, retry_backoff=0.2)
    with client, pytest.raises(TransportError, match=r"\(after 3 attempts\)$") as raised:
        client.calling.end(CALL_ID)
    # Two waits: 0.1-0.2 s, then 0.2-0.4 s.
    assert 0.3 <= time.monotonic() - started < 1.0
    assert raised.value.attempts == 3


async def test_async_retry_after_and_key_reuse(server: Any) -> None:
    server.reply(429, headers={"Retry-After": "0.3"})
    server.reply(drop=True)
    async with AsyncRestClient("p", "t", server.host, retries=2, retry_backoff=0.01) as client:
        assert await client.calling.denoise(CALL_ID) == server.call_leg
        await client.calling.denoise(CALL_ID)
    first, second, third, fourth = keys(server)
    assert first == second == third != fourth
    assert 0.3 <= gaps(server)[0] < 0.6
