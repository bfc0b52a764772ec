"""Media sinks: 20 ms frames of a call's audio out to somewhere else, as G.711.

A sink knows nothing of calls or operations: it takes 160-sample int16 frames (one per media
tick, see :class:`callplane.media.engine.TickFrames`) and sends them. Taps use them today; media
streams and the AI agent are meant to reuse them. :func:`party_frame` picks what a sink (or a
recording) of a direction gets from a tick.

* :class:`RtpSink`: G.711 RTP (PCMU payload type 0, PCMA 8) from its own UDP socket (an
  ephemeral port on the given host, not from the engine's RTP range), one packet per ``ptime``
  (10-120 ms), with its own random SSRC, sequence number and timestamp (RFC 3550 §5.1) and the
  marker bit on the first packet. No RTCP is sent and nothing is read from the socket.
* :class:`WebSocketSink`: a WebSocket client connection (``ws://`` / ``wss://``): an optional
  JSON text message first, then one binary message of 20 ms of G.711 (160 bytes, no header) per
  frame, an optional JSON text message on a normal close, then a close with code 1000. A slow
  reader loses frames (``queue_frames`` are queued at most) instead of delaying the caller.
  The same connection carries media streams (``engine.operations.stream``): they frame their
  audio themselves (:meth:`WebSocketSink.send_data`, :meth:`WebSocketSink.send_json`), add
  handshake headers, and read what the peer sends through ``on_message`` (bidirectional streams).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import json
import logging
import random
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import numpy as np

from callplane.media import g711
from callplane.media.sources import SAMPLE_RATE, Frame

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

    from callplane.media.engine import TickFrames

PartyDirection = Literal["speak", "listen", "both"]

log = logging.getLogger(__name__)

_RTP_HEADER = struct.Struct("!BBHII")
WS_OPEN_TIMEOUT = 5.0
WS_CLOSE_TIMEOUT = 2.0
WS_QUEUE_FRAMES = 50  # one second of audio waits for a slow WebSocket reader, then frames drop

# Sender tasks that outlive their owner's stop() (a WebSocket closing): referenced until done.
_background: set[asyncio.Task[None]] = set()


def _mix(a: Frame, b: Frame) -> Frame:
    total = a.astype(np.int32) + b
    mixed: Frame = np.clip(total, -32768, 32767).astype(np.int16)
    return mixed


def party_frame(frames: TickFrames, direction: PartyDirection) -> Frame:
    """A tick's audio seen from the call leg's party (docs/architecture.md, "Media directions"):
    ``speak`` = what it says (the far end's ``inbound`` plus speak-direction playbacks),
    ``listen`` = what it hears (``outbound``), ``both`` = the two summed (clipped to 16 bits)."""
    if direction == "listen":
        return frames.outbound
    speak = frames.inbound if frames.speak is None else _mix(frames.inbound, frames.speak)
    return speak if direction == "speak" else _mix(speak, frames.outbound)


def _encoder(payload_type: int) -> Any:
    if payload_type == 0:
        return g711.ULAW_ENCODE
    if payload_type == 8:
        return g711.ALAW_ENCODE
    raise ValueError(f"not a G.711 payload type: {payload_type}")


def open_udp(host: str, dest: str) -> socket.socket:
    """A non-blocking UDP socket on ``host`` (an ephemeral port) that can reach ``dest``; when
    the families differ, bound on the wildcard address of ``dest``'s family."""
    family = socket.AF_INET6 if ipaddress.ip_address(dest).version == 6 else socket.AF_INET
    host_is_v6 = ":" in host
    if host_is_v6 == (family == socket.AF_INET6):
        bind_host = host
    else:
        bind_host = "::" if family == socket.AF_INET6 else "0.0.0.0"
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((bind_host, 0))
    except OSError:
        sock.close()
        raise
    return sock


class RtpSink:
    """G.711 RTP from one UDP socket. ``send(frame)`` takes 20 ms frames; with ptime 10 the
    second packet of a frame leaves 10 ms after the first, with ptime > 20 a packet leaves once
    enough frames are in."""

    def __init__(
        self, sock: socket.socket, dest: tuple[str, int], *, payload_type: int, ptime: int = 20
    ) -> None:
        if ptime not in range(10, 121, 10):
            raise ValueError(f"ptime must be a multiple of 10 from 10 to 120 ms, got {ptime}")
        self._table = _encoder(payload_type)
        self._sock = sock
        self._dest = dest
        self._pt = payload_type
        self._ptime = ptime
        self._packet_samples = ptime * SAMPLE_RATE // 1000
        self._pending = bytearray()
        self._scheduled: deque[tuple[asyncio.TimerHandle, bytes]] = deque()
        self.ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._ts = random.getrandbits(32)
        self._marker = True
        self._closed = False
        self.packets_sent = 0
        self.send_errors = 0

    @classmethod
    def open(
        cls, host: str, dest: tuple[str, int], *, payload_type: int, ptime: int = 20
    ) -> RtpSink:
        """A sink on a new UDP socket bound on ``host``. Raises OSError / ValueError."""
        sock = open_udp(host, dest[0])
        try:
            return cls(sock, dest, payload_type=payload_type, ptime=ptime)
        except BaseException:
            sock.close()
            raise

    @property
    def local_address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def send(self, frame: Frame) -> None:
        if self._closed:
            return
        # Packets of the previous frame still waiting for their slot (ptime 10, a media clock
        # catching up after a stall) go first: never reordered behind this frame's packets.
        self._flush_scheduled()
        self._pending += self._table[frame.view(np.uint16)].tobytes()
        n = self._packet_samples
        delay = 0.0
        while len(self._pending) >= n:
            payload = bytes(self._pending[:n])
            del self._pending[:n]
            second = (0x80 if self._marker else 0) | self._pt
            self._marker = False
            packet = _RTP_HEADER.pack(0x80, second, self._seq, self._ts, self.ssrc) + payload
            self._seq = (self._seq + 1) & 0xFFFF
            self._ts = (self._ts + n) & 0xFFFF_FFFF
            if delay:
                handle = asyncio.get_running_loop().call_later(delay, self._send_scheduled)
                self._scheduled.append((handle, packet))
            else:
                self._sendto(packet)
            delay += self._ptime / 1000

    def _send_scheduled(self) -> None:
        if self._scheduled:
            _, packet = self._scheduled.popleft()
            self._sendto(packet)

    def _flush_scheduled(self) -> None:
        while self._scheduled:
            handle, packet = self._scheduled.popleft()
            handle.cancel()
            self._sendto(packet)

    def _sendto(self, packet: bytes) -> None:
        if self._closed:
            return
        try:
            self._sock.sendto(packet, self._dest)
            self.packets_sent += 1
        except OSError:  # EAGAIN, unreachable: drop this packet, keep the sink
            self.send_errors += 1

    def close(self) -> None:
        self._closed = True
        while self._scheduled:
            self._scheduled.popleft()[0].cancel()
        self._sock.close()


class WebSocketSink:
    """20 ms G.711 frames as binary WebSocket messages (see the module docstring).

    :meth:`start` connects in a background task. ``on_open`` runs once the connection is up
    and ``start_message`` was sent (frames given to :meth:`send` before that are dropped);
    ``on_failure(reason)`` runs when the sink ends by itself (cannot connect, the peer closed,
    a send failed), never after :meth:`close`.
    """

    def __init__(
        self,
        uri: str,
        *,
        payload_type: int,
        start_message: Mapping[str, Any] | None = None,
        stop_message: Mapping[str, Any] | None = None,
        queue_frames: int = WS_QUEUE_FRAMES,
        open_timeout: float = WS_OPEN_TIMEOUT,
        close_timeout: float = WS_CLOSE_TIMEOUT,
        user_agent: str | None = None,
        connect_address: Callable[[str, int], Awaitable[str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """``connect_address(host, port)`` picks the address to connect to (the caller's
        outbound target policy: it may refuse by raising OSError); Host and the TLS name stay
        the URI's. ``headers`` are added to the opening handshake."""
        self._table = _encoder(payload_type)
        self._headers = dict(headers or {})
        self._queue_frames = queue_frames
        self._connect_address = connect_address
        self.uri = uri
        self._start_message = start_message
        self._stop_message = stop_message
        # Unbounded: control messages are never dropped; audio is capped in send_data.
        self._queue: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self._open_timeout = open_timeout
        self._close_timeout = close_timeout
        self._user_agent = user_agent
        self._task: asyncio.Task[None] | None = None
        self._open = False
        self._closed = False
        self._normal = True
        self.on_open: Callable[[], None] | None = None
        self.on_failure: Callable[[str], None] | None = None
        # Every message the peer sends (text as str, binary as bytes); None: read and ignored.
        self.on_message: Callable[[str | bytes], None] | None = None
        self.frames_sent = 0
        self.frames_dropped = 0

    @property
    def is_open(self) -> bool:
        return self._open and not self._closed

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"ws-sink-{self.uri}")
            _background.add(self._task)
            self._task.add_done_callback(_background.discard)

    def send(self, frame: Frame) -> None:
        """One frame as a binary message of G.711."""
        self.send_data(self._table[frame.view(np.uint16)].tobytes())

    def send_data(self, data: str | bytes, *, droppable: bool = True) -> None:
        """One message (text or binary) once open. Audio is ``droppable``: past
        ``queue_frames`` waiting messages it is lost; control messages always queue."""
        if not self.is_open:
            return
        if droppable and self._queue.qsize() >= self._queue_frames:
            self.frames_dropped += 1
            return
        self._queue.put_nowait(data)

    def send_json(self, message: Mapping[str, Any], *, droppable: bool = False) -> None:
        self.send_data(json.dumps(message, separators=(",", ":")), droppable=droppable)

    def close(self, *, normal: bool = True) -> None:
        """Stop sending: a connection still being made is abandoned; an open one gets the
        frames already queued, ``stop_message`` (when ``normal``) and a close, in the
        background."""
        if self._closed:
            return
        self._closed = True
        self._normal = normal
        if not self._open:
            if self._task is not None:
                self._task.cancel()
            return
        self._wake()

    def _wake(self) -> None:
        """End the sender's wait."""
        self._queue.put_nowait(None)

    def _fail(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._normal = False
        self._wake()
        if self.on_failure is not None:
            self.on_failure(reason)

    async def _run(self) -> None:
        # Imported here: websockets comes with the server's uvicorn[standard]; only sinks need it.
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        options: dict[str, Any] = {
            "open_timeout": self._open_timeout,
            "close_timeout": self._close_timeout,
            "compression": None,  # G.711 does not compress; save the CPU
        }
        if self._user_agent is not None:
            options["user_agent_header"] = self._user_agent
        if self._headers:
            options["additional_headers"] = self._headers
        if "proxy" in inspect.signature(connect).parameters:
            options["proxy"] = None  # websockets >= 15 would honour *_PROXY variables
        try:
            if self._connect_address is not None:
                parts = urlsplit(self.uri)
                port = parts.port or (443 if parts.scheme.lower() == "wss" else 80)
                options["host"] = await self._connect_address(parts.hostname or "", port)
                options["port"] = port
            ws = await connect(self.uri, **options)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # refused, DNS, TLS, handshake, timeout
            self._fail(f"cannot connect to {self.uri}: {exc or type(exc).__name__}")
            return
        reader: asyncio.Task[None] | None = None
        try:
            if self._closed:
                return
            if self._start_message is not None:
                await ws.send(json.dumps(self._start_message))
            if self._closed:
                return
            reader = asyncio.create_task(self._drain(ws), name=f"ws-sink-read-{self.uri}")
            self._open = True
            if self.on_open is not None:
                self.on_open()
            while True:
                data = await self._queue.get()
                if data is None:
                    break
                await ws.send(data)
                self.frames_sent += 1
            if self._normal and self._stop_message is not None:
                await ws.send(json.dumps(self._stop_message))
        except ConnectionClosed as exc:
            self._fail(f"the WebSocket connection closed: {exc}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("WebSocket sink %s failed", self.uri)
            self._fail(f"the WebSocket failed: {exc}")
        finally:
            if reader is not None:
                reader.cancel()
            with contextlib.suppress(Exception):
                await ws.close()

    async def _drain(self, ws: ClientConnection) -> None:
        """Read what the peer sends (for ``on_message``, or to notice its close at once)."""
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                if self.on_message is None or self._closed:
                    continue
                try:
                    self.on_message(message)
                except Exception:
                    # One message the owner could not handle must not end the connection.
                    log.exception("WebSocket %s: handling a message failed", self.uri)
        self._fail(f"the WebSocket peer closed the connection (code {ws.close_code})")
