"""The async client's HTTP/1.1 connection handling against a real server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from callplane import AsyncRestClient

CALL_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


def raw_response(head: str, body: bytes) -> bytes:
    return head.replace("\n", "\r\n").encode() + b"\r\n" + body


async def test_keep_alive_connection_is_reused(aclient: AsyncRestClient, server: Any) -> None:
    for _ in range(5):
        await aclient.calling.denoise(CALL_ID)
    assert len({request.peer for request in server.requests}) == 1


async def test_pool_size_bounds_connections(server: Any) -> None:
    for _ in range(6):
        server.reply(delay=0.1)
    async with AsyncRestClient("p", "t", server.host, max_connections=2) as client:
        await asyncio.gather(*(client.calling.denoise(CALL_ID) for _ in range(6)))
    assert len({request.peer for request in server.requests}) == 2


async def test_chunked_response(aclient: AsyncRestClient, server: Any) -> None:
    body = json.dumps({"id": CALL_ID, "status": "answered"}).encode()
    chunked = b"%x\r\n%s\r\n%x;ext=1\r\n%s\r\n0\r\nX-Trailer: t\r\n\r\n" % (
        10,
        body[:10],
        len(body) - 10,
        body[10:],
    )
    server.reply(raw=raw_response("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n", chunked))
    assert await aclient.calling.denoise(CALL_ID) == {"id": CALL_ID, "status": "answered"}
    assert await aclient.calling.denoise(CALL_ID) == server.call_leg  # same connection still usable
    assert len({request.peer for request in server.requests}) == 1


async def test_connection_close_response(aclient: AsyncRestClient, server: Any) -> None:
    server.reply(close=True, headers={"Connection": "close"})
    await aclient.calling.denoise(CALL_ID)
    await aclient.calling.denoise(CALL_ID)
    assert len({request.peer for request in server.requests}) == 2


async def test_body_delimited_by_close(aclient: AsyncRestClient, server: Any) -> None:
    server.reply(
        raw=raw_response("HTTP/1.0 200 OK\nContent-Type: application/json\n", b'{"a": 1}'),
        close=True,
    )
    assert await aclient.calling.denoise(CALL_ID) == {"a": 1}
    assert await aclient.calling.denoise(CALL_ID) == server.call_leg


async def test_interim_100_response_is_skipped(aclient: AsyncRestClient, server: Any) -> None:
    server.reply(
        raw=raw_response("HTTP/1.1 100 Continue\n", b"")
        + raw_response("HTTP/1.1 200 OK\nContent-Length: 8\n", b'{"a": 1}')
    )
    assert await aclient.calling.denoise(CALL_ID) == {"a": 1}


async def test_repeated_headers_and_request_id(aclient: AsyncRestClient, server: Any) -> None:
    from callplane import RestError

    server.reply(
        raw=raw_response(
            "HTTP/1.1 503 Service Unavailable\nX-Thing: a\nX-Thing: b\nX-Request-Id: r1\n"
            "Content-Length: 2\n",
            b"{}",
        )
    )
    with pytest.raises(RestError) as raised:
        await aclient.calling.denoise(CALL_ID)
    assert raised.value.headers["x-thing"] == "a, b"
    assert raised.value.request_id == "r1"


async def test_idle_connection_closed_by_server_is_replaced(
    aclient: AsyncRestClient, server: Any
) -> None:
    server.reply(close=True)  # answers without "Connection: close", then hangs up
    await aclient.calling.denoise(CALL_ID)
    await asyncio.sleep(0.05)  # let the client see the FIN while the connection is idle
    assert await aclient.calling.denoise(CALL_ID) == server.call_leg
    assert len(server.requests) == 2


async def test_path_prefix_and_host_header(server: Any) -> None:
    async with AsyncRestClient("p", "t", f"http://{server.host}/gw/") as client:
        await client.calling.denoise(CALL_ID)
    assert server.last.path == "/gw/api/calling/calls"
    assert server.last.headers["host"] == server.host


async def test_closed_client_refuses_commands(server: Any) -> None:
    client = AsyncRestClient("p", "t", server.host)
    await client.calling.denoise(CALL_ID)
    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await client.calling.denoise(CALL_ID)


async def test_cancelled_command_does_not_poison_the_pool(
    aclient: AsyncRestClient, server: Any
) -> None:
    server.reply(delay=0.3)
    task = asyncio.ensure_future(aclient.calling.denoise(CALL_ID))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.3)
    assert await aclient.calling.denoise(CALL_ID) == server.call_leg
