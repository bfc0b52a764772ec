"""The call engine: calls, their lifecycle, command dispatch and the SWML that drives them.

It implements `callplane.engine.facade.Engine` for the api, and drives `callplane.sip` for
signalling and `callplane.media` for audio. Every state change is an event (`EventSink`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import httpx

from callplane._version import __version__
from callplane.engine import operations
from callplane.engine.audio import AudioResolver, SpeechSynthesizer
from callplane.engine.bridge import Bridge
from callplane.engine.calls import (
    NOT_ANSWERED_YET,
    SUPPORTED_CODECS,
    TERMINAL,
    Call,
    CallStatus,
    can_move,
)
from callplane.engine.config import EngineConfig
from callplane.engine.events import EventSink
from callplane.engine.facade import CommandError
from callplane.engine.legs import LegFactory
from callplane.engine.operations import connect, refer
from callplane.engine.operations.base import require_answered
from callplane.engine.operations.record import RecordOperation, recover_recordings
from callplane.engine.services import PeerDial, Reporting, Services
from callplane.engine.swml.document import SwmlDocument, load_document
from callplane.engine.swml.errors import SwmlError, SwmlFetchError
from callplane.engine.swml.interpreter import SwmlInterpreter
from callplane.engine.swml.web import HttpSwmlFetcher, build_fetch_body
from callplane.engine.swml_host import CallSwmlHost
from callplane.media.engine import MediaEngine
from callplane.providers.asr import SpeechRecognizer
from callplane.providers.llm import LanguageModel
from callplane.sip.endpoint import (
    Answered,
    Ended,
    Failed,
    IncomingCall,
    OutgoingCall,
    Referred,
    Ringing,
    SipCall,
    SipEndpoint,
)
from callplane.sip.message import SipParseError, SipRequest, parse_uri
from callplane.sip.policy import CAPACITY_RETRY_AFTER
from callplane.store import Store
from callplane.webhooks import WebhookOutbox

log = logging.getLogger("callplane.engine")

_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")

# Commands of reference §3 and the feature they need: until an operation module registers the
# command, it answers 501, never a fake 200.
NOT_YET = {
    "calling.stream": "media streaming",
    "calling.stream.stop": "media streaming",
    "calling.denoise": "noise reduction",
    "calling.denoise.stop": "noise reduction",
    "calling.ai_sidecar": "AI sidecars",
    "calling.ai_sidecar.poke": "AI sidecars",
    "calling.ai_sidecar.ask": "AI sidecars",
    "calling.ai_sidecar.stop": "AI sidecars",
    "calling.ai_sidecar.status": "AI sidecars",
}

# How a SIP failure ends the call: (status, end_reason). Reasons use the RELAY spelling of the
# `calling.end` input (reference §2.3).
_BUSY_CODES = {486, 600}
_DECLINE_CODES = {603, 607}
_NO_ANSWER_CODES = {408, 480, 487}


@dataclass(frozen=True)
class Destination:
    uri: str
    call_type: str  # relay_sip_call | relay_pstn_call


class CallEngine:
    def __init__(
        self,
        config: EngineConfig,
        *,
        store: Store,
        outbox: WebhookOutbox,
        sip: SipEndpoint,
        media: MediaEngine,
        tts: SpeechSynthesizer,
        http: httpx.AsyncClient,
        recognizer: SpeechRecognizer | None = None,
        llm: LanguageModel | None = None,
    ) -> None:
        self.config = config
        self._store = store
        self._sip = sip
        self._media = media
        self._legs = LegFactory(media, config.media_host)
        self._http = http
        self._events = EventSink(store, outbox, space_id=config.space_id)
        self._audio = AudioResolver(config.data_dir / "cache", http, tts)
        self._fetcher = HttpSwmlFetcher(client=http, user_agent=f"callplane/{__version__}")
        self._calls: dict[str, Call] = {}
        self._stopping = False
        self._detached: set[asyncio.Task[Any]] = set()
        self.services = Services(
            config=config,
            store=store,
            audio=self._audio,
            emit=self._emit_operation,
            record_event=self._record_event,
            deliver=self._events.deliver,
            answer=self.answer,
            hang_up=self.hang_up,
            dial_leg=self.dial_leg,
            bridge=self.bridge,
            early_answer=self.early_answer,
            confirm=self.confirm,
            recognizer=recognizer,
            llm=llm,
            http=http,
            media=media,
        )
        self._handlers: dict[str, Callable[[Call, dict[str, Any]], Awaitable[None]]] = {
            "calling.end": self._cmd_end,
            "calling.transfer": self._cmd_transfer,
            "calling.disconnect": self._cmd_disconnect,
            "calling.user_event": self._cmd_user_event,
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._sip.on_incoming = self._on_incoming
        self._sip.routable = self._routable
        self._recover_orphans()

    async def stop(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """End every live call cleanly (BYE or CANCEL) and wait for their events to be written."""
        self._stopping = True
        calls = list(self._calls.values())
        for call in calls:
            await self.hang_up(call, "hangup")
        waits = [asyncio.create_task(c.finished.wait()) for c in calls]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=timeout)
            for task in pending:
                task.cancel()
        for call in list(self._calls.values()):
            await self._finish(call, CallStatus.ENDED, "error")

    def _recover_orphans(self) -> None:
        """Calls that were live when the previous process died cannot be resumed: their SIP
        dialog and media are gone. End them, whichever project they belong to, so their
        subscribers get the `ended` they expect; they end at the previous process's last
        heartbeat (their duration excludes the downtime), after the `finished` of the
        recordings the crash cut short."""
        alive_at = self._store.last_alive()
        live = [status.value for status in CallStatus if status not in TERMINAL]
        for row in self._store.list_calls_in(live):
            call = Call.from_row(row)
            log.warning("call %s was %s when callplane stopped; ending it", call.id, call.status)
            if alive_at is not None:
                call.ended_at = max(alive_at, call.answered_at or alive_at)
            for status_url, params in recover_recordings(self._store, call.id):
                self._events.emit(call, RecordOperation.event_type, params, webhook_url=status_url)
            self._conclude(call, CallStatus.ENDED, "error")
            dialog = self._store.get_dialog(call.id)
            if dialog is not None:
                self._spawn_detached(self._bye_orphan(call.id, dialog))

    async def _bye_orphan(self, call_id: str, dialog: dict[str, Any]) -> None:
        """The far end of an orphan still holds its dialog (and may be sending media): hang it
        up from what was saved when the dialog was confirmed."""
        try:
            response = await self._sip.bye_orphan(dialog)
        except SipParseError as exc:
            log.warning("call %s: cannot send its BYE: %s", call_id, exc)
            return
        log.info("call %s: BYE to its far end answered %d", call_id, response.status)
        self._store.save_dialog(call_id, None)

    def _keep_dialog(self, call: Call, sip_call: SipCall) -> None:
        """Persist what a BYE needs each time it changes, for `_recover_orphans`."""
        sip_call.on_dialog = functools.partial(self._store.save_dialog, call.id)

    # ------------------------------------------------------------------ Engine facade

    async def execute(
        self,
        project_id: str,
        command: str,
        call_id: str | None,
        params: dict[str, Any],
    ) -> dict[str, Any]:
        if command == "dial":
            return await self._dial(project_id, params)
        if command == "update":
            call = self._find(project_id, str(params.get("id")))
            await self._update(call, params)
            return call.call_leg()
        if command in NOT_YET and command not in operations.COMMANDS:
            raise CommandError(
                501,
                "not_implemented",
                f"{command} is not supported by callplane yet ({NOT_YET[command]} is not built)",
            )
        handler = self._handlers.get(command)
        if handler is None and command in operations.COMMANDS:
            handler = functools.partial(operations.COMMANDS[command], self.services)
        if handler is None:
            raise CommandError(
                422, "invalid_command_attempted", f"unknown command {command!r}", "command"
            )
        call = self._find(project_id, str(call_id))
        if call.is_terminal:
            raise CommandError(
                422, "invalid_state", f"call {call.id} has already {call.status.value}", "id"
            )
        await handler(call, params)
        return call.call_leg()

    async def get_call(self, project_id: str, call_id: str) -> dict[str, Any] | None:
        try:
            call = self._find(project_id, call_id)
        except CommandError:
            return None
        leg = call.call_leg()
        if call.bridge is not None:
            # An extension of the debugging view: who this call is bridged to right now.
            peer = call.bridge.other(call)
            leg["peer"] = {"call_id": peer.id, "node_id": peer.node_id}
        return leg

    async def get_call_events(self, project_id: str, call_id: str) -> list[dict[str, Any]] | None:
        if await self.get_call(project_id, call_id) is None:
            return None
        return [{"seq": row["seq"], **row["payload"]} for row in self._store.list_events(call_id)]

    def _find(self, project_id: str, call_id: str) -> Call:
        call = self._calls.get(call_id)
        if call is not None and call.project_id == project_id:
            return call
        row = self._store.get_call(project_id, call_id)
        if row is None:
            raise CommandError(404, "not_found", f"call {call_id} not found", "id")
        return Call.from_row(row)

    # ------------------------------------------------------------------ events

    def _emit_operation(self, op: Reporting, params: dict[str, Any]) -> None:
        # Only streams have a `status_url_method` (GET or POST); every other webhook is a POST.
        method = getattr(op, "status_url_method", "POST")
        self._events.emit(op.call, op.event_type, params, webhook_url=op.status_url, method=method)

    def _record_event(self, call: Call, event_type: str, params: dict[str, Any]) -> None:
        self._events.emit(call, event_type, params, webhook_url=None)

    def _set_status(self, call: Call, status: CallStatus, end_reason: str | None = None) -> bool:
        if not can_move(call.status, status):
            return False
        call.status = status
        if status is CallStatus.ANSWERED:
            call.answered_at = time.time()
        if status in TERMINAL:
            if call.ended_at is None:  # a crash's orphan comes with its last sign of life
                call.ended_at = time.time()
            call.end_reason = end_reason
        self._store.save_call(call.to_row())
        call_state = "ended" if status in TERMINAL else status.value
        if call_state in ("queued", "initiated"):
            return True  # lifecycle states of the CallLeg, not `calling.call.state` events
        params: dict[str, Any] = {
            "segment_id": call.segment_id,
            "call_state": call_state,
            "direction": "inbound" if call.direction == "inbound" else "outbound",
            "device": self._device(call),
        }
        if call_state == "ended":
            params["end_reason"] = end_reason or "hangup"
        subscribed = call.status_url if call_state in call.status_events else None
        self._events.emit(call, "calling.call.state", params, webhook_url=subscribed)
        return True

    @staticmethod
    def _device(call: Call) -> dict[str, Any]:
        if call.call_type == "relay_pstn_call":
            return {"type": "phone", "params": {"from_number": call.from_, "to_number": call.to}}
        return {"type": "sip", "params": {"from": call.from_, "to": call.to}}

    # ------------------------------------------------------------------ dial

    async def _dial(self, project_id: str, p: dict[str, Any]) -> dict[str, Any]:
        if self._stopping:
            raise CommandError(503, "service_unavailable", "callplane is shutting down")
        to = p.get("to")
        if to is None:
            raise CommandError(
                501,
                "not_implemented",
                "dial with to_script and no `to` is not supported by callplane yet",
                "to_script",
            )
        destination = self._resolve_destination(str(to))
        codecs = self._codecs(p.get("codecs"))
        inline = self._load_inline_swml(p.get("swml"), "swml")
        call = Call(
            project_id=project_id,
            from_=str(p["from"]),
            to=str(to),
            direction="outbound-api",
            call_type=destination.call_type,
            url=p.get("url"),
            status_url=p.get("status_url"),
            status_events=tuple(p.get("status_events") or ("ended",)),
            swml_url=p.get("url"),
            swml_inline=inline.to_dict() if inline else None,
            url_method=str(p.get("url_method") or "POST"),
            fallback_url=p.get("fallback_url"),
            custom_variables=dict(p.get("custom_variables") or {}),
        )
        try:
            await self._legs.open(call, codecs)
        except OSError as exc:
            log.warning("dial to %s: no RTP ports for its media: %s", to, exc)
            raise CommandError(
                503,
                "service_unavailable",
                "no RTP ports are free for the call's media (see --rtp-ports); retry later",
                retry_after=CAPACITY_RETRY_AFTER,
            ) from exc
        self._calls[call.id] = call
        self._store.save_call(call.to_row())
        self._spawn(call, self._run_outbound(call, destination, codecs, p))
        return call.call_leg()

    def _resolve_destination(self, to: str) -> Destination:
        if to.startswith(("sip:", "sips:")):
            try:
                parse_uri(to)
            except SipParseError as exc:
                raise CommandError(
                    422, "invalid_sip_destination", f"`to` is not a valid SIP URI: {exc}", "to"
                ) from exc
            return Destination(to, "relay_sip_call")
        call_type = "relay_pstn_call" if _E164.match(to) else "relay_sip_call"
        if to in self.config.routes:
            # A local route: callplane calls itself, and the inbound leg runs the route's SWML.
            host = self._sip_hostport()
            return Destination(f"sip:{to}@{host}", call_type)
        if _E164.match(to):
            if self.config.trunk:
                trunk = parse_uri(self.config.trunk)
                port = f":{trunk.port}" if trunk.port else ""
                return Destination(f"sip:{to}@{trunk.host}{port}", call_type)
            raise CommandError(
                422,
                "to_destination_unresolvable",
                f"{to} is not a local route and no --trunk is configured",
                "to",
            )
        raise CommandError(
            422,
            "to_destination_unresolvable",
            f"`to` must be a sip: URI, an E.164 number or a local route name; got {to!r}",
            "to",
        )

    def _sip_hostport(self) -> str:
        host = self.config.sip_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.config.sip_port}"

    @staticmethod
    def _codecs(value: Any) -> list[str]:
        if value is None:
            return list(SUPPORTED_CODECS)
        names = value.split(",") if isinstance(value, str) else list(value)
        chosen = [c.strip().upper() for c in names if c.strip().upper() in SUPPORTED_CODECS]
        if not chosen:
            raise CommandError(
                422,
                "invalid_parameter",
                f"none of the codecs {names} is supported; callplane offers PCMU and PCMA",
                "codecs",
            )
        return chosen

    @staticmethod
    def _load_inline_swml(value: Any, attribute: str) -> SwmlDocument | None:
        if value is None:
            return None
        try:
            return load_document(value)
        except SwmlError as exc:
            raise CommandError(422, "invalid_parameter", f"invalid SWML: {exc}", attribute) from exc

    def _from_uri(self, p: dict[str, Any]) -> str:
        shown = str(p.get("caller_id") or p["from"])
        if shown.startswith(("sip:", "sips:")):
            return shown
        return f"sip:{shown}@{self._sip_hostport()}"

    async def _run_outbound(
        self, call: Call, destination: Destination, codecs: list[str], p: dict[str, Any]
    ) -> None:
        self._set_status(call, CallStatus.INITIATED)
        leg = call.leg
        if leg is None:  # a bridge's peer leg (dial_leg): a clear failure, not a crash
            try:
                leg = await self._legs.open(call, codecs)
            except OSError as exc:
                log.warning("call %s: no RTP ports for its media: %s", call.id, exc)
                await self._finish(call, CallStatus.FAILED, "error")
                return
        offer = self._legs.offer(leg)
        auth = None
        if p.get("username") and p.get("password"):
            auth = (str(p["username"]), str(p["password"]))
        timeout = float(p.get("timeout") or self.config.ring_timeout)
        next_hop = None
        if str(p.get("to") or "").startswith(("sip:", "sips:")):  # the caller's own target
            try:
                target = parse_uri(destination.uri)
                port = target.default_port()
                next_hop = (await self.config.targets.vet(target.host_bare, port), port)
            except (SipParseError, OSError) as exc:
                log.warning("call %s: cannot dial %s: %s", call.id, destination.uri, exc)
                await self._finish(call, CallStatus.FAILED, "error")
                return
        try:
            sip_call = self._sip.invite(
                destination.uri,
                self._from_uri(p),
                offer,
                auth=auth,
                timeout=timeout,
                headers=dict(p.get("headers") or {}),
                outbound_proxy=next_hop,
            )
        except (SipParseError, RuntimeError, OSError) as exc:
            log.warning("call %s: cannot send INVITE to %s: %s", call.id, destination.uri, exc)
            await self._finish(call, CallStatus.FAILED, "error")
            return
        call.sip = sip_call
        self._keep_dialog(call, sip_call)
        self._legs.watch(call, sip_call)
        self._set_status(call, CallStatus.CREATED)
        if call.requested_final is CallStatus.CANCELED:
            await sip_call.cancel()
        await self._follow_outgoing(call, sip_call, p)

    async def _follow_outgoing(self, call: Call, sip_call: OutgoingCall, p: dict[str, Any]) -> None:
        leg = call.leg
        assert leg is not None
        while True:
            event = await sip_call.events.get()
            if isinstance(event, Ringing):
                self._set_status(call, CallStatus.RINGING)
                if event.sdp and self._legs.take_answer(leg, event.sdp):
                    call.early_media.set()  # a 183 with SDP: the callee's early media flows
            elif isinstance(event, Answered):
                # The 200 repeats the early answer's SDP, or carries none when it was reliable.
                usable = self._legs.take_answer(leg, event.sdp) or (
                    not event.sdp and call.early_media.is_set()
                )
                if not usable:
                    log.warning("call %s: the answer has no usable audio; hanging up", call.id)
                    await sip_call.bye()
                    continue
                self._mark_answered(call)
                if call.requested_final is not None:
                    await sip_call.bye()
                    continue
                if p.get("send_digits"):
                    self._spawn(call, self._send_digits(call, str(p["send_digits"])))
                if call.dialed_for is None:  # a bridge's peer leg runs no SWML of its own
                    self._start_swml(call)
            elif isinstance(event, Referred):
                self._spawn(call, refer.follow_refer(self.services, call, event))
            elif isinstance(event, Failed):
                await self._finish(call, *self._failure_outcome(call, event))
                return
            elif isinstance(event, Ended):
                await self._finish(call, self._final_status(call), self._end_reason(call, event))
                return

    @staticmethod
    def _failure_outcome(call: Call, event: Failed) -> tuple[CallStatus, str]:
        if call.requested_final is CallStatus.CANCELED or event.cause == "cancelled":
            return CallStatus.CANCELED, "cancel"
        if event.cause == "timeout" or event.code in _NO_ANSWER_CODES:
            return CallStatus.ENDED, "noAnswer"
        if event.code in _BUSY_CODES:
            return CallStatus.ENDED, "busy"
        if event.code in _DECLINE_CODES:
            return CallStatus.ENDED, "decline"
        if event.cause == "transport":
            return CallStatus.FAILED, "error"
        return CallStatus.ENDED, "error"

    @staticmethod
    def _end_reason(call: Call, event: Ended | Failed) -> str:
        if isinstance(event, Ended) and event.by == "local" and call.local_end_reason:
            return call.local_end_reason
        return "hangup"

    @staticmethod
    def _final_status(call: Call) -> CallStatus:
        return call.requested_final or CallStatus.ENDED

    def _mark_answered(self, call: Call) -> None:
        self._set_status(call, CallStatus.ANSWERED)
        call.answered.set()

    async def _send_digits(self, call: Call, digits: str) -> None:
        if call.media is None:
            return
        try:
            await call.media.send_digits(digits)
        except (ValueError, RuntimeError) as exc:
            log.warning("call %s: cannot send digits %r: %s", call.id, digits, exc)

    # ------------------------------------------------------------------ inbound

    def _routable(self, invite: SipRequest) -> bool:
        try:
            to_uri = invite.to.uri
        except SipParseError:
            return False
        name = self._route_name(invite.uri, to_uri)
        return name is not None and name in self.config.routes and not self._stopping

    async def _on_incoming(self, incoming: IncomingCall) -> None:
        name = self._route_name(incoming.request_uri, incoming.to_uri)
        url = self.config.routes.get(name) if name else None
        if name is None or url is None or self._stopping:
            log.info("inbound call to %r has no route; rejecting", name)
            await incoming.reject(404, "Not Found")
            return
        caller = parse_uri(incoming.from_uri)
        call = Call(
            project_id=self.config.project_id,
            from_=caller.user or incoming.from_uri,
            to=name,
            direction="inbound",
            call_type="relay_pstn_call" if _E164.match(name) else "relay_sip_call",
            url=url,
            status=CallStatus.INITIATED,
            swml_url=url,
        )
        try:
            # The media ports now, before ringing: when none are left the caller hears 503 (try
            # again later), and nothing of the call is kept.
            leg = await self._legs.open(call)
        except OSError as exc:
            log.warning("inbound call to %r: no RTP ports for its media (%s); 503", name, exc)
            await incoming.reject(
                503,
                "Service Unavailable (no media ports)",
                headers=[("Retry-After", str(CAPACITY_RETRY_AFTER))],
            )
            return
        # An untrusted caller's SDP may name any address: our media goes only where its own
        # packets come from (no reflection at a third party).
        leg.media.latch_only = not incoming.trusted
        call.sip = incoming
        self._keep_dialog(call, incoming)
        self._legs.watch(call, incoming)
        self._calls[call.id] = call
        self._store.save_call(call.to_row())
        self._set_status(call, CallStatus.CREATED)
        await incoming.ringing()
        self._set_status(call, CallStatus.RINGING)
        self._start_swml(call)
        task = asyncio.current_task()
        if task is not None:
            call.tasks.add(task)
        await self._follow_incoming(call, incoming)

    @staticmethod
    def _route_name(request_uri: str, to_uri: str) -> str | None:
        for uri in (request_uri, to_uri):
            try:
                user = parse_uri(uri).user
            except SipParseError:
                continue
            if user:
                return user
        return None

    async def _follow_incoming(self, call: Call, incoming: IncomingCall) -> None:
        while True:
            event = await incoming.events.get()
            if isinstance(event, Referred):
                self._spawn(call, refer.follow_refer(self.services, call, event))
            elif isinstance(event, Ended | Failed):
                reason = (
                    "cancel"
                    if isinstance(event, Ended) and event.reason == "cancel"
                    else self._end_reason(call, event)
                )
                status = self._final_status(call)
                if reason == "cancel" and call.status in NOT_ANSWERED_YET:
                    status = CallStatus.CANCELED
                await self._finish(call, status, reason)
                return

    async def answer(self, call: Call) -> None:
        """Answer an inbound call (SWML `answer`, or a `play` that auto-answers)."""
        if call.status is CallStatus.ANSWERED or not isinstance(call.sip, IncomingCall):
            return
        if call.status not in NOT_ANSWERED_YET:
            raise SwmlError("the call cannot be answered")
        await self._legs.answer_incoming(call, call.sip, early=False)
        self._mark_answered(call)

    async def early_answer(self, call: Call) -> None:
        """183 Session Progress with our SDP: media flows to the unanswered caller (ringback,
        a callee's early media) while the call stays unanswered and unbilled."""
        if call.status not in NOT_ANSWERED_YET or not isinstance(call.sip, IncomingCall):
            return
        await self._legs.answer_incoming(call, call.sip, early=True)

    # ------------------------------------------------------------------ legs and bridges

    async def dial_leg(self, parent: Call, spec: PeerDial) -> Call:
        """Dial a peer leg for `parent`'s bridge: a call of its own (its id, events and
        `calling.call.state` webhooks), with `parent_id` set, that runs no SWML."""
        if self._stopping:
            raise CommandError(503, "service_unavailable", "callplane is shutting down")
        destination = self._resolve_destination(spec.to)
        codecs = self._codecs(list(spec.codecs) if spec.codecs else None)
        peer = Call(
            project_id=parent.project_id,
            from_=spec.from_,
            to=spec.to,
            direction="outbound-api",
            call_type=destination.call_type,
            parent_id=parent.id,
            status_url=spec.status_url,
            status_events=spec.status_events,
        )
        peer.dialed_for = parent
        self._calls[peer.id] = peer
        self._store.save_call(peer.to_row())
        p: dict[str, Any] = {"to": spec.to, "from": spec.from_, "timeout": spec.timeout}
        if spec.username and spec.password:
            p["username"], p["password"] = spec.username, spec.password
        if spec.headers:
            p["headers"] = dict(spec.headers)
        self._spawn(peer, self._run_outbound(peer, destination, codecs, p))
        return peer

    async def confirm(self, peer: Call, spec: PeerDial) -> bool:
        """A connect destination's `confirm`: SWML run on the answered callee before the
        bridge (a whisper, "press 1 to accept"). It accepts unless it hangs up, fails, the
        callee leaves, or it outlasts `confirm_timeout`."""
        confirm = spec.confirm
        try:
            if isinstance(confirm, str):
                document = await self._fetch_for(peer, confirm)
            else:
                document = load_document({"sections": {"main": list(confirm or ())}})
        except (CommandError, SwmlError) as exc:
            log.warning("call %s: connect confirm cannot run: %s", peer.id, exc)
            return False
        interpreter = SwmlInterpreter(
            document,
            CallSwmlHost(self.services, peer),
            call=self.call_scope(peer),
            envs=peer.custom_variables,
            fetcher=self._fetcher,
            http_client=self._http,
        )
        peer.swml = interpreter
        try:
            outcome = await asyncio.wait_for(interpreter.run(), spec.confirm_timeout)
        except TimeoutError:
            log.info("call %s: connect confirm timed out", peer.id)
            return False
        finally:
            peer.swml = None
        return outcome.kind in ("completed", "returned") and not peer.is_terminal

    def bridge(self, owner: Call, peer: Call) -> Bridge:
        return Bridge(self._media, owner, peer)

    # ------------------------------------------------------------------ ending

    async def hang_up(self, call: Call, reason: str) -> None:
        """Ask the far end to end the call; `_finish` runs when the SIP layer reports the end."""
        if call.is_terminal:
            return
        if call.local_end_reason is None:
            call.local_end_reason = reason
        if call.sip is None:
            # Still queued: no INVITE has gone out yet.
            await self._finish(call, call.requested_final or CallStatus.CANCELED, "cancel")
            return
        if call.status is CallStatus.ANSWERED:
            self._set_status(call, CallStatus.ENDING)
            await call.sip.bye()
        elif isinstance(call.sip, IncomingCall):
            code = {"busy": 486, "decline": 603}.get(reason, 480)
            await call.sip.reject(code)
        else:
            await call.sip.cancel()

    async def _finish(self, call: Call, status: CallStatus, end_reason: str) -> None:
        """The call is over: let its operations end first, so their last events (a recording's
        `finished` with its URL, a detect's `finished`) come before the call's `ended`."""
        if call.is_terminal or call.finishing:
            return
        call.finishing = True
        if call.bridge is not None:
            bridge = call.bridge
            bridge.end("owner_hangup" if call is bridge.owner else "peer_hangup")
            if not bridge.owned:
                self._spawn_detached(self.hang_up(bridge.other(call), "hangup"))
        operations_done = []
        for op in list(call.operations.values()):
            try:
                await op.stop()
            except Exception:
                log.exception("call %s: stopping %r failed", call.id, op)
            if not op.done.done():
                operations_done.append(op.done)
        if operations_done:
            await asyncio.wait(operations_done, timeout=2.0)
        if call.swml_task is not None and call.swml_task is not asyncio.current_task():
            call.swml_task.cancel()
        if call.media is not None:
            self._spawn_detached(call.media.close())
        self._conclude(call, status, end_reason)

    def _conclude(self, call: Call, status: CallStatus, end_reason: str) -> None:
        if not self._set_status(call, status, end_reason):
            # A jump the lifecycle forbids (e.g. failed after ringing): it still ended.
            self._set_status(call, CallStatus.ENDED, end_reason)
        call.finished.set()
        self._calls.pop(call.id, None)

    # ------------------------------------------------------------------ SWML

    def call_scope(self, call: Call) -> dict[str, Any]:
        """The SWML `call` object (reference §7.5)."""
        return {
            "call_id": call.id,
            "node_id": call.node_id,
            "segment_id": call.segment_id,
            "call_state": "ended" if call.is_terminal else call.status.value,
            "direction": "inbound" if call.direction == "inbound" else "outbound",
            "type": "phone" if call.call_type == "relay_pstn_call" else "sip",
            "from": call.from_,
            "to": call.to,
            "headers": [],
            "project_id": call.project_id,
            "space_id": self.config.space_id,
        }

    def _start_swml(self, call: Call, document: SwmlDocument | None = None) -> None:
        call.swml_task = self._spawn(call, self._run_swml(call, document))

    async def _run_swml(self, call: Call, document: SwmlDocument | None) -> None:
        scope = self.call_scope(call)
        try:
            if document is None:
                document = await self._initial_document(call, scope)
        except SwmlFetchError as exc:
            log.warning("call %s: cannot fetch its SWML: %s; hanging up", call.id, exc)
            await self.hang_up(call, "error")
            return
        interpreter = SwmlInterpreter(
            document,
            CallSwmlHost(self.services, call),
            call=scope,
            envs=call.custom_variables,
            fetcher=self._fetcher,
            http_client=self._http,
        )
        call.swml = interpreter
        outcome = await interpreter.run()
        if outcome.kind == "error":
            log.warning("call %s: SWML failed at %s: %s", call.id, outcome.path, outcome.error)
            self._events.emit(
                call,
                "calling.swml.error",
                {"error": outcome.error, "path": outcome.path, "method": outcome.method},
                webhook_url=None,
            )
        # A script that ends leaves nothing to drive the call: hang up, as SWML does.
        await self.hang_up(call, "error" if outcome.kind == "error" else "hangup")

    async def _initial_document(self, call: Call, scope: dict[str, Any]) -> SwmlDocument:
        if call.swml_inline is not None:
            return load_document(call.swml_inline)
        if call.swml_url is None:
            raise SwmlFetchError("the call has no SWML")
        body = build_fetch_body(scope, {}, call.custom_variables, {})
        return await self._fetcher.fetch(
            call.swml_url, body, method=call.url_method, fallback_url=call.fallback_url
        )

    async def _redirect(self, call: Call, document: SwmlDocument) -> None:
        interpreter = call.swml
        if interpreter is not None and await interpreter.replace(document):
            return
        self._start_swml(call, document)

    async def _fetch_for(
        self, call: Call, url: str, fallback_url: str | None = None
    ) -> SwmlDocument:
        body = build_fetch_body(
            self.call_scope(call), call.swml.vars if call.swml else {}, call.custom_variables, {}
        )
        try:
            return await self._fetcher.fetch(url, body, fallback_url=fallback_url)
        except SwmlFetchError as exc:
            raise CommandError(
                422, "invalid_parameter", f"cannot load SWML from {url}: {exc}", "url"
            ) from exc

    # ------------------------------------------------------------------ update

    async def _update(self, call: Call, p: dict[str, Any]) -> None:
        if call.is_terminal:
            raise CommandError(
                422,
                "cannot_update_completed",
                f"call {call.id} has already {call.status.value}",
                "id",
            )
        status = p.get("status")
        has_swml = p.get("url") is not None or p.get("swml") is not None
        if status == "canceled":
            if call.status not in NOT_ANSWERED_YET:
                raise CommandError(
                    422,
                    "cannot_cancel_in_progress",
                    "only a call that is not answered yet can be canceled; "
                    "use status=completed to end an answered call",
                    "status",
                )
            call.requested_final = CallStatus.CANCELED
            await self.hang_up(call, "cancel")
        elif status == "completed":
            if call.status is not CallStatus.ANSWERED:
                raise CommandError(
                    422,
                    "invalid_state",
                    f"only an answered call can be completed; this one is {call.status.value}",
                    "status",
                )
            call.requested_final = CallStatus.COMPLETED
            await self.hang_up(call, "hangup")
        elif has_swml:
            if call.status is not CallStatus.ANSWERED:
                raise CommandError(
                    422,
                    "cannot_redirect_not_in_progress",
                    f"only an answered call can be redirected; this one is {call.status.value}",
                    "url" if p.get("url") is not None else "swml",
                )
            inline = self._load_inline_swml(p.get("swml"), "swml")
            document = inline or await self._fetch_for(call, str(p["url"]), p.get("fallback_url"))
            if p.get("url") is not None:
                call.url = str(p["url"])
            await self._redirect(call, document)
        elif p.get("status_url") is None:
            raise CommandError(
                422,
                "inline_swml_or_swml_webhook_required",
                "update needs url, swml, status or status_url",
                "url",
            )
        if p.get("status_url") is not None:
            call.status_url = str(p["status_url"])
            self._store.save_call(call.to_row())

    # ------------------------------------------------------------------ call commands

    async def _cmd_end(self, call: Call, p: dict[str, Any]) -> None:
        reason = str(p.get("reason") or "hangup")
        if call.status in NOT_ANSWERED_YET:
            call.requested_final = CallStatus.CANCELED
        await self.hang_up(call, reason)

    async def _cmd_transfer(self, call: Call, p: dict[str, Any]) -> None:
        dest = p["dest"]
        require_answered(call, "transferred")
        if isinstance(dest, dict):
            document = self._load_inline_swml(dest, "dest")
            assert document is not None
        elif isinstance(dest, str) and dest.startswith(("http://", "https://")):
            document = await self._fetch_for(call, dest)
        elif isinstance(dest, str) and dest.lstrip().startswith("{"):
            document = self._load_inline_swml(dest, "dest")
            assert document is not None
        elif isinstance(dest, str):
            # A SIP URI, a phone number or a route: the call is bridged there; its script stops.
            self._resolve_destination(dest)  # 422 now for what cannot be dialled
            if call.swml_task is not None and not call.swml_task.done():
                call.swml_task.cancel()
            await connect.transfer(self.services, call, dest)
            return
        else:
            raise CommandError(422, "invalid_parameter", "`dest` must be a string or SWML", "dest")
        await self._redirect(call, document)

    async def _cmd_disconnect(self, call: Call, p: dict[str, Any]) -> None:
        if call.bridge is None:
            raise CommandError(
                422, "invalid_state", f"call {call.id} is not bridged to another call", "id"
            )
        call.bridge.end("disconnected")

    async def _cmd_user_event(self, call: Call, p: dict[str, Any]) -> None:
        self._record_event(call, "calling.user_event", {"event": p["event"]})

    # ------------------------------------------------------------------ tasks

    def _spawn(self, call: Call, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(self._guarded(call, coro))
        call.tasks.add(task)
        task.add_done_callback(call.tasks.discard)
        return task

    async def _guarded(self, call: Call, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call %s: internal error", call.id)
            with contextlib.suppress(Exception):
                await self.hang_up(call, "error")
            await self._finish(call, CallStatus.ENDED, "error")

    def _spawn_detached(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._detached.add(task)
        task.add_done_callback(self._detached.discard)
