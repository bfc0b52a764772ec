"""SWML `connect` and REST `calling.transfer` to a SIP URI or number: dial, then bridge.

A connect dials its destinations in stages (`to`: one; `serial`: one at a time; `parallel`: all
at once, the first to answer wins and the others are cancelled; `serial_parallel`: stages of
parallel groups). While they ring the caller hears `ringback` (a US ringtone by default), or the
callee's early media when a 183 brings some. The first answer is bridged to the caller; the
connect then lasts as long as the bridge, and the caller's script goes on after it when the
callee hangs up or `calling.disconnect` splits them. Events go to `status_url` as
`calling.call.connect` (`connecting`, `connected`, `failed`, `disconnected`, with the `peer`).

`to: stream:wss://…` connects the caller to a WebSocket application instead of a callee: the
same operation and events (the `peer` is a `stream` device), a bidirectional
`stream.StreamOperation` in place of the bridge, and the stream's own `calling.call.stream`
events beside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from callplane.engine.audio import PlayItemError, swml_sound_to_item
from callplane.engine.calls import NOT_ANSWERED_YET, CallStatus
from callplane.engine.facade import CommandError
from callplane.engine.operations import queue as queues
from callplane.engine.operations.base import Emit, Operation, register
from callplane.engine.operations.stream import (
    StatusMethod,
    StreamOperation,
    StreamParamError,
    StreamSettings,
    settings_from,
    start_stream,
    url_refusal,
)
from callplane.engine.services import CommandHandler, PeerDial, Services, SwmlMethod
from callplane.engine.swml.errors import SwmlError, SwmlMethodNotSupported

if TYPE_CHECKING:
    from callplane.engine.bridge import Bridge
    from callplane.engine.calls import Call
    from callplane.media.engine import Playback

log = logging.getLogger("callplane.engine.connect")

DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_DURATION = 14400.0
DEFAULT_RINGBACK = ("ring:us",)

# How a peer leg that never answered ended, as `connect_failed_reason`.
_FAILED_REASONS = {
    "busy": "busy",
    "noAnswer": "no_answer",
    "decline": "declined",
    "cancel": "cancel",
}


class ConnectFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConnectOperation(Operation):
    kind = "connect"
    event_type = "calling.call.connect"
    initial_state = "connecting"
    transitions: ClassVar[Mapping[str, frozenset[str]]] = {
        "connecting": frozenset({"connected", "failed"}),
        "connected": frozenset({"disconnected"}),
    }

    def __init__(
        self,
        call: Call,
        status_url: str | None,
        emit: Emit,
        *,
        services: Services,
        stages: list[list[PeerDial]],
        ringback: Sequence[str],
        answer_on_bridge: bool,
        max_duration: float,
        queue: str | None = None,
        queue_timeout: float = DEFAULT_TIMEOUT,
        transfer_after_bridge: str | None = None,
        stream: StreamSettings | None = None,
        stream_control_id: str | None = None,
    ) -> None:
        super().__init__(call, f"connect-{uuid.uuid4()}", status_url, emit)
        # `stream:<url>`: the peer is a WebSocket application (a bidirectional media stream).
        self._stream_settings = stream
        self._stream_control_id = stream_control_id or str(uuid.uuid4())
        self.stream: StreamOperation | None = None
        # The stream's events and the connect's share status_url, and one method for both keeps
        # a receiver that answers only that method from blocking the call's webhook lane.
        self.status_url_method: StatusMethod = stream.status_url_method if stream else "POST"
        # `queue:<name>`: the peer is the longest-waiting caller of that queue, not a dialled
        # leg; it is not hung up when the bridge ends (its enter_queue decides what follows).
        self._queue = queue
        self._queue_timeout = queue_timeout
        self._transfer_after_bridge = transfer_after_bridge
        self._waiter: queues.Waiter | None = None
        self._services = services
        self._stages = stages
        self._ringback_sounds = list(ringback)
        self._answer_on_bridge = answer_on_bridge
        self._max_duration = max_duration
        self._dialing: dict[str, Call] = {}
        self._ringback: Playback | None = None
        self._early: Bridge | None = None
        self.bridge: Bridge | None = None
        self.peer: Call | None = None
        self.failed_reason: str | None = None
        self._stopping = False

    # ------------------------------------------------------------------ events

    def _peer_params(self, peer: Call | StreamOperation) -> dict[str, Any]:
        device: dict[str, Any]
        if isinstance(peer, StreamOperation):
            params = {
                "url": peer.settings.url,
                "control_id": peer.control_id,
                "stream_sid": peer.stream_sid,
            }
            if peer.settings.name:
                params["name"] = peer.settings.name
            return {"device": {"type": "stream", "params": params}}
        if peer.call_type == "relay_pstn_call":
            device = {"type": "phone", "params": {"from_number": peer.from_, "to_number": peer.to}}
        else:
            device = {"type": "sip", "params": {"from": peer.from_, "to": peer.to}}
        out = {"call_id": peer.id, "node_id": peer.node_id, "device": device}
        if self._waiter is not None:
            out["queue_id"] = self._waiter.queue.id
            out["queue_name"] = self._waiter.queue.name
        return out

    def _event(self, state: str, peer: Call | StreamOperation | None, **extra: Any) -> None:
        params: dict[str, Any] = {"connect_state": state, **extra}
        if peer is not None:
            params["peer"] = self._peer_params(peer)
        self._emit(self, params)

    def _to(self, state: str, peer: Call | StreamOperation | None = None, **extra: Any) -> None:
        if state not in self.transitions.get(self.state, frozenset()):
            return
        self._event(state, peer, **extra)
        if state in ("failed", "disconnected"):
            self.finish(state)
        else:
            self.state = state

    # ------------------------------------------------------------------ the run

    async def run(self) -> str:
        """Dial, bridge, wait for the bridge to end. Returns `connected` or `failed`."""
        self._event("connecting", None)
        if self._stream_settings is not None:
            return await self._run_stream(self._stream_settings)
        try:
            await self._prepare_caller()
            if self._queue is not None:
                peer = await self._take_from_queue(self._queue)
            else:
                await self._start_ringback()
                peer = await self._dial_stages()
        except ConnectFailed as failed:
            await self._cleanup()
            self.failed_reason = failed.reason
            self._to("failed", None, failed_reason=failed.reason)
            return "failed"
        except asyncio.CancelledError:
            await self._cleanup()
            self.failed_reason = "cancel"
            self._to("failed", None, failed_reason="cancel")
            raise
        await self._stop_ringback()
        how = await self._bridge(peer)
        self._to("disconnected", peer)
        log.info("connect on call %s: bridge to %s ended (%s)", self.call.id, peer.id, how)
        return "connected"

    async def _run_stream(self, settings: StreamSettings) -> str:
        """The caller talks to a WebSocket application until the socket closes, the caller
        hangs up or max_duration; a socket that cannot connect fails the connect (`error`)."""
        try:
            await self._prepare_caller()
        except ConnectFailed as failed:
            self.failed_reason = failed.reason
            self._to("failed", None, failed_reason=failed.reason)
            return "failed"
        op = start_stream(
            self._services,
            self.call,
            control_id=self._stream_control_id,
            settings=settings,
            status_url=self.status_url,
        )
        self.stream = op
        try:
            streaming = await asyncio.shield(op.ready)
        except asyncio.CancelledError:
            await op.stop()
            self.failed_reason = "cancel"
            self._to("failed", None, failed_reason="cancel")
            raise
        if not streaming:
            self.failed_reason = "cancel" if self._stopping else "error"
            self._to("failed", None, failed_reason=self.failed_reason)
            return "failed"
        try:
            if self.call.status in NOT_ANSWERED_YET:
                await self._services.answer(self.call)  # answer_on_bridge
            self._to("connected", op)
            done, _ = await asyncio.wait({op.done}, timeout=self._max_duration)
            if not done:
                log.info("connect on call %s: the stream reached max_duration", self.call.id)
        finally:
            await op.stop()  # a no-op once it ended by itself
            if self.state == "connecting":  # answering the caller failed
                self.failed_reason = "error"
                self._to("failed", None, failed_reason="error")
            else:
                self._to("disconnected", op)
        return "connected"

    async def _prepare_caller(self) -> None:
        call = self.call
        if call.status in NOT_ANSWERED_YET:
            if self._answer_on_bridge:
                # The caller stays unanswered until the callee answers; a 183 carries ringback.
                await self._services.early_answer(call)
            else:
                await self._services.answer(call)
        if call.media is None or call.is_terminal:
            raise ConnectFailed("error")

    async def _take_from_queue(self, name: str) -> Call:
        waiter = await queues.take_caller(self._services, self.call, name, self._queue_timeout)
        if waiter is None:
            raise ConnectFailed("no_answer")
        if self._transfer_after_bridge is not None:
            waiter.transfer_after_bridge = self._transfer_after_bridge
        self._waiter = waiter
        return waiter.call

    async def _start_ringback(self) -> None:
        media = self.call.media
        if media is None or not self._ringback_sounds:
            return
        playlist = []
        try:
            for sound in self._ringback_sounds:
                item = swml_sound_to_item(sound)
                playlist.append(
                    await self._services.audio.resolve(
                        item, language="en-US", voice=None, gender="female"
                    )
                )
        except (PlayItemError, SwmlError, ValueError) as exc:
            log.warning("connect on call %s: no ringback: %s", self.call.id, exc)
            return
        if playlist and not media.closed:
            self._ringback = media.play(playlist, loop=0)

    async def _stop_ringback(self) -> None:
        if self._ringback is not None:
            self._ringback.stop()
            self._ringback = None

    async def _dial_stages(self) -> Call:
        reason = "no_answer"
        for stage in self._stages:
            try:
                return await self._dial_parallel(stage)
            except ConnectFailed as failed:
                reason = failed.reason
                if self.call.is_terminal or self._stopping:
                    break
        raise ConnectFailed(reason)

    async def _dial_parallel(self, stage: list[PeerDial]) -> Call:
        legs: list[Call] = []
        specs: dict[str, PeerDial] = {}
        last_reason = "error"
        for spec in stage:
            try:
                leg = await self._services.dial_leg(self.call, spec)
            except CommandError as exc:
                log.warning("connect on call %s: cannot dial %s: %s", self.call.id, spec.to, exc)
                last_reason = "error"
                continue
            legs.append(leg)
            specs[leg.id] = spec
            self._dialing[leg.id] = leg
        if not legs:
            raise ConnectFailed(last_reason)
        waits: dict[asyncio.Task[Any], tuple[str, Call]] = {}
        for leg in legs:
            waits[asyncio.create_task(leg.answered.wait())] = ("answered", leg)
            waits[asyncio.create_task(leg.finished.wait())] = ("finished", leg)
            waits[asyncio.create_task(leg.early_media.wait())] = ("early", leg)
        winner: Call | None = None
        ended: list[Call] = []
        refused: set[str] = set()  # answered, but their `confirm` did not accept
        try:
            while waits and winner is None:
                done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    what, leg = waits.pop(task)
                    if what == "answered" and winner is None and not leg.is_terminal:
                        if await self._confirmed(leg, specs[leg.id]):
                            winner = leg
                        else:
                            refused.add(leg.id)
                            await self._services.hang_up(leg, "hangup")
                    elif what == "finished":
                        ended.append(leg)
                        last_reason = (
                            "declined"
                            if leg.id in refused
                            else _FAILED_REASONS.get(leg.end_reason or "", "error")
                        )
                    elif what == "early":
                        self._route_early_media(leg)
                if len(ended) == len(legs):
                    break
        finally:
            for task in waits:
                task.cancel()
        for leg in legs:
            if leg is not winner:
                self._dialing.pop(leg.id, None)
                if not leg.is_terminal:
                    # Parallel: the first answer wins, the others get CANCEL.
                    await self._services.hang_up(leg, "cancel")
        if winner is None:
            self._end_early_media()
            raise ConnectFailed(last_reason)
        self._dialing.pop(winner.id, None)
        return winner

    async def _confirmed(self, leg: Call, spec: PeerDial) -> bool:
        """Run the destination's `confirm` SWML on the callee, if it has one."""
        if spec.confirm is None:
            return True
        return await self._services.confirm(leg, spec)

    def _route_early_media(self, leg: Call) -> None:
        """A callee's 183 with SDP: the caller hears the callee's early media, not ringback."""
        if self._early is not None or leg.is_terminal or self.call.media is None:
            return
        if self._ringback is not None:
            self._ringback.stop()
            self._ringback = None
        try:
            self._early = self._services.bridge(self.call, leg)
        except CommandError as exc:
            log.info("connect on call %s: early media not relayed: %s", self.call.id, exc)
            return
        self._early.set_one_way(listener=self.call)

    def _end_early_media(self) -> None:
        if self._early is not None:
            self._early.end("replaced")
            self._early = None

    async def _bridge(self, peer: Call) -> str:
        call = self.call
        if call.status in NOT_ANSWERED_YET:
            await self._services.answer(call)  # answer_on_bridge: now that the callee has
        if self._early is not None and self._early.peer is not peer:
            self._end_early_media()
        bridge = self._early or self._services.bridge(call, peer)
        self._early = None
        bridge.set_both_ways()
        bridge.owned = True
        self.bridge = bridge
        self.peer = peer
        self._to("connected", peer)
        ends: set[asyncio.Future[Any]] = {bridge.ended, bridge.owner_left}
        done, _ = await asyncio.wait(
            ends,
            timeout=self._max_duration,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if bridge.ended in done:
            how = bridge.ended.result()
        elif done:
            # Our caller REFERred its place in the bridge to someone else: the bridge goes on
            # without us, and our script goes on (the caller usually hangs up now).
            how = "replaced"
        else:
            bridge.end("max_duration")
            how = "max_duration"
        current_peer = bridge.peer
        if self._waiter is not None and current_peer is self._waiter.call:
            return how  # a queued caller goes on with its enter_queue (transfer_after_bridge)
        if how in ("owner_hangup", "max_duration") and not current_peer.is_terminal:
            await self._services.hang_up(current_peer, "hangup")
        return how

    async def _cleanup(self) -> None:
        await self._stop_ringback()
        self._end_early_media()
        for leg in list(self._dialing.values()):
            if not leg.is_terminal:
                await self._services.hang_up(leg, "cancel")
        self._dialing.clear()

    async def stop(self) -> None:
        """The caller's call is ending: cancel what still rings, hang up a bridged peer, stop a
        stream."""
        self._stopping = True
        if self.stream is not None:
            await self.stream.stop()
        bridge = self.bridge
        if bridge is not None and bridge.owned and bridge.active:
            peer = bridge.peer
            bridge.end("owner_hangup")
            queued = self._waiter is not None and peer is self._waiter.call
            if not peer.is_terminal and not queued:
                await self._services.hang_up(peer, "hangup")
        await self._cleanup()


# ---------------------------------------------------------------------------------------------
# parameters


def _headers(value: Any) -> tuple[tuple[str, str], ...]:
    if not value:
        return ()
    if not isinstance(value, list):
        raise SwmlError("connect `headers` must be a list of {name, value}")
    out = []
    for h in value:
        if not isinstance(h, dict) or "name" not in h:
            raise SwmlError("connect `headers` must be a list of {name, value}")
        out.append((str(h["name"]), str(h.get("value", ""))))
    return tuple(out)


def _codecs(value: Any) -> tuple[str, ...] | None:
    if not value:
        return None
    names = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(n).strip() for n in names if str(n).strip())


