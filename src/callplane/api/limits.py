"""Connection limits for the HTTP server that uvicorn does not have.

uvicorn bounds the idle time *between* requests (``timeout_keep_alive``) but not the time a
client may take to send a request head: its keep-alive timer starts only once a response is
complete, so a connection that never sends, or sends half a request line, is kept forever. It
also accepts connections without bound (``limit_concurrency`` answers 503 to requests but
keeps the sockets), so ~1,000 silent connections exhaust the descriptors and nothing else
connects, ``/health`` included (uvloop then accepts-and-drops every new connection).

`guarded_protocol` wraps uvicorn's HTTP protocol class with three rules:

* a request head (request line and headers) must arrive within ``head_timeout`` seconds of the
  connection opening or of its first byte after a response, and be at most ``max_head_bytes``;
  otherwise the connection is closed;
* at most ``max_connections`` connections: one more evicts the connection that has waited
  longest for a request head (a silent or slow client), else the longest idle keep-alive one,
  and only when every connection is busy with a request is the newcomer itself closed. A
  legitimate client that sends its request at once is therefore always served;
* reaching the cap is logged (at most every 10 s, with how many connections were closed).

`watch_descriptors` logs when the process nears its descriptor limit for any reason (calls'
RTP sockets, files): at EMFILE uvloop silently accepts-and-closes new connections (libuv's
reserved-descriptor trick) and asyncio logs and pauses accepting for a second, so the cap
above keeps HTTP itself well clear of it and this warning tells the operator when something
else does not.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
from dataclasses import dataclass, field
from typing import Any, Final

log = logging.getLogger("callplane.http")

HEAD_TIMEOUT: Final = 10.0
KEEP_ALIVE_TIMEOUT: Final = 15
MAX_HEAD_BYTES: Final = 64 * 1024
DEFAULT_MAX_CONNECTIONS: Final = 1000
_WARN_EVERY = 10.0


def connection_cap(requested: int) -> int:
    """``requested``, lowered to half of the process's descriptor limit: the other half is for
    SIP, RTP and tap sockets, files and the database."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return requested
    return max(16, min(requested, soft // 2))


def raise_descriptor_limit() -> None:
    """Lift the soft descriptor limit to the hard one (Debian's default soft limit is 1,024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            log.debug("cannot raise RLIMIT_NOFILE from %d to %d", soft, hard)


@dataclass
class ConnectionGate:
    """Shared by every connection of one server."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    head_timeout: float = HEAD_TIMEOUT
    max_head_bytes: int = MAX_HEAD_BYTES
    # Insertion-ordered: the oldest connection first.
    connections: dict[_Guard, None] = field(default_factory=dict)
    closed_by_cap: int = 0
    closed_by_head_timeout: int = 0
    _warned_at: float = -_WARN_EVERY
    _unreported: int = 0

    def admit(self, newcomer: _Guard) -> None:
        self.connections[newcomer] = None
        if len(self.connections) <= self.max_connections:
            return
        victim = self._victim(newcomer)
        victim.close_connection()
        self.closed_by_cap += 1
        self._unreported += 1
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            log.warning(
                "HTTP connection limit (%d) reached: closed %d connection(s) that had not sent "
                "a request (slow or idle clients)",
                self.max_connections,
                self._unreported,
            )
            self._warned_at, self._unreported = now, 0

    def _victim(self, newcomer: _Guard) -> _Guard:
        idle: _Guard | None = None
        for connection in self.connections:
            if connection is newcomer:
                continue
            if connection.awaiting_head:
                return connection
            if idle is None and not connection.busy:
                idle = connection
        return idle if idle is not None else newcomer

    def forget(self, connection: _Guard) -> None:
        self.connections.pop(connection, None)


class _Guard(asyncio.Protocol):
    """Mixed in before uvicorn's protocol class (see `guarded_protocol`)."""

    gate: ConnectionGate
    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0
    _cycle_seen: Any = None
    _transport: asyncio.BaseTransport | None = None

    @property
    def awaiting_head(self) -> bool:
        return self._head_timer is not None

    @property
    def busy(self) -> bool:
        """A request is being handled (its head arrived, its response is not complete)."""
        cycle = getattr(self, "cycle", None)
        return cycle is not None and not cycle.response_complete

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        super().connection_made(transport)
        self._arm()
        self.gate.admit(self)

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and not self.busy:
            self._arm()  # the first bytes of the next request on a kept-alive connection
        if self._head_timer is not None:
            self._head_bytes += len(data)
            if self._head_bytes > self.gate.max_head_bytes:
                log.info("closing an HTTP connection: request head over %d bytes", self._head_bytes)
                self.close_connection()
                return
        super().data_received(data)
        cycle = getattr(self, "cycle", None)
        if cycle is not None and cycle is not self._cycle_seen:
            self._cycle_seen = cycle
            self._disarm()  # the head is complete: the request is the app's now

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.gate.forget(self)
        super().connection_lost(exc)

    def close_connection(self) -> None:
        self._disarm()
        self.gate.forget(self)
        if self._transport is not None:
            self._transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._head_bytes = 0
        loop = asyncio.get_running_loop()
        self._head_timer = loop.call_later(self.gate.head_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        self.gate.closed_by_head_timeout += 1
        log.debug("closing an HTTP connection: no request head within %g s", self.gate.head_timeout)
        self.close_connection()


def guarded_protocol(gate: ConnectionGate) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools when installed, else h11) with the gate's rules."""
    base: type[asyncio.Protocol]
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        base = HttpToolsProtocol
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        base = H11Protocol
    return type(f"Guarded{base.__name__}", (_Guard, base), {"gate": gate})


def _open_descriptors() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None  # not Linux: nothing to watch


async def watch_descriptors(
    *, interval: float = 5.0, threshold: float = 0.85, limit: int | None = None
) -> None:
    """Run until cancelled; warn (at most once a minute) above ``threshold`` of the limit."""
    if limit is None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return
        limit = soft
    warned_at = -60.0
    while True:
        count = _open_descriptors()
        if count is None:
            return
        now = time.monotonic()
        if count >= threshold * limit and now - warned_at >= 60.0:
            log.warning(
                "%d of %d file descriptors in use: new connections and calls will fail "
                "(raise `ulimit -n` or lower --max-connections)",
                count,
                limit,
            )
            warned_at = now
        await asyncio.sleep(interval)
