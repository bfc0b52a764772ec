"""`calling.stream` / `calling.stream.stop`, SWML `stream` / `stop_stream`, and the
bidirectional stream of SWML `connect` to ``stream:wss://…`` (reference §4.17, §4.18, §7.4;
swml.md `stream`, `stop_stream`, `connect`).

The socket speaks the Media Streams protocol that Twilio and SignalWire's cXML ``<Stream>``
publish, so voice frameworks' "Twilio serializers" work unchanged; the message shapes are in
docs/streams.md. callplane is the WebSocket client, the application the server.

* One-way (`calling.stream`, SWML `stream`): `connected`, `start`, then one `media` message per
  track per 20 ms tick (chunk numbers and timestamps counted in ticks, so they are consecutive
  even while the far end sends nothing), `dtmf` on each key press, `stop` on a normal end.
* A conference participant's stream (SWML `join_conference`'s `stream`, started by the
  conference module through :func:`start_stream`): one-way, or bidirectional with `realtime`
  (the application's audio then plays on the leg's speak side: the room hears it).
* Bidirectional (`connect` to ``stream:…``): the same, plus what the application sends: `media`
  (any chunk size, queued in a :class:`~callplane.media.sources.LiveSource` that the media clock
  plays to the caller), `mark` (echoed back once the audio queued before it has played) and
  `clear` (drops the queued audio at once; the pending marks come back at once).

Tracks: ``inbound_track`` = what the caller says (``party_frame`` speak), ``outbound_track`` =
what it hears (listen), ``both_tracks`` = both, as separate messages. Codecs: PCMU and PCMA at
8 kHz, L16 at 16 kHz (signed 16-bit little-endian, resampled from the call's 8 kHz), with the
SWML schema's modifiers: ``@<rate>h`` (L16 at 8, 16, 24, 32 or 48 kHz) and ``@<ptime>i`` (20-120
ms of audio per `media` message), e.g. ``L16@24000h@40i``.

States (``calling.call.stream``): ``starting`` (internal: the handshake) -> ``streaming`` ->
``finished``; a socket that cannot connect goes to ``finished`` directly. ``finished`` carries a
``reason`` when the stream ended by itself (refused, dropped, closed by the application).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast
from urllib.parse import urlsplit

import numpy as np

from callplane._version import __version__
from callplane.engine.calls import CallStatus
from callplane.engine.facade import CommandError
from callplane.engine.keypad import KeyPresses
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
from callplane.media import g711
from callplane.media.sinks import WS_OPEN_TIMEOUT, WebSocketSink, party_frame
from callplane.media.sources import SAMPLE_RATE, FrameResampler, LiveSource
from callplane.netpolicy import TargetPolicy, host_refusal

if TYPE_CHECKING:
    from callplane.engine.calls import Call
    from callplane.media.engine import Playback, PlayDirection, TickFrames

log = logging.getLogger("callplane.engine.stream")

Track = Literal["inbound_track", "outbound_track", "both_tracks"]
StreamCodec = Literal["PCMU", "PCMA", "L16"]
StatusMethod = Literal["GET", "POST"]

TRACKS: tuple[str, ...] = ("inbound_track", "outbound_track", "both_tracks")
CODECS: Mapping[str, tuple[str, int]] = {
    "PCMU": ("audio/x-mulaw", 8000),
    "PCMA": ("audio/x-alaw", 8000),
    "L16": ("audio/x-l16", 16000),
}
FRAME_MS = 20
L16_RATES = (8000, 16000, 24000, 32000, 48000)  # whole multiples of 8 kHz: exact 20 ms blocks
PTIMES = range(FRAME_MS, 121, FRAME_MS)
# The application may send audio faster than real time (a TTS burst): up to 5 minutes wait.
PLAY_QUEUE_FRAMES = 15000
SWML_START_TIMEOUT = WS_OPEN_TIMEOUT + 1.0


def url_refusal(url: str, targets: TargetPolicy) -> str | None:
    """Why ``url`` may not be streamed to: ``wss://`` always may (certificates are verified
    against the system trust store, which honours SSL_CERT_FILE); ``ws://`` only to a loopback
    or private host while private targets are allowed (local development)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if not parts.hostname:
        return f"stream url {url!r} has no host"
    if scheme == "wss":
        return None
    if scheme != "ws":
        return f"stream url must start with wss://, got {url!r}"
    if targets.allow_private and host_refusal(parts.hostname) is not None:
        return None
    return f"stream url {url!r}: ws:// is only allowed to loopback or private hosts; use wss://"