def _destination(raw: Any, shared: Mapping[str, Any], default_from: str) -> PeerDial:
    dest = {"to": raw} if isinstance(raw, str) else raw
    if not isinstance(dest, dict) or not dest.get("to"):
        raise SwmlError("each connect destination needs a `to`")
    to = str(dest["to"])
    if to.startswith("queue:"):
        raise SwmlMethodNotSupported(
            "connect", "a queue: destination inside serial/parallel (only `to: queue:<name>`)"
        )
    if to.startswith("/"):
        raise SwmlMethodNotSupported(
            "connect", f"connect to {to.split(':')[0]!r} destinations (rooms)"
        )
    if to.startswith("stream:"):
        raise SwmlError("a stream: destination must be connect's only destination (`to`)")

    def pick(name: str) -> Any:
        value = dest.get(name)
        return shared.get(name) if value is None else value

    timeout = pick("timeout")
    confirm = pick("confirm")
    if confirm is not None and not isinstance(confirm, str | list):
        raise SwmlError("connect `confirm` must be a URL or a list of SWML methods")
    confirm_timeout = pick("confirm_timeout")
    events = pick("call_state_events") or ("ended",)
    if isinstance(events, str):
        events = [e.strip() for e in events.split(",") if e.strip()]
    return PeerDial(
        to=to,
        from_=str(pick("from") or default_from),
        timeout=float(timeout) if timeout is not None else DEFAULT_TIMEOUT,
        codecs=_codecs(pick("codecs")),
        headers=_headers(shared.get("headers")) + _headers(dest.get("headers")),
        username=pick("username"),
        password=pick("password"),
        status_url=pick("call_state_url"),
        confirm=tuple(confirm) if isinstance(confirm, list) else confirm,
        confirm_timeout=float(confirm_timeout) if confirm_timeout else None,
        status_events=tuple(str(e) for e in events),
    )


