"""`calling.tap` / `calling.tap.stop` and SWML `tap` / `stop_tap`: forking a call's audio to an
RTP destination or a WebSocket (reference §4.15, §4.16, §5.5, §7.3; swml.md `tap`, `stop_tap`).

What is tapped
--------------
The tap's ``direction`` is seen from the party on the call, like a recording's (see
docs/architecture.md, "Media directions"):

* ``speak``  = what the party says: the far end's ``inbound`` frames plus this leg's ``speak``
  frames (playbacks with direction speak/both);
* ``listen`` = what the party hears: the ``outbound`` frames (what callplane sends it);
* ``both``   = the two summed into one mono stream (clipped to 16 bits).

The media clock's ``outbound`` frames (one per 20 ms tick) are the tap's clock: every tick yields
exactly one 160-sample frame. Inbound audio arrives when packets do, so it goes through a small
jitter FIFO (:class:`InboundFifo`) that is read once per tick: it holds back two frames before it
starts (and again after running dry), so packets that arrive a little early or late relative to
the tick still land in consecutive ticks; a missing packet is a frame of silence, never a shift,
and a backlog beyond eight frames is trimmed so the delay stays bounded. A tick's ``speak`` frame
comes right after its ``outbound`` frame, so a tick's tap frame is complete (and sent) when the
next tick begins: the tap runs one tick (20 ms) behind the call.

Devices
-------
``rtp``: G.711 RTP (PCMU payload type 0, PCMA 8) to ``addr:port`` from a UDP socket bound on the
engine's media host (an ephemeral port), one packet per ``ptime`` (10-120 ms; 20 by default),
with the tap's own random SSRC, sequence number and timestamp (RFC 3550 §5.1), the marker bit on
the first packet. No RTCP is sent and nothing is read from the socket.

``ws``: a WebSocket client connection (``ws://`` or ``wss://``). callplane sends

1. one text message, JSON::

       {"event": "start", "call_id": "...", "control_id": "...", "direction": "speak",
        "codec": "PCMU", "rate": 8000, "channels": 1, "ptime": 20}

2. binary messages, each 20 ms of G.711 (160 bytes: ``codec`` encoded, 8 kHz mono, no header);
3. on a normal stop, one text message ``{"event": "stop", "call_id": "...", "control_id": "..."}``,
   then a close with code 1000.

A slow WebSocket reader loses frames (one second is queued at most) instead of delaying the call.

Codecs: REST defaults to the call's negotiated codec (§5.5: "default = negotiated codec"; callplane
negotiates PCMU or PCMA), SWML to PCMU (swml.md). OPUS is accepted by the api's schema but not
encoded here: REST answers 501, SWML fails the method.

States and events (``calling.call.tap``)
----------------------------------------
``starting`` (internal, no event: the WebSocket connects) -> ``tapping`` -> ``finished``. A tap
whose WebSocket cannot connect goes from ``starting`` to ``finished`` directly. Every event::

    {control_id, state, segment_id,
     tap: {type: "audio", params: {direction}},
     device: {type: "rtp", params: {addr, port, codec, ptime}}      # or
             {type: "ws", params: {uri, codec}},
     reason?}                                                     # on an abnormal `finished`

``reason`` says why a tap finished by itself (the WebSocket could not connect, or closed, or the
UDP socket failed); `calling.tap.stop`, SWML `stop_tap` and the call's end give a plain
``finished``. A failing tap never affects the call.

SWML
----
`tap` (background; the script continues once the tap is tapping, or has failed) takes ``uri``
(``rtp://IP:port``, ``ws://…``, ``wss://…``), ``control_id`` (generated when missing),
``direction`` (speak), ``codec`` (PCMU), ``rtp_ptime`` (20) and ``status_url``, and sets
``tap_uri``, ``tap_result`` (``success`` | ``failed``), ``tap_control_id``, ``tap_rtp_src_addr``
and ``tap_rtp_src_port`` (the local RTP socket; empty for a WebSocket), ``tap_ptime``,
``tap_codec`` and ``tap_rate`` (``8000``). `stop_tap` stops the named tap, by default the last one
started on the call that still runs, and sets ``stop_tap_result`` (``success`` | ``failed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import itertools
import json
import logging
import random
import socket
import struct
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast
from urllib.parse import urlsplit

import numpy as np

from callplane._version import __version__
from callplane.engine.calls import CallStatus
from callplane.engine.facade import CommandError
from callplane.engine.operations.base import (
    Emit,
    Operation,
    control_id_of,
    lookup,
    register,
    require_answered,
)
from callplane.engine.services import CommandHandler, Services, SwmlMethod
from callplane.engine.swml.errors import SwmlError
from callplane.media import g711
from callplane.media.sources import FRAME_SAMPLES, SAMPLE_RATE, Frame

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

    from callplane.engine.calls import Call
    from callplane.media.engine import Direction

log = logging.getLogger("callplane.engine.tap")

TapDirection = Literal["speak", "listen", "both"]
DeviceType = Literal["rtp", "ws"]
Codec = Literal["PCMU", "PCMA"]

PAYLOAD_TYPES: Mapping[str, int] = {"PCMU": 0, "PCMA": 8}
DIRECTIONS: tuple[str, ...] = ("speak", "listen", "both")
DEFAULT_PTIME = 20
WS_FRAME_MS = 20
WS_OPEN_TIMEOUT = 5.0
WS_CLOSE_TIMEOUT = 2.0
WS_QUEUE_FRAMES = 50  # one second of audio waits for a slow WebSocket reader, then frames drop
# How long SWML `tap` waits for the tap to start (a WebSocket handshake) before moving on.
SWML_START_TIMEOUT = WS_OPEN_TIMEOUT + 1.0

_RTP_HEADER = struct.Struct("!BBHII")
_INT16_MIN, _INT16_MAX = -32768, 32767

# Start order of taps in this process: `stop_tap` without a control_id stops the latest.
_started = itertools.count()
# Tasks that outlive the call to a stop() (a WebSocket closing): referenced until they end.
_background: set[asyncio.Task[None]] = set()


@dataclass(frozen=True)
class TapSettings:
    """One tap's parameters with every default applied."""

    direction: TapDirection
    device: DeviceType
    codec: Codec
    ptime: int  # ms; the WebSocket always gets 20 ms messages
    addr: str = ""
    port: int = 0
    uri: str = ""

    @property
    def payload_type(self) -> int:
        return PAYLOAD_TYPES[self.codec]

    def describe_tap(self) -> dict[str, Any]:
        return {"type": "audio", "params": {"direction": self.direction}}

    def describe_device(self) -> dict[str, Any]:
        if self.device == "rtp":
            params: dict[str, Any] = {
                "addr": self.addr,
                "port": self.port,
                "codec": self.codec,
                "ptime": self.ptime,
            }
            return {"type": "rtp", "params": params}
        return {"type": "ws", "params": {"uri": self.uri, "codec": self.codec}}