@dataclass(frozen=True)
class StreamSettings:
    url: str
    track: Track = "inbound_track"
    codec: StreamCodec = "PCMU"
    name: str | None = None
    token: str | None = None
    custom_parameters: Mapping[str, str] = field(default_factory=dict)
    bidirectional: bool = False
    rate: int = SAMPLE_RATE  # of the payload (settings_from: L16 16000 unless @<rate>h)
    ptime: int = FRAME_MS  # ms of audio per `media` message
    # How `calling.call.stream` events reach status_url (the outbox's GET form: query fields).
    status_url_method: StatusMethod = "POST"
    # Where a bidirectional stream's audio from the application plays on the leg: ``listen``
    # (the far end hears it: connect) or ``speak`` (said by the leg, so a conference
    # participant's room hears it and its own far end does not).
    play_direction: PlayDirection = "listen"

    @property
    def tracks(self) -> list[str]:
        if self.track == "both_tracks":
            return ["inbound", "outbound"]
        return ["inbound" if self.track == "inbound_track" else "outbound"]


class _Codec:
    """8 kHz frames <-> a stream's payload bytes."""

    def __init__(self, codec: StreamCodec, rate: int = SAMPLE_RATE) -> None:
        self.codec = codec
        self.rate = rate
        self._up: dict[str, FrameResampler] = {}
        resample = codec == "L16" and rate != SAMPLE_RATE
        self._down = FrameResampler(rate, SAMPLE_RATE) if resample else None
        # The application's L16 chunks may end anywhere; the resampler takes whole groups of
        # rate/8000 samples, so what is left over waits for the next chunk.
        self._block = 2 * (rate // SAMPLE_RATE)
        self._rest = b""

    def encode(self, frame: np.ndarray[Any, Any], track: str) -> bytes:
        if self.codec == "PCMU":
            return bytes(g711.ULAW_ENCODE[frame.view(np.uint16)].tobytes())
        if self.codec == "PCMA":
            return bytes(g711.ALAW_ENCODE[frame.view(np.uint16)].tobytes())
        if self.rate == SAMPLE_RATE:
            return frame.astype("<i2").tobytes()
        up = self._up.get(track)
        if up is None:
            up = self._up[track] = FrameResampler(SAMPLE_RATE, self.rate)
        wide = np.clip(np.round(up.process(frame)), -32768, 32767).astype("<i2")
        return wide.tobytes()

    def decode(self, payload: bytes) -> np.ndarray[Any, Any]:
        if self.codec == "PCMU":
            return g711.ULAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]
        if self.codec == "PCMA":
            return g711.ALAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]
        data = self._rest + payload
        usable = len(data) // self._block * self._block
        self._rest = data[usable:]
        wide = np.frombuffer(data[:usable], dtype="<i2")
        if self._down is None:
            return wide.astype(np.int16)
        return np.clip(np.round(self._down.process(wide)), -32768, 32767).astype(np.int16)