def plan(params: Mapping[str, Any], default_from: str) -> list[list[PeerDial]]:
    """The dialing stages of a connect: each stage is dialled in parallel, stages in order."""

    def dest(raw: Any) -> PeerDial:
        return _destination(raw, params, default_from)

    if params.get("to") is not None:
        return [[dest(params)] if isinstance(params["to"], str) else [dest(params["to"])]]
    if params.get("serial") is not None:
        return [[dest(d)] for d in _list(params["serial"], "serial")]
    if params.get("parallel") is not None:
        return [[dest(d) for d in _list(params["parallel"], "parallel")]]
    if params.get("serial_parallel") is not None:
        return [
            [dest(d) for d in _list(group, "serial_parallel")]
            for group in _list(params["serial_parallel"], "serial_parallel")
        ]
    raise SwmlError("connect needs one of to, serial, parallel, serial_parallel")


def _list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise SwmlError(f"connect `{name}` must be a non-empty list")
    return value


def _caller_number(call: Call) -> str:
    # Caller ID passes through to the callee: the inbound caller, or the number we dialled from.
    return call.from_


def _ringback(params: Mapping[str, Any]) -> list[str]:
    value = params.get("ringback")
    if value is None:
        return list(DEFAULT_RINGBACK)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    raise SwmlError("connect `ringback` must be a list of sounds")


