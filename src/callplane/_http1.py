"""A lean HTTP/1.1 keep-alive connection pool on asyncio streams, for POSTing small JSON bodies:
`AsyncRestClient`'s commands and the webhook outbox's deliveries.

Why not ``httpx.AsyncClient``: for many small concurrent requests its stack costs far more CPU
than the exchange itself. Measured with bench/bench_client.py (50 commands in flight against a
local server), httpx's async path managed ~200 commands/s (slower than sequential ``requests``)
because httpcore's pool polls every pooled socket on every request and anyio adds layers per
read/write; plain asyncio streams do >10k/s. bench/bench_calls.py found the same in the server:
webhook POSTs through httpx took 30-50 % of its CPU during bursts of calls. Both users need one
request shape (POST, a body with Content-Length; the outbox also sends bodiless GETs) and the
response forms HTTP/1.1 allows, which is all this module implements. TLS uses httpx's default
context, so trust matches the sync client. HTTP proxies are not supported here.

A leaf module: it imports nothing from callplane, so the client stays standalone.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

_MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024

#: ``(host, port) -> address to connect to``; raises OSError to refuse (see callplane.netpolicy).
ConnectTo = Callable[[str, int], Awaitable[str]]


class ConnectionFailed(Exception):
    """No (complete) response: the message says what happened on the wire."""


@dataclass(frozen=True, slots=True)
class RawResponse:
    status: int
    headers: dict[str, str]  # names lower-cased; repeated headers joined with ", "
    content: bytes


_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class ConnectionPool:
    """Up to ``max_connections`` keep-alive connections to one origin; callers beyond that wait."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str],
        max_connections: int,
        timeout: float,
        connect_to: ConnectTo | None = None,
        max_body: int = MAX_BODY,
    ) -> None:
        """``connect_to`` picks (and may refuse) the address each new connection goes to; the
        Host header and the TLS server name stay the URL's. A response body over ``max_body``
        bytes fails the request."""
        parts = urlsplit(base_url)
        self._tls = parts.scheme.lower() == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._tls else 80)
        self._ssl: ssl.SSLContext | None = httpx.create_ssl_context() if self._tls else None
        self._prefix = parts.path.rstrip("/")
        # The request head is the same for every command but for two headers; encode it once.
        fixed = {"Host": parts.netloc, **headers}
        self._head = "".join(f"{name}: {value}\r\n" for name, value in fixed.items()).encode()
        self._timeout = timeout
        self._connect_to = connect_to
        self._max_body = max_body
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._closed = False

    async def post(self, path: str, body: bytes, extra_headers: dict[str, str]) -> RawResponse:
        """POST ``body`` to ``path`` (below the base URL's path; may carry a query)."""
        return await self.request("POST", path, body, extra_headers)

    async def request(
        self, method: str, path: str, body: bytes | None, extra_headers: dict[str, str]
    ) -> RawResponse:
        """``method`` ``path`` with ``body``; ``None`` sends no body and no Content-Length (a
        GET: RFC 9110 §8.6 asks not to announce content a method does not expect)."""
        if self._closed:
            raise RuntimeError("the client has been closed")
        head = f"{method} {self._prefix}{path} HTTP/1.1\r\n".encode() + self._head
        for name, value in extra_headers.items():
            head += f"{name}: {value}\r\n".encode()
        if body is None:
            request = head + b"\r\n"
        else:
            request = head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        async with self._slots:
            connection = self._take_idle()
            try:
                async with asyncio.timeout(self._timeout):
                    if connection is None:
                        connection = await self._connect()
                    response, keep_alive = await _exchange(connection, request, self._max_body)
            except TimeoutError:
                _close(connection)
                raise ConnectionFailed(f"timed out after {self._timeout:g} s") from None
            except BaseException:
                _close(connection)  # the connection's state is unknown
                raise
            if keep_alive and not self._closed:
                self._idle.append(connection)
            else:
                _close(connection)
            return response

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()
        for _, writer in idle:
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if not connection[0].at_eof():  # the server has not closed it while idle
                return connection
            _close(connection)
        return None

    async def _connect(self) -> _Connection:
        try:
            address = self._host
            if self._connect_to is not None:
                address = await self._connect_to(self._host, self._port)
            return await asyncio.open_connection(
                address,
                self._port,
                ssl=self._ssl,
                server_hostname=self._host if self._tls else None,
                limit=_MAX_HEAD,
            )
        except OSError as exc:
            raise ConnectionFailed(f"cannot connect: {type(exc).__name__}: {exc}") from exc


async def _exchange(
    connection: _Connection, request: bytes, max_body: int
) -> tuple[RawResponse, bool]:
    reader, writer = connection
    try:
        writer.write(request)
        await writer.drain()
        while True:
            status, version, headers = await _read_head(reader)
            if not 100 <= status < 200:
                break  # 1xx interim responses are skipped
        content, keep_alive = await _read_body(reader, status, headers, max_body)
    except asyncio.IncompleteReadError as exc:
        raise ConnectionFailed(
            "the server closed the connection "
            + ("before responding" if not exc.partial else "in the middle of the response")
        ) from None
    except (asyncio.LimitOverrunError, ValueError) as exc:
        raise ConnectionFailed(f"malformed HTTP response: {exc}") from None
    except OSError as exc:
        raise ConnectionFailed(f"{type(exc).__name__}: {exc}") from exc
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = keep_alive and version == "HTTP/1.1" and "close" not in tokens
    return RawResponse(status, headers, content), keep_alive


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, str, dict[str, str]]:
    lines = (await reader.readuntil(b"\r\n\r\n"))[:-4].decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError(f"unexpected status line {lines[0][:80]!r}")
    status = int(rest[:3])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"bad header line {line[:80]!r}")
        name, value = name.strip().lower(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return status, version, headers


def _check_size(size: int, max_body: int) -> None:
    if size > max_body:
        raise ValueError(f"response body over {max_body} bytes")


async def _read_body(
    reader: asyncio.StreamReader, status: int, headers: dict[str, str], max_body: int
) -> tuple[bytes, bool]:
    """The body and whether the connection can carry another request."""
    if status in (204, 304):
        return b"", True
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks: list[bytes] = []
        total = 0
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
            total += size
            _check_size(total, max_body)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                return b"".join(chunks), True
            chunks.append(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise ValueError("bad chunk terminator")
    if "content-length" in headers:
        length = int(headers["content-length"])
        _check_size(length, max_body)
        return await reader.readexactly(length), True
    # Delimited by the server closing the connection.
    parts: list[bytes] = []
    total = 0
    while chunk := await reader.read(64 * 1024):
        total += len(chunk)
        _check_size(total, max_body)
        parts.append(chunk)
    return b"".join(parts), False


def _close(connection: _Connection | None) -> None:
    if connection is not None:
        connection[1].close()
