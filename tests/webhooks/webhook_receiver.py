"""A real HTTP/1.1 webhook receiver on 127.0.0.1 for the outbox tests (and e2e tests).

Written on bare asyncio streams rather than uvicorn so that a test can close the listening socket
*and* every kept-alive connection (a receiver that is really down: connection refused), reopen on
the same port, count requests in flight, and script each response.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    at: float = field(default_factory=time.monotonic)
    status: int = 0  # what the receiver answered

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def delivery_id(self) -> int:
        return int(self.headers["x-callplane-delivery"])


Reply = tuple[int, dict[str, str]]
Policy = Callable[[Received], Awaitable[Reply]]


async def always_ok(_: Received) -> Reply:
    return 200, {}


class Receiver:
    """Records every request; answers with ``policy(request)`` -> (status, extra headers)."""

    def __init__(self, policy: Policy = always_ok) -> None:
        self.policy = policy
        self.requests: list[Received] = []
        self.port = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._changed = asyncio.Event()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Go down hard: stop listening and drop every open connection."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._server.wait_closed()
            self._server = None

    def accepted(self, path: str | None = None) -> list[Received]:
        """Requests answered with a 2xx (the ones the outbox counts as delivered)."""
        return [
            r for r in self.requests if 200 <= r.status < 300 and (path is None or r.path == path)
        ]

    async def wait_for(self, predicate: Callable[[], bool], limit: float) -> None:
        async with asyncio.timeout(limit):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Received(method, path, headers, body)
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    status, extra = await self.policy(request)
                finally:
                    self.in_flight -= 1
                # Recorded only once answered, so "received" means the receiver saw it whole.
                request.status = status
                self.requests.append(request)
                self._changed.set()
                out = f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n"
                out += "".join(f"{k}: {v}\r\n" for k, v in extra.items())
                writer.write((out + "\r\n").encode("latin-1"))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()


def per_key(requests: list[Received]) -> dict[str, list[int]]:
    """Sequence numbers (payload "n") received for each payload "key", in arrival order.

    Arrival = when the request was read, not when it was answered: a request the sender timed out on
    may be answered after the retry that followed it.
    """
    out: dict[str, list[int]] = {}
    for r in sorted(requests, key=lambda r: r.at):
        payload = r.json
        out.setdefault(payload["key"], []).append(payload["n"])
    return out