# ---------------------------------------------------------------------------------------------
# SWML and REST


def _start(
    services: Services, call: Call, params: Mapping[str, Any], status_url: Any
) -> ConnectOperation:
    if call.bridge is not None:
        raise SwmlError(f"call {call.id} is already bridged")
    max_duration = params.get("max_duration")
    to = params.get("to")
    queue = queues.queue_name(to) if isinstance(to, str) else None
    if isinstance(to, str) and to.startswith("queue:") and queue is None:
        raise SwmlError("connect `to: queue:<name>` needs a queue name")
    stream, stream_control_id = _stream_destination(services, params)
    timeout = params.get("timeout")
    op = ConnectOperation(
        call,
        str(status_url) if status_url else None,
        services.emit,
        services=services,
        stages=[] if queue is not None or stream else plan(params, _caller_number(call)),
        ringback=_ringback(params),
        answer_on_bridge=bool(params.get("answer_on_bridge", False)),
        max_duration=float(max_duration) if max_duration else DEFAULT_MAX_DURATION,
        queue=queue,
        queue_timeout=float(timeout) if timeout is not None else DEFAULT_TIMEOUT,
        transfer_after_bridge=queues.transfer_dest(params.get("transfer_after_bridge")),
        stream=stream,
        stream_control_id=stream_control_id,
    )
    register(call, op)
    return op