class StreamOperation(Operation):
    kind = "stream"
    event_type = "calling.call.stream"
    initial_state = "starting"
    transitions: ClassVar[Mapping[str, frozenset[str]]] = {
        "starting": frozenset({"streaming", "finished"}),
        "streaming": frozenset({"finished"}),
    }

    def __init__(
        self,
        call: Call,
        control_id: str,
        status_url: str | None,
        emit: Emit,
        *,
        services: Services,
        settings: StreamSettings,
    ) -> None:
        super().__init__(call, control_id, status_url, emit)
        self._services = services
        self.settings = settings
        # Read by the engine when it sends this operation's events (the only per-operation
        # webhook method: every other operation's events are POSTs).
        self.status_url_method: StatusMethod = settings.status_url_method
        self.stream_sid = f"MZ{uuid.uuid4().hex}"
        self._codec = _Codec(settings.codec, settings.rate)
        self._ws: WebSocketSink | None = None
        self._listening = False
        self._keypad: KeyPresses | None = None
        self._seq = 0  # sequenceNumber of our messages
        self._chunk = 0  # chunk number of the media messages of each track
        self._first_tick: int | None = None
        # ptime > 20 ms: each track's encoded frames gather until a message is full.
        self._batch: dict[str, list[bytes]] = {track: [] for track in settings.tracks}
        self._batch_tick = 0
        self.reason: str | None = None
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        # Bidirectional: the application's audio and where it plays.
        self.live: LiveSource | None = None
        self._playback: Playback | None = None
        self.marks_echoed: list[str] = []
        self.on_end: Callable[[str | None], None] | None = None

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        session = self.call.media
        if session is None or session.closed:
            self._end("the call has no media session")
            return
        headers = {}
        if self.settings.token:
            headers["Authorization"] = f"Bearer {self.settings.token}"
        self._ws = WebSocketSink(
            self.settings.url,
            payload_type=0,
            start_message={"event": "connected", "protocol": "Call", "version": "1.0.0"},
            stop_message=None,
            queue_frames=100,
            user_agent=f"callplane/{__version__}",
            connect_address=self._services.config.targets.vet,
            headers=headers,
        )
        self._ws.on_open = self._on_open
        self._ws.on_failure = self._end
        if self.settings.bidirectional:
            self._ws.on_message = self._on_message
        self._ws.start()

    def _on_open(self) -> None:
        if self.is_terminal or self._ws is None:
            return
        self._seq = 0  # `connected` carries no sequence number; `start` is 1
        self._send("start", self._start_params())
        session = self.call.media
        if session is None or session.closed:
            self._end("the call has no media session")
            return
        if self.settings.bidirectional:
            self.live = LiveSource(f"stream({self.control_id})", max_frames=PLAY_QUEUE_FRAMES)
            self.live.on_mark = self._on_mark
            self._playback = session.play(self.live, direction=self.settings.play_direction)
        session.add_listener(self._on_frame)
        self._listening = True
        self._keypad = KeyPresses.for_call(self.call)
        self._keypad.subscribers.append(self._on_digit)
        self.move("streaming", **self._params())
        if not self.ready.done():
            self.ready.set_result(True)

    def _start_params(self) -> dict[str, Any]:
        encoding, _ = CODECS[self.settings.codec]
        rate = self.settings.rate
        return {
            "accountSid": self.call.project_id,
            "streamSid": self.stream_sid,
            "callSid": self.call.id,
            "tracks": self.settings.tracks,
            "customParameters": dict(self.settings.custom_parameters),
            "mediaFormat": {"encoding": encoding, "sampleRate": rate, "channels": 1},
        }

    # ------------------------------------------------------------------ to the application

    def _send(self, event: str, body: dict[str, Any], *, droppable: bool = False) -> None:
        if self._ws is None:
            return
        self._seq += 1
        message = {
            "event": event,
            "sequenceNumber": str(self._seq),
            event: body,
            "streamSid": self.stream_sid,
        }
        self._ws.send_json(message, droppable=droppable)

    def _on_frame(self, frames: TickFrames) -> None:
        if not self._listening:
            return
        if self._first_tick is None:
            self._first_tick = frames.tick
        tracks = self.settings.tracks
        if not self._batch[tracks[0]]:
            self._batch_tick = frames.tick
        for track in tracks:
            frame = party_frame(frames, "speak" if track == "inbound" else "listen")
            self._batch[track].append(self._codec.encode(frame, track))
        if len(self._batch[tracks[0]]) * FRAME_MS < self.settings.ptime:
            return
        self._chunk += 1
        timestamp = str((self._batch_tick - self._first_tick) * FRAME_MS)
        for track in tracks:
            audio = b"".join(self._batch[track])
            self._batch[track].clear()
            payload = base64.b64encode(audio).decode("ascii")
            self._send(
                "media",
                {
                    "track": track,
                    "chunk": str(self._chunk),
                    "timestamp": timestamp,
                    "payload": payload,
                },
                droppable=True,
            )

    def _on_digit(self, digit: str) -> None:
        if self._listening:
            self._send("dtmf", {"track": "inbound_track", "digit": digit})

    def _on_mark(self, name: str) -> None:
        self.marks_echoed.append(name)
        if self._listening:
            self._send("mark", {"name": name})

    # ------------------------------------------------------------------ from the application

    def _on_message(self, raw: str | bytes) -> None:
        if self.live is None or self.is_terminal:
            return
        try:
            message = json.loads(raw)
            event = message.get("event") if isinstance(message, dict) else None
        except (ValueError, UnicodeDecodeError):
            log.debug("stream %s: ignoring a message that is not JSON", self.control_id)
            return
        if event == "media":
            media = message.get("media")
            payload = media.get("payload") if isinstance(media, dict) else None
            if not isinstance(payload, str):
                return
            try:
                data = base64.b64decode(payload, validate=False)
            except (binascii.Error, ValueError):
                log.debug("stream %s: a media payload is not base64", self.control_id)
                return
            self.live.push(self._codec.decode(data))
        elif event == "mark":
            mark = message.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if name is not None:
                self.live.mark(str(name))
        elif event == "clear":
            for name in self.live.clear():
                self._on_mark(name)

    # ------------------------------------------------------------------ end

    def _end(self, reason: str | None = None) -> None:
        if self.is_terminal:
            return
        if reason is not None:
            log.warning("stream %s on call %s: %s", self.control_id, self.call.id, reason)
            self.reason = reason
        if self._listening:
            if reason is None:
                self._send("stop", {"accountSid": self.call.project_id, "callSid": self.call.id})
            self._listening = False
            if self.call.media is not None:
                self.call.media.remove_listener(self._on_frame)
        if self._keypad is not None:
            with contextlib.suppress(ValueError):
                self._keypad.subscribers.remove(self._on_digit)
        if self._playback is not None:
            self._playback.stop()
        if self.live is not None:
            self.live.close()
        if self._ws is not None:
            self._ws.close(normal=reason is None)
        extra = {"reason": reason} if reason is not None else {}
        self.move("finished", **self._params(), **extra)
        if not self.ready.done():
            self.ready.set_result(False)
        if self.on_end is not None:
            self.on_end(reason)

    async def stop(self) -> None:
        self._end()

    def close(self) -> None:
        """`stop` for an owner that ends the stream synchronously (a conference participant
        leaving): `stop` sent, `finished` emitted, before the owner goes on."""
        self._end()

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"segment_id": self.call.segment_id, "url": self.settings.url}
        if self.settings.name:
            params["name"] = self.settings.name
        return params