# ---------------------------------------------------------------------------------------------
# Audio: the engine's frames -> one frame per tick for the tapped direction


class InboundFifo:
    """The far end's audio between its packets' arrival and the tick that reads it.

    Reading waits until ``prime`` samples are buffered (at the start and after running dry), so
    a packet arriving a little after its tick is still in time for the next read; more than
    ``limit`` buffered samples (a burst after a stall) are trimmed back to ``prime``.
    """

    def __init__(self, prime: int = 2 * FRAME_SAMPLES, limit: int = 8 * FRAME_SAMPLES) -> None:
        self._chunks: deque[Frame] = deque()
        self._size = 0
        self._prime = prime
        self._limit = limit
        self._primed = False

    @property
    def size(self) -> int:
        return self._size

    def push(self, samples: Frame) -> None:
        if not len(samples):
            return
        self._chunks.append(samples)
        self._size += len(samples)
        if self._size > self._limit:
            self._discard(self._size - self._prime)

    def pop(self, n: int = FRAME_SAMPLES) -> Frame | None:
        """The next ``n`` samples (zero-padded when fewer are left), or None: nothing to play."""
        if not self._primed:
            if self._size < self._prime:
                return None
            self._primed = True
        if self._size == 0:
            self._primed = False
            return None
        out = np.zeros(n, dtype=np.int16)
        filled = 0
        while filled < n and self._chunks:
            chunk = self._chunks[0]
            take = min(n - filled, len(chunk))
            out[filled : filled + take] = chunk[:take]
            filled += take
            if take == len(chunk):
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk[take:]
        self._size -= filled
        return out

    def _discard(self, count: int) -> None:
        while count > 0 and self._chunks:
            chunk = self._chunks[0]
            if len(chunk) <= count:
                self._chunks.popleft()
                self._size -= len(chunk)
                count -= len(chunk)
            else:
                self._chunks[0] = chunk[count:]
                self._size -= count
                count = 0


