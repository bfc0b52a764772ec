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

The media clock's ticks are the tap's clock: every :class:`~callplane.media.engine.TickFrames`
(one per 20 ms, digit sending and hold included, silence where the far end sent nothing) yields
exactly one 160-sample frame of the tapped direction, sent at once: no lag, no buffering
(:func:`callplane.media.sinks.party_frame`).

Devices (:mod:`callplane.media.sinks`)
--------------------------------------
``rtp``: :class:`~callplane.media.sinks.RtpSink`, G.711 RTP (PCMU payload type 0, PCMA 8) to
``addr:port`` from a UDP socket bound on the engine's media host (an ephemeral port), one packet
per ``ptime`` (10-120 ms; 20 by default), with the tap's own random SSRC, sequence number and
timestamp (RFC 3550 §5.1), the marker bit on the first packet. No RTCP is sent and nothing is
read from the socket.

``ws``: :class:`~callplane.media.sinks.WebSocketSink`, a WebSocket client connection (``ws://``
or ``wss://``). callplane sends

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
import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast
from urllib.parse import urlsplit

from callplane._version import __version__
from callplane.engine.calls import CallStatus
from callplane.engine.facade import CommandError
from callplane.engine.operations.base import (
    Emit,
    Operation,
    control_id_of,
    lookup,
    named_or_latest,
    register,
    require_answered,
)
from callplane.engine.services import CommandHandler, Services, SwmlMethod
from callplane.engine.swml.errors import SwmlError
from callplane.media.sinks import WS_OPEN_TIMEOUT, RtpSink, WebSocketSink, party_frame
from callplane.media.sources import SAMPLE_RATE

if TYPE_CHECKING:
    from callplane.engine.calls import Call
    from callplane.media.engine import TickFrames

log = logging.getLogger("callplane.engine.tap")

TapDirection = Literal["speak", "listen", "both"]
DeviceType = Literal["rtp", "ws"]
Codec = Literal["PCMU", "PCMA"]

PAYLOAD_TYPES: Mapping[str, int] = {"PCMU": 0, "PCMA": 8}
DIRECTIONS: tuple[str, ...] = ("speak", "listen", "both")
DEFAULT_PTIME = 20
WS_FRAME_MS = 20
# How long SWML `tap` waits for the tap to start (a WebSocket handshake) before moving on.
SWML_START_TIMEOUT = WS_OPEN_TIMEOUT + 1.0

# Start order of taps in this process: `stop_tap` without a control_id stops the latest.


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
        self._listening = False
        self._rtp: RtpSink | None = None
        self._ws: WebSocketSink | None = None
        self.reason: str | None = None
        # Resolves True once tapping, False when it finished without ever tapping.
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    @property
    def rtp_source(self) -> tuple[str, int] | None:
        return self._rtp.local_address if self._rtp is not None else None

    @property
    def frames_dropped(self) -> int:
        """Frames a slow WebSocket reader lost."""
        return self._ws.frames_dropped if self._ws is not None else 0

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        session = self.call.media
        if session is None or session.closed:
            self._end("the call has no media session")
            return
        s = self.settings
        if s.device == "rtp":
            refused = self._services.config.targets.refusal(s.addr, s.port)
            if refused is not None:
                self._end(f"{refused}: refused by --private-targets deny")
                return
            try:
                self._rtp = RtpSink.open(
                    self._services.config.media_host,
                    (s.addr, s.port),
                    payload_type=s.payload_type,
                    ptime=s.ptime,
                )
            except (OSError, ValueError) as exc:
                self._end(f"cannot open a UDP socket for the tap: {exc}")
                return
            self._attach()
            self._mark_tapping()
            return
        self._ws = WebSocketSink(
            s.uri,
            payload_type=s.payload_type,
            start_message=self._start_message(),
            stop_message=self._stop_message(),
            user_agent=f"callplane/{__version__}",
            connect_address=self._services.config.targets.vet,
        )
        self._ws.on_open = self._on_ws_open
        self._ws.on_failure = self._end
        self._ws.start()

    def _on_ws_open(self) -> None:
        if self.is_terminal:
            return
        self._attach()
        self._mark_tapping()

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

    def _on_frame(self, frames: TickFrames) -> None:
        if not self._listening:
            return
        frame = party_frame(frames, self.settings.direction)
        if self._rtp is not None:
            self._rtp.send(frame)
        elif self._ws is not None:
            self._ws.send(frame)

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
        if self._ws is not None:
            # An open connection says `stop` (on a normal end) and closes in the background.
            self._ws.close(normal=reason is None)
        extra = {"reason": reason} if reason is not None else {}
        self.move("finished", **self._params(), **extra)
        if not self.ready.done():
            self.ready.set_result(False)

    async def stop(self) -> None:
        """`calling.tap.stop`, `stop_tap` or the call's end: no packet leaves after this
        returns; a WebSocket still connecting is abandoned, an open one closed in the
        background."""
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
    target = named_or_latest(call, TapOperation, params.get("control_id"))
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
