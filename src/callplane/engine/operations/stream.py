"""`calling.stream` / `calling.stream.stop`, SWML `stream` / `stop_stream`, and the
bidirectional stream of SWML `connect` to ``stream:wss://…`` (reference §4.17, §4.18, §7.4;
swml.md `stream`, `stop_stream`, `connect`).

The socket speaks the Media Streams protocol that Twilio and SignalWire's cXML ``<Stream>``
publish, so voice frameworks' "Twilio serializers" work unchanged; the message shapes are in
docs/streams.md. callplane is the WebSocket client, the application the server.

* One-way (`calling.stream`, SWML `stream`): `connected`, `start`, then one `media` message per
  track per 20 ms tick (chunk numbers and timestamps counted in ticks, so they are consecutive
  even while the far end sends nothing), `dtmf` on each key press, `stop` on a normal end.
* Bidirectional (`connect` to ``stream:…``): the same, plus what the application sends: `media`
  (any chunk size, queued in a :class:`~callplane.media.sources.LiveSource` that the media clock
  plays to the caller), `mark` (echoed back once the audio queued before it has played) and
  `clear` (drops the queued audio at once; the pending marks come back at once).

Tracks: ``inbound_track`` = what the caller says (``party_frame`` speak), ``outbound_track`` =
what it hears (listen), ``both_tracks`` = both, as separate messages. Codecs: PCMU and PCMA at
8 kHz, L16 at 16 kHz (signed 16-bit little-endian, resampled from the call's 8 kHz).

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
    from callplane.media.engine import Playback, TickFrames

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
    # How `calling.call.stream` events reach status_url (the outbox's GET form: query fields).
    status_url_method: StatusMethod = "POST"

    @property
    def tracks(self) -> list[str]:
        if self.track == "both_tracks":
            return ["inbound", "outbound"]
        return ["inbound" if self.track == "inbound_track" else "outbound"]


class _Codec:
    """8 kHz frames <-> a stream's payload bytes."""

    def __init__(self, codec: StreamCodec) -> None:
        self.codec = codec
        self._up: dict[str, FrameResampler] = {}
        self._down = FrameResampler(16000, SAMPLE_RATE) if codec == "L16" else None

    def encode(self, frame: np.ndarray[Any, Any], track: str) -> bytes:
        if self.codec == "PCMU":
            return bytes(g711.ULAW_ENCODE[frame.view(np.uint16)].tobytes())
        if self.codec == "PCMA":
            return bytes(g711.ALAW_ENCODE[frame.view(np.uint16)].tobytes())
        up = self._up.get(track)
        if up is None:
            up = self._up[track] = FrameResampler(SAMPLE_RATE, 16000)
        wide = np.clip(np.round(up.process(frame)), -32768, 32767).astype("<i2")
        return wide.tobytes()

    def decode(self, payload: bytes) -> np.ndarray[Any, Any]:
        if self.codec == "PCMU":
            return g711.ULAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]
        if self.codec == "PCMA":
            return g711.ALAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]
        assert self._down is not None
        wide = np.frombuffer(payload[: len(payload) // 2 * 2], dtype="<i2")
        if wide.size % 2:
            wide = wide[:-1]
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
        self._codec = _Codec(settings.codec)
        self._ws: WebSocketSink | None = None
        self._listening = False
        self._keypad: KeyPresses | None = None
        self._seq = 0  # sequenceNumber of our messages
        self._chunk = 0  # chunk number of the media messages of each track
        self._first_tick: int | None = None
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
            self._playback = session.play(self.live)
        session.add_listener(self._on_frame)
        self._listening = True
        self._keypad = KeyPresses.for_call(self.call)
        self._keypad.subscribers.append(self._on_digit)
        self.move("streaming", **self._params())
        if not self.ready.done():
            self.ready.set_result(True)

    def _start_params(self) -> dict[str, Any]:
        encoding, rate = CODECS[self.settings.codec]
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
        self._chunk += 1
        timestamp = str((frames.tick - self._first_tick) * FRAME_MS)
        for track in self.settings.tracks:
            frame = party_frame(frames, "speak" if track == "inbound" else "listen")
            payload = base64.b64encode(self._codec.encode(frame, track)).decode("ascii")
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
    """A stream parameter that cannot be honoured; ``param`` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def settings_from(params: Mapping[str, Any], *, bidirectional: bool = False) -> StreamSettings:
    """Stream parameters (REST, SWML or a connect destination) with the defaults; raises
    StreamParamError with a message that names the parameter."""
    url = str(params.get("url") or "").strip()
    track = str(params.get("track") or "inbound_track").strip().lower()
    if track not in TRACKS:
        raise StreamParamError(
            "track", f"track must be inbound_track, outbound_track or both_tracks: {track!r}"
        )
    raw_codec = params.get("codec")
    codec = str(raw_codec or "PCMU").strip().upper()
    if codec in ("L16@16000H", "L16-16000", "LINEAR16"):
        codec = "L16"
    if codec not in CODECS:
        raise StreamParamError("codec", f"codec must be PCMU, PCMA or L16, got {raw_codec!r}")
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
        codec=cast("StreamCodec", codec),
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
        if exc.param == "codec":  # free-form in the reference: OPUS is a codec, not built
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