def start_stream(
    services: Services,
    call: Call,
    *,
    control_id: str,
    settings: StreamSettings,
    status_url: str | None,
) -> StreamOperation:
    op = StreamOperation(
        call, control_id, status_url, services.emit, services=services, settings=settings
    )
    register(call, op)
    op.start()
    return op


class StreamParamError(ValueError):
    """A stream parameter that cannot be honoured; ``param`` names it. ``not_built``: a valid
    value callplane does not implement (OPUS, G722), rather than a wrong one."""

    def __init__(self, param: str, message: str, *, not_built: bool = False) -> None:
        super().__init__(message)
        self.param = param
        self.not_built = not_built


def parse_codec(raw: object) -> tuple[StreamCodec, int, int]:
    """``codec`` -> (codec, payload rate, ptime ms): ``PCMU``, ``PCMA``, ``L16`` with the SWML
    schema's ``@<rate>h`` and ``@<ptime>i`` modifiers (``L16@24000h@40i``), any case."""
    text = str(raw or "PCMU").strip().upper()
    if text in ("L16-16000", "LINEAR16"):
        text = "L16"
    name, *modifiers = text.split("@")
    if name not in CODECS:
        raise StreamParamError(
            "codec", f"codec must be PCMU, PCMA or L16, got {raw!r}", not_built=True
        )
    rate, ptime = CODECS[name][1], FRAME_MS
    for modifier in modifiers:
        match = re.fullmatch(r"(\d+)([HI])", modifier)
        if match is None:
            raise StreamParamError(
                "codec", f"codec {raw!r}: modifiers are @<rate>h and @<ptime>i, e.g. L16@24000h@40i"
            )
        if match[2] == "H":
            rate = int(match[1])
        else:
            ptime = int(match[1])
    if name != "L16" and rate != SAMPLE_RATE:
        raise StreamParamError("codec", f"codec {raw!r}: {name} is 8000 Hz only")
    if rate not in L16_RATES:
        rates = ", ".join(map(str, L16_RATES))
        raise StreamParamError("codec", f"codec {raw!r}: L16 rates are {rates}")
    if ptime not in PTIMES:
        raise StreamParamError("codec", f"codec {raw!r}: ptime must be 20 to 120 ms in steps of 20")
    return cast("StreamCodec", name), rate, ptime