class TapMixer:
    """Feeds on a session's listener frames; returns the tapped direction's frame of a tick once
    that tick is complete (when the next tick's ``outbound`` frame arrives)."""

    def __init__(self, direction: TapDirection) -> None:
        self._speak = direction in ("speak", "both")
        self._listen = direction in ("listen", "both")
        self._fifo = InboundFifo()
        self._open = False  # a tick is open (its outbound frame arrived)
        self._out: Frame | None = None
        self._in: Frame | None = None
        self._said: Frame | None = None

    def feed(self, frame: Frame, direction: Direction) -> Frame | None:
        if direction == "inbound":
            if self._speak:
                self._fifo.push(frame)
            return None
        if direction == "speak":
            if self._speak and self._open:
                self._said = frame if self._said is None else _add(self._said, frame)
            return None
        # `outbound`: a new tick. The open one is complete now.
        done = self._close() if self._open else None
        self._open = True
        self._out = frame if self._listen else None
        self._in = self._fifo.pop() if self._speak else None
        self._said = None
        return done

    def _close(self) -> Frame:
        parts = [p for p in (self._in, self._said, self._out) if p is not None]
        if not parts:
            return np.zeros(FRAME_SAMPLES, dtype=np.int16)
        if len(parts) == 1:
            return parts[0]
        total = np.zeros(FRAME_SAMPLES, dtype=np.int32)
        for part in parts:
            total[: len(part)] += part[:FRAME_SAMPLES]
        return np.clip(total, _INT16_MIN, _INT16_MAX).astype(np.int16)


def _add(a: Frame, b: Frame) -> Frame:
    total = a.astype(np.int32) + b
    out: Frame = np.clip(total, _INT16_MIN, _INT16_MAX).astype(np.int16)
    return out


# ---------------------------------------------------------------------------------------------
# Devices


class RtpTapSender:
    """G.711 RTP from one UDP socket: packets of ``ptime`` ms with their own SSRC, sequence
    numbers and timestamps. ``send(frame)`` takes 20 ms frames; with ptime 10 the second packet
    of a frame leaves 10 ms after the first."""

    def __init__(self, sock: socket.socket, dest: tuple[str, int], settings: TapSettings) -> None:
        self._sock = sock
        self._dest = dest
        self._pt = settings.payload_type
        self._ptime = settings.ptime
        self._packet_samples = settings.ptime * SAMPLE_RATE // 1000
        self._table = g711.ULAW_ENCODE if self._pt == 0 else g711.ALAW_ENCODE
        self._pending = bytearray()
        self.ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._ts = random.getrandbits(32)
        self._marker = True
        self._closed = False
        self.packets_sent = 0
        self.send_errors = 0

    @property
    def local_address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def send(self, frame: Frame) -> None:
        if self._closed:
            return
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
                asyncio.get_running_loop().call_later(delay, self._sendto, packet)
            else:
                self._sendto(packet)
            delay += self._ptime / 1000

    def _sendto(self, packet: bytes) -> None:
        if self._closed:
            return
        try:
            self._sock.sendto(packet, self._dest)
            self.packets_sent += 1
        except OSError:  # EAGAIN, unreachable: drop this packet, keep the tap
            self.send_errors += 1

    def close(self) -> None:
        self._closed = True
        self._sock.close()


def _open_udp(media_host: str, dest: str) -> socket.socket:
    """A non-blocking UDP socket on the media host (an ephemeral port) that can reach `dest`."""
    family = socket.AF_INET6 if ipaddress.ip_address(dest).version == 6 else socket.AF_INET
    host_is_v6 = ":" in media_host
    if host_is_v6 == (family == socket.AF_INET6):
        bind_host = media_host
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


# ---------------------------------------------------------------------------------------------
# The operation


