"""SIP REFER both ways.

Sending: REST `calling.refer` and SWML `sip_refer` ask the far end to call someone else (a blind
transfer done by the far end's own SIP stack). The REFER's response and the NOTIFY sipfrags that
follow it become `calling.call.refer` events (`state`, `sip_refer_to`, `sip_refer_response_code`,
`sip_notify_response_code`) and SWML's `sip_refer_*` variables.

Receiving: a far end may REFER us, as a phone does for a blind transfer. On a bridged leg we
accept it, dial the Refer-To target, report its progress in NOTIFY sipfrags and, once it
answers, put it in the bridge in place of the referring leg: the other party now talks to the
target. On a leg that is not bridged the REFER is declined with 603. Either way the call's
event log says what happened (`calling.call.refer` with `direction: inbound`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from callplane.engine.calls import CallStatus
from callplane.engine.facade import CommandError
from callplane.engine.operations.base import (
    Emit,
    Operation,
    control_id_of,
    register,
    require_answered,
)
from callplane.engine.services import CommandHandler, PeerDial, Services, SwmlMethod
from callplane.engine.swml.errors import SwmlError
from callplane.sip.endpoint import Referred

if TYPE_CHECKING:
    from callplane.engine.calls import Call
    from callplane.sip.endpoint import ReferProgress

log = logging.getLogger("callplane.engine.refer")

NOTIFY_TIMEOUT = 60.0


def _state_for(code: int) -> str:
    """The RELAY refer state for a final status of the referred call (or of the REFER)."""
    if 200 <= code < 300:
        return "success"
    if code in (486, 600):
        return "busy"
    if code in (408, 480, 487):
        return "noAnswer"
    if code in (603, 607):
        return "cancel"
    return "error"


class ReferOperation(Operation):
    kind = "refer"
    event_type = "calling.call.refer"
    initial_state = "sending"
    transitions: ClassVar[Mapping[str, frozenset[str]]] = {
        "sending": frozenset({"inProgress", "success", "busy", "noAnswer", "cancel", "error"}),
        "inProgress": frozenset({"success", "busy", "noAnswer", "cancel", "error"}),
    }

    def __init__(
        self,
        call: Call,
        control_id: str,
        status_url: str | None,
        emit: Emit,
        *,
        refer_to: str,
        referred_by: str | None,
        auth: tuple[str, str] | None,
    ) -> None:
        super().__init__(call, control_id, status_url, emit)
        self.refer_to = refer_to
        self._referred_by = referred_by
        self._auth = auth
        self.refer_code: int | None = None
        self.notify_code: int | None = None

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "segment_id": self.call.segment_id,
            "sip_refer_to": self.refer_to,
        }
        if self.refer_code is not None:
            params["sip_refer_response_code"] = str(self.refer_code)
        if self.notify_code is not None:
            params["sip_notify_response_code"] = str(self.notify_code)
        return params

    async def run(self) -> str:
        """Send the REFER and follow its NOTIFYs to the end; returns the final state."""
        sip_call = self.call.sip
        if sip_call is None or sip_call.ended:
            self.move("error", **self._params())
            return self.state
        handle = await sip_call.refer(
            self.refer_to,
            auth=self._auth,
            referred_by=self._referred_by,
            notify_timeout=NOTIFY_TIMEOUT,
        )
        self.refer_code = handle.code
        if not handle.accepted:
            self.move(_state_for(handle.code), **self._params())
            return self.state
        self.move("inProgress", **self._params())
        report: ReferProgress
        async for report in handle:
            self.notify_code = report.status_code
            if report.final:
                self.move(_state_for(report.status_code), **self._params())
                break
        if not self.is_terminal:
            self.move("error", **self._params())
        return self.state

    async def stop(self) -> None:
        # The call is ending: the REFER's subscription ends with its dialog (the endpoint then
        # reports a synthetic 487, which run() turns into the last event).
        return None


def _start(
    services: Services,
    call: Call,
    to: str,
    *,
    control_id: str,
    status_url: str | None,
    referred_by: str | None,
    auth: tuple[str, str] | None,
) -> ReferOperation:
    if not to.startswith(("sip:", "sips:")):
        raise CommandError(422, "invalid_parameter", "a REFER target must be a sip: URI", "to")
    if call.call_type != "relay_sip_call" or call.sip is None:
        raise CommandError(422, "invalid_state", "REFER needs a SIP call (not PSTN)", "id")
    require_answered(call, "referred")
    op = ReferOperation(
        call,
        control_id,
        status_url,
        services.emit,
        refer_to=to,
        referred_by=referred_by,
        auth=auth,
    )
    register(call, op)
    return op


def _credentials(params: Mapping[str, Any]) -> tuple[str, str] | None:
    user, password = params.get("username"), params.get("password")
    return (str(user), str(password)) if user and password else None


async def _refer(services: Services, call: Call, p: dict[str, Any]) -> None:
    device = p["device"]
    params = device.get("params") or {}
    op = _start(
        services,
        call,
        str(params.get("to") or ""),
        control_id=control_id_of(p),
        status_url=p.get("status_url"),
        referred_by=params.get("from"),
        auth=_credentials(params),
    )
    task = asyncio.create_task(op.run(), name=f"refer-{call.id}")
    call.tasks.add(task)
    task.add_done_callback(call.tasks.discard)


async def swml_sip_refer(
    services: Services, call: Call, params: dict[str, Any]
) -> dict[str, Any] | None:
    to = str(params.get("to_uri") or "")
    try:
        op = _start(
            services,
            call,
            to,
            control_id=control_id_of({}),
            status_url=params.get("status_url"),
            referred_by=None,
            auth=_credentials(params),
        )
    except CommandError as exc:
        raise SwmlError(exc.message) from exc
    state = await op.run()
    result = "success" if state == "success" else "failed"
    out: dict[str, Any] = {
        "sip_refer_to": to,
        "sip_refer_result": result,
        "return_value": result,
        "sip_refer_response_code": str(op.refer_code or ""),
    }
    if op.notify_code is not None:
        out["sip_refer_to_response_code"] = str(op.notify_code)
    return out


# ---------------------------------------------------------------------------------------------
# a REFER from the far end


async def follow_refer(services: Services, call: Call, event: Referred) -> None:
    """A far end asks us to call someone else in its place."""
    handle = event.handle
    bridge = call.bridge
    record: dict[str, Any] = {
        "direction": "inbound",
        "sip_refer_to": event.refer_to,
        "referred_by": event.referred_by,
    }
    if bridge is None or not bridge.active or call.status is not CallStatus.ANSWERED:
        await handle.reject(603, "Decline")
        services.record_event(
            call,
            "calling.call.refer",
            {**record, "state": "declined", "reason": "the call is not bridged to anyone"},
        )
        return
    if not event.refer_to.startswith(("sip:", "sips:")) or "?" in event.refer_to:
        # Replaces= (attended transfer) needs the dialog it names; callplane does blind only.
        await handle.reject(603, "Decline")
        services.record_event(
            call,
            "calling.call.refer",
            {**record, "state": "declined", "reason": "only a plain sip: Refer-To is supported"},
        )
        return
    await handle.accept()
    staying = bridge.other(call)
    services.record_event(call, "calling.call.refer", {**record, "state": "accepted"})
    try:
        target = await services.dial_leg(
            staying, PeerDial(to=event.refer_to, from_=staying.from_, timeout=60.0)
        )
    except CommandError as exc:
        await handle.notify(503, "Service Unavailable")
        services.record_event(
            call, "calling.call.refer", {**record, "state": "error", "reason": exc.message}
        )
        return
    ringing = False
    answered = asyncio.create_task(target.answered.wait())
    ended = asyncio.create_task(target.finished.wait())
    try:
        while not (answered.done() or ended.done()):
            await asyncio.wait({answered, ended}, timeout=0.2, return_when="FIRST_COMPLETED")
            if not ringing and target.status is CallStatus.RINGING:
                ringing = True
                await handle.notify(180, "Ringing")
    finally:
        answered.cancel()
        ended.cancel()
    if target.status is not CallStatus.ANSWERED or not bridge.active or call.bridge is not bridge:
        code = {"busy": 486, "decline": 603, "noAnswer": 480}.get(target.end_reason or "", 487)
        if not target.is_terminal:
            await services.hang_up(target, "cancel")
        await handle.notify(code, "Failed")
        services.record_event(
            call,
            "calling.call.refer",
            {**record, "state": "failed", "sip_notify_response_code": str(code)},
        )
        return
    bridge.replace(call, target)
    await handle.notify(200, "OK")
    services.record_event(
        call,
        "calling.call.refer",
        {**record, "state": "transferred", "peer": {"call_id": target.id}},
    )
    services.record_event(
        staying,
        "calling.call.refer",
        {
            **record,
            "state": "transferred",
            "replaced_call_id": call.id,
            "peer": {"call_id": target.id},
        },
    )


COMMANDS: dict[str, CommandHandler] = {"calling.refer": _refer}
SWML_METHODS: dict[str, SwmlMethod] = {"sip_refer": swml_sip_refer}