def settings_from(params: Mapping[str, Any], *, bidirectional: bool = False) -> StreamSettings:
    """Stream parameters (REST, SWML or a connect destination) with the defaults; raises
    StreamParamError with a message that names the parameter."""
    url = str(params.get("url") or "").strip()
    track = str(params.get("track") or "inbound_track").strip().lower()
    if track not in TRACKS:
        raise StreamParamError(
            "track", f"track must be inbound_track, outbound_track or both_tracks: {track!r}"
        )
    codec, rate, ptime = parse_codec(params.get("codec"))
    custom = params.get("custom_parameters") or {}
    if not isinstance(custom, Mapping):
        raise StreamParamError("custom_parameters", "custom_parameters must be an object")
    method = str(params.get("status_url_method") or "POST").strip().upper()
    if method not in ("GET", "POST"):
        raise StreamParamError(
            "status_url_method",
            f"status_url_method must be GET or POST, got {params.get('status_url_method')!r}",
        )
    token = params.get("authorization_bearer_token")
    name = params.get("name")
    return StreamSettings(
        url=url,
        track=cast("Track", track),
        codec=codec,
        rate=rate,
        ptime=ptime,
        name=str(name) if name else None,
        token=str(token) if token else None,
        custom_parameters={str(k): str(v) for k, v in custom.items()},
        bidirectional=bidirectional,
        status_url_method=cast("StatusMethod", method),
    )


# ---------------------------------------------------------------------------------------------
# REST


async def _stream(services: Services, call: Call, p: dict[str, Any]) -> None:
    require_answered(call, "streamed")
    try:
        settings = settings_from(p)
    except StreamParamError as exc:
        if exc.not_built:  # `codec` is free-form in the reference: OPUS is a codec, not built
            raise CommandError(
                501, "not_implemented", f"streaming with this {exc}", "codec"
            ) from None
        raise CommandError(422, "invalid_parameter", str(exc), exc.param) from None
    refused = url_refusal(settings.url, services.config.targets)
    if refused is not None:
        raise CommandError(422, "invalid_parameter", refused, "url")
    start_stream(
        services,
        call,
        control_id=control_id_of(p),
        settings=settings,
        status_url=p.get("status_url"),
    )


async def _stop(services: Services, call: Call, p: dict[str, Any]) -> None:
    await lookup(call, StreamOperation, p).stop()


# ---------------------------------------------------------------------------------------------
# SWML


async def swml_stream(
    services: Services, call: Call, params: dict[str, Any]
) -> dict[str, Any] | None:
    """SWML `stream`: a background stream; the script goes on once it streams (or failed)."""
    try:
        settings = settings_from(params)
    except ValueError as exc:
        raise SwmlError(f"stream: {exc}") from None
    refused = url_refusal(settings.url, services.config.targets)
    if refused is not None:
        raise SwmlError(refused)
    if call.status is not CallStatus.ANSWERED:
        await services.answer(call)
    control_id = control_id_of(params)
    try:
        op = start_stream(
            services,
            call,
            control_id=control_id,
            settings=settings,
            status_url=params.get("status_url"),
        )
    except CommandError as exc:
        raise SwmlError(str(exc)) from exc
    try:
        streaming = await asyncio.wait_for(asyncio.shield(op.ready), SWML_START_TIMEOUT)
    except TimeoutError:
        streaming = False
    return {
        "stream_result": "success" if streaming and op.state == "streaming" else "failed",
        "stream_control_id": control_id,
    }


async def swml_stop_stream(
    services: Services, call: Call, params: dict[str, Any]
) -> dict[str, Any] | None:
    """SWML `stop_stream`: the named stream, or the latest one still running."""
    target = named_or_latest(call, StreamOperation, params.get("control_id"))
    if target is None:
        return {"stop_stream_result": "failed"}
    await target.stop()
    return {"stop_stream_result": "success"}


COMMANDS: dict[str, CommandHandler] = {
    "calling.stream": _stream,
    "calling.stream.stop": _stop,
}
SWML_METHODS: dict[str, SwmlMethod] = {
    "stream": swml_stream,
    "stop_stream": swml_stop_stream,
}