class TapOperation(Operation):
    kind = "tap"
    event_type = "calling.call.tap"
    # "starting" is internal (the WebSocket handshake) and emits no event.
    initial_state = "starting"
    transitions: ClassVar[Mapping[str, frozenset[str]]] = {
        "starting": frozenset({"tapping", "finished"}),
        "tapping": frozenset({"finished"}),
    }

    def __init__(
        self,
        call: Call,
        control_id: str,
        status_url: str | None,
        emit: Emit,
        *,
        services: Services,
        settings: TapSettings,
    ) -> None:
        super().__init__(call, control_id, status_url, emit)
        self._services = services
        self.settings = settings
        self.sequence = next(_started)
        self._mixer = TapMixer(settings.direction)
        self._listening = False
        self._rtp: RtpTapSender | None = None
        self._queue: asyncio.Queue[bytes | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.frames_dropped = 0
        self.reason: str | None = None
        # Resolves True once tapping, False when it finished without ever tapping.
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    @property
    def rtp_source(self) -> tuple[str, int] | None:
        return self._rtp.local_address if self._rtp is not None else None

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        session = self.call.media
        if session is None or session.closed:
            self._end("the call has no media session")
            return
        if self.settings.device == "rtp":
            refused = self._services.config.targets.refusal(self.settings.addr, self.settings.port)
            if refused is not None:
                self._end(f"{refused}: refused by --private-targets deny")
                return
            try:
                sock = _open_udp(self._services.config.media_host, self.settings.addr)
            except (OSError, ValueError) as exc:
                self._end(f"cannot open a UDP socket for the tap: {exc}")
                return
            self._rtp = RtpTapSender(sock, (self.settings.addr, self.settings.port), self.settings)
            self._attach()
            self._mark_tapping()
            return
        self._queue = asyncio.Queue(maxsize=WS_QUEUE_FRAMES)
        self._task = asyncio.create_task(self._run_ws(), name=f"tap-ws-{self.control_id}")
        _background.add(self._task)
        self._task.add_done_callback(_background.discard)

    def _attach(self) -> None:
        session = self.call.media
        if session is None or session.closed:
            return
        session.add_listener(self._on_frame)
        self._listening = True

    def _detach(self) -> None:
        if self._listening and self.call.media is not None:
            self.call.media.remove_listener(self._on_frame)
        self._listening = False

    def _mark_tapping(self) -> None:
        self.move("tapping", **self._params())
        if not self.ready.done():
            self.ready.set_result(True)

    # ------------------------------------------------------------------ media

    def _on_frame(self, frame: Frame, direction: Direction) -> None:
        if not self._listening:
            return
        out = self._mixer.feed(frame, direction)
        if out is None:
            return
        if self._rtp is not None:
            self._rtp.send(out)
        elif self._queue is not None:
            encoded = g711.encode(out, self.settings.payload_type).tobytes()
            try:
                self._queue.put_nowait(encoded)
            except asyncio.QueueFull:
                self.frames_dropped += 1

    # ------------------------------------------------------------------ WebSocket

    async def _run_ws(self) -> None:
        # Imported here: websockets comes with the server's uvicorn[standard]; only taps need it.
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        uri = self.settings.uri
        options: dict[str, Any] = {
            "open_timeout": WS_OPEN_TIMEOUT,
            "close_timeout": WS_CLOSE_TIMEOUT,
            "compression": None,  # G.711 does not compress; save the CPU
            "user_agent_header": f"callplane/{__version__}",
        }
        if "proxy" in inspect.signature(connect).parameters:
            options["proxy"] = None  # websockets >= 15 would honour *_PROXY variables
        try:
            # Connect to the address the target policy vetted; Host and TLS name stay the URI's.
            parts = urlsplit(uri)
            port = parts.port or (443 if parts.scheme.lower() == "wss" else 80)
            options["host"] = await self._services.config.targets.vet(parts.hostname or "", port)
            options["port"] = port
            ws = await connect(uri, **options)
        except asyncio.CancelledError:
            raise
        except (
            Exception
        ) as exc:  # refused, DNS, TLS, handshake, timeout: the tap ends, not the call
            self._end(f"cannot connect to {uri}: {exc or type(exc).__name__}")
            return
        reader: asyncio.Task[None] | None = None
        try:
            if self.is_terminal:
                return
            await ws.send(json.dumps(self._start_message()))
            if self.is_terminal:
                return
            reader = asyncio.create_task(self._drain_ws(ws), name=f"tap-ws-read-{self.control_id}")
            self._attach()
            self._mark_tapping()
            assert self._queue is not None
            while True:
                data = await self._queue.get()
                if data is None:
                    break
                await ws.send(data)
            if self.reason is None:  # a normal stop: say so before closing
                await ws.send(json.dumps(self._stop_message()))
        except ConnectionClosed as exc:
            self._end(f"the WebSocket connection closed: {exc}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("tap %s on call %s: WebSocket failed", self.control_id, self.call.id)
            self._end(f"the WebSocket failed: {exc}")
        finally:
            if reader is not None:
                reader.cancel()
            with contextlib.suppress(Exception):
                await ws.close()

    async def _drain_ws(self, ws: ClientConnection) -> None:
        """Read (and ignore) what the peer sends, so its close is noticed at once."""
        with contextlib.suppress(Exception):
            async for _ in ws:
                pass
        if not self.is_terminal:
            code = ws.close_code
            self._end(f"the WebSocket peer closed the connection (code {code})")

    def _start_message(self) -> dict[str, Any]:
        return {
            "event": "start",
            "call_id": self.call.id,
            "control_id": self.control_id,
            "direction": self.settings.direction,
            "codec": self.settings.codec,
            "rate": SAMPLE_RATE,
            "channels": 1,
            "ptime": WS_FRAME_MS,
        }

    def _stop_message(self) -> dict[str, Any]:
        return {"event": "stop", "call_id": self.call.id, "control_id": self.control_id}

    # ------------------------------------------------------------------ end

    def _end(self, reason: str | None = None) -> None:
        """Stop sending and report `finished` (with `reason` when the tap failed by itself)."""
        if self.is_terminal:
            return
        if reason is not None:
            log.warning("tap %s on call %s: %s", self.control_id, self.call.id, reason)
            self.reason = reason
        self._detach()
        if self._rtp is not None:
            self._rtp.close()
        if self._queue is not None:
            # Wake the sender: it says `stop` (on a normal end) and closes the connection.
            while True:
                try:
                    self._queue.put_nowait(None)
                    break
                except asyncio.QueueFull:
                    self._queue.get_nowait()
        extra = {"reason": reason} if reason is not None else {}
        self.move("finished", **self._params(), **extra)
        if not self.ready.done():
            self.ready.set_result(False)

    async def stop(self) -> None:
        """`calling.tap.stop`, `stop_tap` or the call's end: no packet leaves after this
        returns; a WebSocket is closed in the background."""
        if self._task is not None and self.state == "starting":
            self._task.cancel()  # still connecting: abandon the handshake
        self._end()

    # ------------------------------------------------------------------ events

    def _params(self) -> dict[str, Any]:
        return {
            "segment_id": self.call.segment_id,
            "tap": self.settings.describe_tap(),
            "device": self.settings.describe_device(),
        }


def start_tap(
    services: Services,
    call: Call,
    *,
    control_id: str,
    settings: TapSettings,
    status_url: str | None,
) -> TapOperation:
    op = TapOperation(
        call, control_id, status_url, services.emit, services=services, settings=settings
    )
    register(call, op)
    op.start()
    return op


# ---------------------------------------------------------------------------------------------
# REST


def _negotiated_codec(call: Call) -> Codec:
    session = call.media
    return "PCMA" if session is not None and session.payload_type == 8 else "PCMU"


def _rest_settings(call: Call, p: Mapping[str, Any]) -> TapSettings:
    """The api has validated the shapes (reference §4.15, §5.5); apply the defaults."""
    tap_params = (p.get("tap") or {}).get("params") or {}
    direction = cast("TapDirection", str(tap_params.get("direction") or "speak"))
    device = p.get("device") or {}
    params = device.get("params") or {}
    codec_in = params.get("codec")
    codec = str(codec_in).upper() if codec_in else _negotiated_codec(call)
    if codec not in PAYLOAD_TYPES:
        raise CommandError(
            501,
            "not_implemented",
            f"tapping with codec {codec_in} is not supported by callplane yet; use PCMU or PCMA",
            "device.params.codec",
        )
    if device.get("type") == "rtp":
        return TapSettings(
            direction=direction,
            device="rtp",
            codec=cast("Codec", codec),
            ptime=int(params.get("ptime") or DEFAULT_PTIME),
            addr=str(params["addr"]),
            port=int(params["port"]),
        )
    return TapSettings(
        direction=direction,
        device="ws",
        codec=cast("Codec", codec),
        ptime=WS_FRAME_MS,
        uri=str(params["uri"]),
    )


async def _tap(services: Services, call: Call, p: dict[str, Any]) -> None:
    require_answered(call, "tapped")
    settings = _rest_settings(call, p)
    start_tap(
        services,
        call,
        control_id=control_id_of(p),
        settings=settings,
        status_url=p.get("status_url"),
    )


async def _stop(services: Services, call: Call, p: dict[str, Any]) -> None:
    await lookup(call, TapOperation, p).stop()


# ---------------------------------------------------------------------------------------------
# SWML


def swml_settings(params: Mapping[str, Any]) -> TapSettings:
    """SWML `tap` parameters (possibly expanded ``${...}`` strings) with the SWML defaults."""
    uri = str(params.get("uri") or "").strip()
    direction = str(params.get("direction") or "speak").strip().lower()
    if direction not in DIRECTIONS:
        raise SwmlError(f"tap direction must be speak, listen or both, got {direction!r}")
    codec = str(params.get("codec") or "PCMU").strip().upper()
    if codec not in PAYLOAD_TYPES:
        raise SwmlError(f"tap codec must be PCMU or PCMA, got {params.get('codec')!r}")
    raw_ptime = params.get("rtp_ptime")
    try:
        ptime = DEFAULT_PTIME if raw_ptime in (None, "") else int(str(raw_ptime).strip())
    except ValueError:
        raise SwmlError(f"tap rtp_ptime must be a number of ms, got {raw_ptime!r}") from None
    if ptime not in range(10, 121, 10):
        raise SwmlError(f"tap rtp_ptime must be a multiple of 10 from 10 to 120, got {ptime}")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("ws", "wss"):
        if not parts.hostname:
            raise SwmlError(f"tap uri {uri!r} has no host")
        return TapSettings(
            direction=cast("TapDirection", direction),
            device="ws",
            codec=cast("Codec", codec),
            ptime=WS_FRAME_MS,
            uri=uri,
        )
    if scheme != "rtp":
        raise SwmlError(f"tap uri must be rtp://IP:port, ws://… or wss://…, got {uri!r}")
    try:
        host = str(ipaddress.ip_address(parts.hostname or ""))
        port = parts.port
    except ValueError:
        raise SwmlError(f"tap uri {uri!r} needs an IP address and a port") from None
    if port is None or not 1 <= port <= 65535:
        raise SwmlError(f"tap uri {uri!r} needs a port from 1 to 65535")
    return TapSettings(
        direction=cast("TapDirection", direction),
        device="rtp",
        codec=cast("Codec", codec),
        ptime=ptime,
        addr=host,
        port=port,
    )


async def swml_tap(services: Services, call: Call, params: dict[str, Any]) -> dict[str, Any] | None:
    """SWML `tap`: a background tap; the script continues once it taps (or failed to)."""
    settings = swml_settings(params)
    if call.status is not CallStatus.ANSWERED:
        await services.answer(call)
    if call.media is None:
        raise SwmlError("tap needs an answered call with media")
    control_id = control_id_of(params)
    try:
        op = start_tap(
            services,
            call,
            control_id=control_id,
            settings=settings,
            status_url=params.get("status_url"),
        )
    except CommandError as exc:  # the control_id is already tapping
        raise SwmlError(str(exc)) from exc
    try:
        tapping = await asyncio.wait_for(asyncio.shield(op.ready), SWML_START_TIMEOUT)
    except TimeoutError:
        tapping = False
    source = op.rtp_source
    return {
        "tap_uri": str(params.get("uri") or ""),
        "tap_result": "success" if tapping and op.state == "tapping" else "failed",
        "tap_control_id": control_id,
        "tap_rtp_src_addr": source[0] if source else "",
        "tap_rtp_src_port": str(source[1]) if source else "",
        "tap_ptime": str(settings.ptime),
        "tap_codec": settings.codec,
        "tap_rate": str(SAMPLE_RATE),
    }


async def swml_stop_tap(
    services: Services, call: Call, params: dict[str, Any]
) -> dict[str, Any] | None:
    """SWML `stop_tap`: the named tap, or the last tap started on the call that still runs."""
    control_id = params.get("control_id")
    target: TapOperation | None = None
    if control_id:
        found = call.operations.get((TapOperation.kind, str(control_id)))
        target = found if isinstance(found, TapOperation) else None
    else:
        running = [op for op in call.operations.values() if isinstance(op, TapOperation)]
        target = max(running, key=lambda op: op.sequence, default=None)
    if target is None:
        return {"stop_tap_result": "failed"}
    await target.stop()
    return {"stop_tap_result": "success"}


COMMANDS: dict[str, CommandHandler] = {
    "calling.tap": _tap,
    "calling.tap.stop": _stop,
}
SWML_METHODS: dict[str, SwmlMethod] = {
    "tap": swml_tap,
    "stop_tap": swml_stop_tap,
}
