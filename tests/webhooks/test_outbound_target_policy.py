"""Connect-time half of the outbound target policy: every connection is resolved, checked and
made to the checked address, for httpx fetches (each redirect hop) and for `_http1` (webhooks).

Names are answered by a fake resolver (a test DNS answer: ``evil.test`` -> 10.0.0.1). Nothing is
sent anywhere but 127.0.0.1: refused targets are refused before any connect, and a counting
origin server on 127.0.0.1 proves that no connection reached it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from callplane._http1 import ConnectionFailed, ConnectionPool
from callplane.engine.audio import AudioResolver, PlayItemError
from callplane.engine.swml.web import perform_request
from callplane.netpolicy import TargetPolicy, TargetRefused
from callplane.store import Store
from callplane.webhooks import WebhookOutbox

FAKE_DNS = {
    "evil.test": ["10.0.0.1"],
    "metadata.test": ["169.254.169.254"],
    "mixed.test": ["93.184.216.34", "127.0.0.1"],
    "loop.test": ["127.0.0.1"],
}


async def fake_resolver(host: str, port: int) -> list[str]:
    return FAKE_DNS.get(host, [])


@dataclass
class Origin:
    """An HTTP/1.1 server on 127.0.0.1 answering ``routes[path] = (status, headers, body)``."""

    routes: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    connections: int = 0
    hosts: list[str] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                lines = head.split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                self.hosts.append(headers.get("host", ""))
                if int(headers.get("content-length", "0")):
                    await reader.readexactly(int(headers["content-length"]))
                status, extra, body = self.routes.get(path, (200, {}, b"ok"))
                out = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in extra.items()]
                close = extra.get("Connection") == "close"  # the body ends with the connection
                if "Content-Length" not in extra and not close:
                    out.append(f"Content-Length: {len(body)}")
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + body)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    server = Origin()
    await server.start()
    yield server
    await server.stop()


def _deny(origin: Origin | None = None) -> TargetPolicy:
    trusted = frozenset({("127.0.0.1", origin.port)}) if origin is not None else frozenset()
    return TargetPolicy(allow_private=False, trusted=trusted, resolver=fake_resolver)


# ------------------------------------------------------------------ the policy itself


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "2130706433", "localhost", "evil.test", "metadata.test", "mixed.test"]
)
async def test_vet_refuses_private_literals_and_names_resolving_to_them(host: str) -> None:
    with pytest.raises(TargetRefused, match="--private-targets deny"):
        await _deny().vet(host, 80)


async def test_vet_returns_the_checked_address_and_allow_resolves_nothing() -> None:
    async def public(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    assert await TargetPolicy(False, resolver=public).vet("swml.test", 80) == "93.184.216.34"
    assert await TargetPolicy(True, resolver=fake_resolver).vet("evil.test", 80) == "evil.test"


# ------------------------------------------------------------------ httpx (SWML, audio, request)


def _client(policy: TargetPolicy) -> httpx.AsyncClient:
    return policy.http_client(timeout=httpx.Timeout(5.0))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/",
        "http://2130706433:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://localhost:{port}/",
        "http://loop.test:{port}/",
    ],
)
async def test_http_client_refuses_before_connecting(origin: Origin, url: str) -> None:
    async with _client(_deny()) as client:
        with pytest.raises(httpx.ConnectError, match="--private-targets deny"):
            await client.get(url.format(port=origin.port))
    assert origin.connections == 0


@pytest.mark.parametrize(
    "location",
    [
        "http://evil.test:{port}/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/latest/meta-data/",
        "http://127.0.0.1:{other}/",
        "http://metadata.test/",
    ],
)
async def test_every_redirect_hop_is_checked(origin: Origin, location: str) -> None:
    # The first hop is the operator's trusted origin; where it redirects to is not.
    target = location.format(port=origin.port, other=origin.port + 1)
    origin.routes["/start"] = (302, {"Location": target}, b"")
    async with _client(_deny(origin)) as client:
        with pytest.raises(httpx.ConnectError, match="--private-targets deny"):
            await client.get(origin.url("/start"), follow_redirects=True)
    assert origin.connections == 1  # the first hop only


async def test_redirects_are_capped(origin: Origin) -> None:
    for i in range(10):
        origin.routes[f"/r{i}"] = (302, {"Location": f"/r{i + 1}"}, b"")
    async with _client(TargetPolicy()) as client:
        origin.routes["/r5"] = (200, {}, b"arrived")
        assert (await client.get(origin.url("/r0"), follow_redirects=True)).text == "arrived"
        origin.routes["/r5"] = (302, {"Location": "/r6"}, b"")  # six hops now: one too many
        with pytest.raises(httpx.TooManyRedirects):
            await client.get(origin.url("/r0"), follow_redirects=True)


async def test_connection_goes_to_the_vetted_address_with_the_names_host_header(
    origin: Origin,
) -> None:
    # A policy whose check answers 127.0.0.1 for a name no real DNS knows: the request arrives,
    # so the connection used the checked address and did not resolve the name again.
    class Pinned(TargetPolicy):
        async def vet(self, host: str, port: int) -> str:
            assert host == "pinned.invalid"
            return "127.0.0.1"

    async with _client(Pinned(allow_private=False)) as client:
        response = await client.get(origin.url("/", host="pinned.invalid"))
    assert response.text == "ok"
    assert origin.hosts == [f"pinned.invalid:{origin.port}"]


# ------------------------------------------------------------------ _http1 and the webhook outbox


async def test_http1_pool_refuses_before_connecting(origin: Origin) -> None:
    for host in ("127.0.0.1", "evil.test", "0x7f000001"):
        pool = ConnectionPool(
            origin.url("", host=host),
            headers={},
            max_connections=1,
            timeout=5,
            connect_to=_deny().vet,
        )
        with pytest.raises(ConnectionFailed, match="--private-targets deny"):
            await pool.post("/hook", b"{}", {})
        await pool.aclose()
    assert origin.connections == 0


async def test_http1_caps_the_response_body(origin: Origin) -> None:
    origin.routes["/big"] = (200, {}, b"x" * 200_000)
    origin.routes["/huge-declared"] = (200, {"Content-Length": str(10**12)}, b"")
    pool = ConnectionPool(origin.url(""), headers={}, max_connections=1, timeout=5, max_body=1000)
    for path in ("/big", "/huge-declared"):
        with pytest.raises(ConnectionFailed, match="over 1000 bytes"):
            await pool.post(path, b"{}", {})
    assert (await pool.post("/small", b"{}", {})).content == b"ok"
    await pool.aclose()


async def test_webhook_to_a_refused_receiver_is_given_up_at_once(
    origin: Origin, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store.open(tmp_path / "db.sqlite")
    outbox = WebhookOutbox(
        store, signing_key="k", min_backoff=0.01, max_backoff=0.02, targets=_deny()
    )
    await outbox.start()
    with caplog.at_level(logging.WARNING, logger="callplane.webhooks"):
        outbox.enqueue(origin.url("/status"), {"n": 1}, "call-1")
        outbox.enqueue(origin.url("/status", host="evil.test"), {"n": 2}, "call-2")
        async with asyncio.timeout(5):
            await outbox.wait_idle()
    await outbox.stop(flush_timeout=0)
    dead = store.outbox_list("dead")
    store.close()
    assert len(dead) == 2 and all(row["attempts"] == 1 for row in dead)
    assert all("--private-targets deny" in (row["last_error"] or "") for row in dead)
    assert "--private-targets deny" in caplog.text
    assert origin.connections == 0


# ------------------------------------------------------------------ response bodies are capped


class _NoSpeech:
    async def synthesize(self, text: str, language: str, voice: str | None, gender: str) -> Any:
        raise AssertionError("not used")


@pytest.mark.parametrize("framing", [{}, {"Connection": "close"}])
async def test_audio_fetch_is_capped_and_streamed(
    origin: Origin, tmp_path: Path, framing: dict[str, str]
) -> None:
    origin.routes["/big.wav"] = (200, {"Content-Type": "audio/wav", **framing}, b"\0" * 300_000)
    async with _client(TargetPolicy()) as client:
        resolver = AudioResolver(tmp_path, client, _NoSpeech(), max_bytes=100_000)
        with pytest.raises(PlayItemError, match="over 100000 bytes"):
            await resolver.resolve(
                {"type": "audio", "params": {"url": origin.url("/big.wav")}},
                language="en-US",
                voice=None,
                gender="female",
            )
    assert os.listdir(tmp_path) == []  # no partial download left behind


async def test_audio_fetch_refused_by_the_policy_is_a_play_error(tmp_path: Path) -> None:
    async with _client(_deny()) as client:
        resolver = AudioResolver(tmp_path, client, _NoSpeech())
        with pytest.raises(PlayItemError, match="--private-targets deny"):
            await resolver.resolve(
                {"type": "audio", "params": {"url": "http://evil.test/a.wav"}},
                language="en-US",
                voice=None,
                gender="female",
            )


async def test_swml_request_body_is_capped(origin: Origin) -> None:
    origin.routes["/big"] = (200, {"Connection": "close"}, b"x" * 50_000)
    origin.routes["/small"] = (200, {}, b'{"a": 1}')
    async with _client(TargetPolicy()) as client:
        big = await perform_request(
            {"url": origin.url("/big"), "method": "GET"}, client=client, max_bytes=10_000
        )
        small = await perform_request(
            {"url": origin.url("/small"), "method": "GET", "save_variables": True},
            client=client,
            max_bytes=10_000,
        )
    assert big["request_result"] == "failed" and "request_response_body" not in big
    assert small["request_result"] == "success" and small["request_response"] == {"a": 1}
