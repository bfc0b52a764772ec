"""Error responses and transport failures, sync and async."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from callplane import AsyncRestClient, CallplaneError, RestClient, RestError, TransportError

CALL_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"

ERRORS_422 = [
    {
        "type": "validation_error",
        "code": "missing_required_parameter",
        "message": "url must be a valid http or https url",
        "attribute": "url",
        "url": "https://signalwire.com/docs/apis/error-codes",
    },
    {
        "type": "validation_error",
        "code": "not_e164",
        "message": "from must be E.164",
        "attribute": "from",
        "url": "https://signalwire.com/docs/apis/error-codes",
    },
]

CASES = [
    (400, {"error": "Bad Request"}, "Bad Request"),
    (401, {"error": "Unauthorized"}, "Unauthorized"),
    (404, {"error": "Not Found"}, "Not Found"),
    (409, {"error": "Conflict", "message": "a transcription is already running"}, "Conflict"),
    (
        422,
        {"errors": ERRORS_422},
        "missing_required_parameter: url must be a valid http or https url [url]; "
        "not_e164: from must be E.164 [from]",
    ),
    (429, {"error": "Too Many Requests"}, "Too Many Requests"),
    (500, {"error": "Internal Server Error"}, "Internal Server Error"),
]


def refused_host() -> str:
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


@pytest.mark.parametrize(("status", "body", "detail"), CASES, ids=[str(c[0]) for c in CASES])
def test_http_errors(client: RestClient, server: Any, status: int, body: Any, detail: str) -> None:
    server.reply(status, json_body=body, headers={"X-Request-Id": "req-42"})
    with pytest.raises(RestError) as raised:
        client.calling.play(CALL_ID, play=[{"type": "tts", "text": "hi"}], control_id="p1")
    error = raised.value
    assert type(error) is RestError
    assert error.status_code == status
    assert error.body == body
    assert error.url == server.url
    assert error.method == "POST"
    assert error.command == "calling.play"
    assert error.headers["x-request-id"] == "req-42"
    assert error.headers["content-type"] == "application/json"
    assert error.request_id == "req-42"
    assert error.errors == (ERRORS_422 if status == 422 else [])
    assert str(error) == (
        f"POST {server.url} (calling.play) returned {status}: {detail} (request-id: req-42)"
    )
    assert len(server.requests) == 1  # retries are off by default


@pytest.mark.parametrize(("status", "body", "detail"), CASES, ids=[str(c[0]) for c in CASES])
async def test_http_errors_async(
    aclient: AsyncRestClient, server: Any, status: int, body: Any, detail: str
) -> None:
    server.reply(status, json_body=body)
    with pytest.raises(RestError) as raised:
        await aclient.calling.end(CALL_ID)
    assert raised.value.status_code == status
    assert raised.value.body == body
    assert raised.value.request_id is None
    assert str(raised.value) == f"POST {server.url} (calling.end) returned {status}: {detail}"


@pytest.mark.parametrize(
    "header",
    ["X-Request-ID", "x-signalwire-request-id", "Request-Id", "X-Amzn-RequestId"],
)
def test_request_id_headers(client: RestClient, server: Any, header: str) -> None:
    server.reply(500, json_body={"error": "boom"}, headers={header: "rid-7"})
    with pytest.raises(RestError) as raised:
        client.calling.end(CALL_ID)
    assert raised.value.request_id == "rid-7"


def test_request_id_header_preference(client: RestClient, server: Any) -> None:
    server.reply(500, headers={"X-Amzn-RequestId": "amzn", "X-SignalWire-Request-Id": "sw"})
    with pytest.raises(RestError) as raised:
        client.calling.end(CALL_ID)
    assert raised.value.request_id == "sw"


def test_text_error_body(client: RestClient, server: Any) -> None:
    server.reply(502, text="<html>Bad Gateway</html>")
    with pytest.raises(RestError) as raised:
        client.calling.end(CALL_ID)
    assert raised.value.status_code == 502
    assert raised.value.body == "<html>Bad Gateway</html>"
    assert raised.value.errors == []
    assert str(raised.value).endswith("returned 502: <html>Bad Gateway</html>")


def test_2xx_with_non_json_body_raises(client: RestClient, server: Any) -> None:
    server.reply(200, text="OK")
    with pytest.raises(RestError) as raised:
        client.calling.end(CALL_ID)
    assert raised.value.status_code == 200
    assert raised.value.body == "OK"
    assert "returned 200 with a body that is not JSON: OK" in str(raised.value)


def test_2xx_with_json_that_is_not_an_object_raises(client: RestClient, server: Any) -> None:
    server.reply(200, json_body=["a"])
    with pytest.raises(RestError, match="not an object"):
        client.calling.end(CALL_ID)


def test_long_bodies_are_shortened_in_the_message(client: RestClient, server: Any) -> None:
    server.reply(500, text="x" * 5000)
    with pytest.raises(RestError) as raised:
        client.calling.end(CALL_ID)
    assert len(str(raised.value)) < 700
    assert raised.value.body == "x" * 5000


def test_connection_refused() -> None:
    host = refused_host()
    with RestClient("p", "t", host) as client, pytest.raises(TransportError) as raised:
        client.calling.end(CALL_ID)
    error = raised.value
    assert isinstance(error, RestError)
    assert isinstance(error, CallplaneError)
    assert error.status_code is None
    assert error.headers == {}
    assert error.request_id is None
    assert error.url == f"http://{host}/api/calling/calls"
    assert error.method == "POST"
    assert str(error).startswith(
        f"POST http://{host}/api/calling/calls (calling.end) failed to reach the server: "
        "ConnectError: "
    )
    assert error.body == str(error).split("failed to reach the server: ", 1)[1]


async def test_connection_refused_async() -> None:
    host = refused_host()
    async with AsyncRestClient("p", "t", host) as client:
        with pytest.raises(TransportError) as raised:
            await client.calling.end(CALL_ID)
    assert raised.value.status_code is None
    assert raised.value.url == f"http://{host}/api/calling/calls"
    assert (
        "(calling.end) failed to reach the server: cannot connect: ConnectionRefusedError"
        in str(raised.value)
    )


def test_timeout_is_a_transport_error(server: Any) -> None:
    server.reply(delay=0.5)
    client = RestClient("p", "t", server.host, timeout=0.1)
    with client, pytest.raises(TransportError) as raised:
        client.calling.end(CALL_ID)
    assert raised.value.status_code is None
    assert "ReadTimeout" in str(raised.value)


def test_dropped_connection_is_a_transport_error(client: RestClient, server: Any) -> None:
    server.reply(drop=True)
    with pytest.raises(TransportError, match="RemoteProtocolError"):
        client.calling.end(CALL_ID)
    assert client.calling.end(CALL_ID) == server.call_leg  # the pool recovers


async def test_timeout_is_a_transport_error_async(server: Any) -> None:
    server.reply(delay=0.5)
    async with AsyncRestClient("p", "t", server.host, timeout=0.1) as client:
        with pytest.raises(TransportError, match=r"timed out after 0\.1 s"):
            await client.calling.end(CALL_ID)
        assert await client.calling.end(CALL_ID) == server.call_leg  # a fresh connection works


async def test_dropped_connection_is_a_transport_error_async(
    aclient: AsyncRestClient, server: Any
) -> None:
    server.reply(drop=True)
    with pytest.raises(TransportError, match="closed the connection before responding"):
        await aclient.calling.end(CALL_ID)
    assert len(server.requests) == 1  # a command is never silently re-sent
    assert await aclient.calling.end(CALL_ID) == server.call_leg


async def test_truncated_response_async(aclient: AsyncRestClient, server: Any) -> None:
    server.reply(raw=b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}", close=True)
    with pytest.raises(TransportError, match="in the middle of the response"):
        await aclient.calling.end(CALL_ID)


async def test_garbage_response_async(aclient: AsyncRestClient, server: Any) -> None:
    server.reply(raw=b"SSH-2.0-OpenSSH\r\n\r\n", close=True)
    with pytest.raises(TransportError, match="malformed HTTP response"):
        await aclient.calling.end(CALL_ID)