def _stream_destination(
    services: Services, params: Mapping[str, Any]
) -> tuple[StreamSettings | None, str | None]:
    """The stream settings of a connect to ``stream:<url>`` (the destination's fields over
    connect's own) and the stream's control_id; (None, None) for other destinations."""
    raw = params.get("to")
    dest = raw if isinstance(raw, dict) else {"to": raw}
    target = dest.get("to")
    if not isinstance(target, str) or not target.startswith("stream:"):
        return None, None
    merged = {**params, **dest, "url": target[len("stream:") :]}
    try:
        settings = settings_from(merged, bidirectional=True)
    except StreamParamError as exc:
        raise SwmlError(f"connect to a stream: {exc}") from None
    refused = url_refusal(settings.url, services.config.targets)
    if refused is not None:
        raise SwmlError(refused)
    control_id = merged.get("control_id")
    return settings, str(control_id) if control_id else None


async def swml_connect(
    services: Services, call: Call, params: dict[str, Any]
) -> dict[str, Any] | None:
    op = _start(services, call, params, params.get("status_url"))
    result = await op.run()
    out: dict[str, Any] = {"connect_result": result, "return_value": result}
    if result == "failed":
        out["connect_failed_reason"] = op.failed_reason or "error"
    return out


async def transfer(services: Services, call: Call, dest: str) -> None:
    """REST `calling.transfer` to a SIP URI, phone number or route: the call is bridged there,
    and hangs up when the bridge ends (its script was replaced by the transfer)."""
    if call.status is not CallStatus.ANSWERED:
        raise CommandError(422, "invalid_state", "only an answered call can be transferred", "id")
    try:
        op = _start(services, call, {"to": dest}, None)
    except SwmlError as exc:
        raise CommandError(422, "invalid_parameter", str(exc), "dest") from exc

    async def run() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await op.run()
        if not call.is_terminal:
            await services.hang_up(call, "hangup")

    task = asyncio.create_task(run(), name=f"transfer-{call.id}")
    call.tasks.add(task)
    task.add_done_callback(call.tasks.discard)


COMMANDS: dict[str, CommandHandler] = {}
SWML_METHODS: dict[str, SwmlMethod] = {"connect": swml_connect}
