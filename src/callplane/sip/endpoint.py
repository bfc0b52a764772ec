"""The asyncio SIP endpoint: the only object of `callplane.sip` the engine uses.

A thin layer: it moves datagrams between one UDP socket and the sans-IO transaction / dialog
machines, runs their timers with `loop.call_at`, and turns what they deliver into call events.
Protocol decisions cite RFC 3261 sections; the state machines themselves live in
`transaction.py` and `dialog.py`.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from . import auth as _auth
from .dialog import (
    Dialog,
    DialogState,
    Uas2xxRetransmitter,
    glare_retry_delay,
    new_branch,
    new_call_id,
    new_tag,
    parse_refer_to,
    parse_sipfrag,
    parse_subscription_state,
    sipfrag,
)
from .message import (
    Headers,
    SipParseError,
    SipRequest,
    SipResponse,
    parse_message,
    parse_name_addr,
    parse_params,
    parse_uri,
    parse_via,
    quote,
)
from .policy import InboundPolicy, IpNetwork
from .sdp import SdpError, answer_reoffer, continue_session
from .transaction import (
    T1,
    Action,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    Deliver,
    Send,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    Terminated,
    Timeout,
    TxState,
    build_cancel,
    client_key,
    server_key,
)

log = logging.getLogger("callplane.sip")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, NOTIFY, REFER"

__all__ = [
    "Answered",
    "CallState",
    "Ended",
    "Failed",
    "IncomingCall",
    "IncomingRefer",
    "OutgoingCall",
    "OutgoingRefer",
    "ReferProgress",
    "Referred",
    "Reinvited",
    "Ringing",
    "SipCall",
    "SipCallEvent",
    "SipEndpoint",
    "SipRequestError",
    "Trying",
]


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Trying:
    """100 Trying arrived (outgoing calls only)."""


@dataclass(frozen=True, slots=True)
class Ringing:
    """A 180/181/182/183 provisional response; `sdp` is the early-media answer if it carried one."""

    code: int
    sdp: bytes | None = None


@dataclass(frozen=True, slots=True)
class Answered:
    """The call is confirmed.

    Outgoing: the 2xx arrived (and was ACKed); `sdp` is the remote answer (b"" if none).
    Incoming: the ACK for our 200 arrived; `sdp` is the ACK body (late-offer answer) or b"".
    """

    sdp: bytes


FailCause = Literal["rejected", "timeout", "cancelled", "auth", "transport", "error"]


@dataclass(frozen=True, slots=True)
class Failed:
    """An outgoing call ended before being answered (final non-2xx, timeout or local cancel).

    `code`/`reason` are the SIP final response (or a synthetic 408 "timeout" / 503 on transport
    failure).  `cause` distinguishes why, so the engine can map it without parsing text:
      * "rejected"  - the far end answered with a final non-2xx (486 busy, 603 decline, ...)
      * "timeout"   - `invite(timeout=...)` expired: we CANCELled; code=408, reason="timeout"
                      ("no answer").
      * "cancelled" - `cancel()` was called by the engine; code=487
      * "auth"      - 401/407 and no or wrong credentials
      * "transport" - the target could not be resolved (503), or never answered at all
                      (timer B, 32 s: 408 "Request Timeout (no response)")
      * "error"     - anything else
    """

    code: int
    reason: str
    cause: FailCause = "rejected"


@dataclass(frozen=True, slots=True)
class Ended:
    """A confirmed call (or a ringing incoming call) ended.

    `by` is "remote" (BYE or CANCEL received) or "local" (our bye()/stop(), or ACK timeout).
    `reason`: "bye", "cancel", "ack timeout", "stop", "timeout".
    """

    by: Literal["remote", "local"]
    reason: str


@dataclass(frozen=True, slots=True)
class Reinvited:
    """The far end changed the session with a re-INVITE (hold/resume, new media address) and we
    accepted it (200 sent; see `SipCall.on_offer`).  `sdp` is its new session description (also in
    `call.remote_sdp`): the offer of the re-INVITE, or the answer of its ACK when the re-INVITE
    had no body (then our 200 carried `call.local_sdp` as the offer).  Put after the 200 went out,
    so the engine re-configures media from `sdp` and `call.local_sdp`."""

    sdp: bytes


@dataclass(frozen=True, slots=True)
class Referred:
    """The far end sent a REFER (RFC 3515) in this dialog: it asks us to call `refer_to` (the
    Refer-To URI, `<...>` stripped, header parameters such as `?Replaces=` kept).  The engine
    decides with `handle.accept()` / `handle.reject()` and reports progress with
    `handle.notify()`.  Undecided after `SipEndpoint.refer_decision_timeout` (30 s), the
    REFER is rejected with 480."""

    refer_to: str
    referred_by: str | None
    request: SipRequest
    handle: IncomingRefer


SipCallEvent = Trying | Ringing | Answered | Failed | Ended | Reinvited | Referred


class SipRequestError(Exception):
    """An in-dialog request we sent (re-INVITE) got a final non-2xx response, or none: `code`
    is the response status (408 on timeout, 503 on transport error, 481 when the call is not
    confirmed, 491 when our own re-INVITE is still pending).  The dialog stays up."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ReferProgress:
    """One report about a REFER we sent: the sipfrag status of a NOTIFY, or the REFER's own
    final response when it was rejected (`final` is then True).  `final` is True on the last
    report of a REFER: Subscription-State terminated, or a final (>= 200) sipfrag status.
    Synthetic last reports: 408 when no final NOTIFY came in time, 487 when the dialog ended."""

    status_code: int
    reason: str
    final: bool


class CallState(enum.StrEnum):
    CALLING = "calling"  # INVITE sent / received, nothing else yet
    RINGING = "ringing"  # provisional >100 sent or received
    ANSWERED = "answered"  # 2xx sent (incoming, waiting for ACK) or received
    CONFIRMED = "confirmed"  # dialog confirmed (ACK exchanged)
    ENDED = "ended"  # terminated (Failed or Ended was emitted)


# --------------------------------------------------------------------------- calls


class SipCall:
    """State shared by outgoing and incoming calls.

    Attributes:
      call_id: the SIP Call-ID.
      state: a CallState.
      local_sdp / remote_sdp: the last SDP sent / received (bytes) or None.
      events: asyncio.Queue of SipCallEvent; the engine consumes it.  Exactly one terminal event
        (Failed or Ended) is put per call, and it is the last.
      dialog: the sip.dialog.Dialog once one exists (None before).
    """

    def __init__(self, endpoint: SipEndpoint, call_id: str, local_tag: str) -> None:
        self._ep = endpoint
        self.call_id = call_id
        self.local_tag = local_tag
        self.state = CallState.CALLING
        self.local_sdp: bytes | None = None
        self.remote_sdp: bytes | None = None
        self.events: asyncio.Queue[SipCallEvent] = asyncio.Queue()
        self.dialog: Dialog | None = None
        self._peer: tuple[str, int] | None = None  # where the dialog's peer was last heard from
        # re-INVITE 2xx retransmitters waiting for their ACK, by CSeq number
        self._pending_2xx: dict[int, _Retransmit] = {}
        # Called with the SDP offer of a re-INVITE; returns the answer, or None to refuse (488).
        # None: answer from local_sdp with the direction mirrored (sdp.answer_reoffer).
        self.on_offer: Callable[[bytes], bytes | None] | None = None
        self._credentials: tuple[str, str] | None = None  # answers 401/407 to in-dialog requests
        self._own_invite_pending = False  # our re-INVITE is in progress: theirs get 491 (§14.2)
        self._late_offers: set[int] = set()  # re-INVITEs without SDP: the answer is in the ACK
        self._refers_out: dict[int, OutgoingRefer] = {}  # REFERs we sent, by CSeq number
        self._refers_in = 0  # REFERs received in this dialog (the first has no Event id)
        # Called with `orphan_state()` whenever what a BYE needs changes (the dialog is confirmed,
        # a request took a CSeq number, the target was refreshed), so that a process that
        # restarts after a crash can still hang the call up (SipEndpoint.bye_orphan).
        self.on_dialog: Callable[[dict[str, Any]], None] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.call_id} {self.state}>"

    @property
    def ended(self) -> bool:
        return self.state == CallState.ENDED

    def _emit(self, ev: SipCallEvent) -> None:
        if self.state == CallState.ENDED:
            return
        if isinstance(ev, Failed | Ended):
            self.state = CallState.ENDED
            self._ep._forget(self)
            for r in list(self._refers_out.values()):
                r._finish(487, "Request Terminated (dialog ended)")
        self.events.put_nowait(ev)

    async def bye(self, reason: str = "bye") -> None:
        """Hang up a confirmed (or answered) call: send BYE, emit Ended(by="local").
        On an unanswered outgoing call this is cancel(); on an unanswered incoming call reject(480).
        No-op when already ended."""
        raise NotImplementedError

    async def cancel(self) -> None:
        """Outgoing: CANCEL a pending INVITE (emits Failed(487, cause="cancelled")).
        Incoming: equivalent to reject(487).  On a confirmed call this is bye()."""
        raise NotImplementedError

    def orphan_state(self) -> dict[str, Any] | None:
        """The confirmed dialog as `SipEndpoint.bye_orphan` takes it (None before one exists):
        `Dialog.to_state()` plus `addr`, where in-dialog requests are sent."""
        if self.dialog is None or self.dialog.state is not DialogState.CONFIRMED:
            return None
        host, port = self._ep._dialog_addr(self)
        return {**self.dialog.to_state(), "addr": [host, port]}

    def _dialog_changed(self) -> None:
        if self.on_dialog is None:
            return
        state = self.orphan_state()
        if state is not None:
            self.on_dialog(state)

    def _send_bye(self) -> None:
        assert self.dialog is not None
        req = self.dialog.create_request("BYE", extra_headers=self._ep._common_headers())
        self.dialog.state = DialogState.TERMINATED
        self._ep._send_request(req, self._ep._dialog_addr(self), None, None)

    def _on_in_dialog_request(self, req: SipRequest, addr: tuple[str, int]) -> None:
        """A request whose To tag is our local tag (§12.2.2)."""
        ep = self._ep
        assert self.dialog is not None
        if req.method == "ACK":
            self._on_ack(req)
            return
        err = self.dialog.check_remote_request(req)
        if err is not None:
            ep._respond_stateless(req, addr, err, "Server Internal Error")
            return
        self._peer = addr
        if req.method == "BYE":
            ep._respond_new_tx(req, addr, 200, "OK")
            for r in self._pending_2xx.values():
                r.stop()
            self._pending_2xx.clear()
            self.dialog.state = DialogState.TERMINATED
            self._emit(Ended("remote", "bye"))
        elif req.method == "INVITE":
            self._dialog_changed()  # the re-INVITE may have refreshed the remote target
            self._on_reinvite(req, addr)
        elif req.method == "REFER":
            self._on_refer(req, addr)
        elif req.method == "NOTIFY":
            self._on_notify(req, addr)
        elif req.method in ("OPTIONS", "INFO"):
            ep._respond_new_tx(req, addr, 200, "OK", extra=[("Allow", ALLOW)])
        else:
            ep._respond_new_tx(req, addr, 405, "Method Not Allowed", extra=[("Allow", ALLOW)])

    # -- re-INVITE received

    def _on_reinvite(self, req: SipRequest, addr: tuple[str, int]) -> None:
        ep = self._ep
        assert self.dialog is not None
        tx = ServerInviteTransaction(req)
        entry = ep._add_server_tx(tx, addr)

        def refuse(code: int, extra: list[tuple[str, str]] | None = None) -> None:
            resp = ep._make_response(req, code, _REASONS[code], to_tag=self.local_tag, extra=extra)
            ep._run_server(entry, tx.send_response(resp, ep._now()))

        if self._own_invite_pending:
            refuse(491)  # §14.2: glare with our own re-INVITE; both sides retry after a wait
            return
        if self._pending_2xx or self.state == CallState.ANSWERED:
            # §14.2: an earlier INVITE of theirs is not finished (its ACK has not arrived).
            refuse(500, [("Retry-After", str(random.randint(0, 10)))])
            return
        if req.body:
            answer = self._answer_offer(req.body)
            if answer is None:
                refuse(488)  # §14.2: the old session stays in force
                return
            self.remote_sdp = req.body
            self.local_sdp = answer
            body = answer
        else:
            # §14.2 / RFC 3264 §5: no offer in the re-INVITE: our 200 offers our current
            # session, the ACK carries the answer.
            body = self.local_sdp or b""
            self._late_offers.add(req.cseq.seq)
        resp = ep._make_response(req, 200, "OK", to_tag=self.local_tag, contact=True, body=body)
        ep._run_server(entry, tx.send_response(resp, ep._now()))
        seq = req.cseq.seq

        def ack_timeout() -> None:
            self._pending_2xx.pop(seq, None)
            self._late_offers.discard(seq)

        self._pending_2xx[seq] = _Retransmit(ep, resp.to_bytes(), addr, ack_timeout)
        if req.body:
            self._emit(Reinvited(req.body))

    def _answer_offer(self, offer: bytes) -> bytes | None:
        if self.on_offer is not None:
            try:
                answer = self.on_offer(offer)
            except Exception:
                log.exception("on_offer failed for %s", self.call_id)
                return None
            return None if answer is None else self._continue_session(answer)
        if self.local_sdp is None:
            return None
        try:
            return answer_reoffer(offer, self.local_sdp)
        except SdpError as e:
            log.info("re-INVITE on %s with unusable SDP: %s", self.call_id, e)
            return None

    def _on_ack(self, req: SipRequest) -> None:
        seq = req.cseq.seq
        r = self._pending_2xx.pop(seq, None)
        if r is not None:
            r.stop()
            if req.body:
                self.remote_sdp = req.body
            if seq in self._late_offers:
                self._late_offers.discard(seq)
                if req.body:
                    self._emit(Reinvited(req.body))

    def _continue_session(self, sdp: bytes) -> bytes:
        """RFC 3264 §8 versioning of what we send next, relative to what we sent last."""
        if not self.local_sdp or not sdp:
            return sdp
        try:
            return continue_session(sdp, self.local_sdp)
        except SdpError:
            return sdp  # not ours to judge here; the far end will answer 488 if it must

    # -- requests we send in the dialog

    async def _request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        extra: list[tuple[str, str]] | None = None,
        on_sent: Callable[[SipRequest], None] | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> SipResponse:
        """Send an in-dialog request in a client transaction and return its final response
        (a synthetic 408/503 when none came).  A 401/407 is answered once with `credentials`
        or else the call's own (again only for a stale nonce), as a new request with the next
        CSeq (§22.2).  A 2xx to INVITE is ACKed (§13.2.2.4), its retransmissions again.
        `on_sent` sees each request before it goes out (the REFER handle needs its CSeq)."""
        ep = self._ep
        creds = credentials or self._credentials
        auth_header: tuple[str, str] | None = None
        tries = 0
        while True:
            assert self.dialog is not None
            headers = [*ep._common_headers(), *(extra or [])]
            if auth_header is not None:
                headers.append(auth_header)
            req = self.dialog.create_request(
                method, body=body, content_type=content_type, extra_headers=headers
            )
            if on_sent is not None:
                on_sent(req)
            self._dialog_changed()  # the next CSeq number moved on
            resp = await ep._transact(req, ep._dialog_addr(self))
            if resp.status in (401, 407) and creds is not None:
                hname = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
                try:
                    ch = _auth.best_challenge(resp.headers.get_all(hname))
                    if tries >= 3 or (tries >= 1 and not ch.stale):
                        return resp
                    user, pw = creds
                    value = _auth.authorization(
                        ch, method=method, uri=req.uri, username=user, password=pw
                    )
                except SipParseError:
                    return resp
                tries += 1
                name = "Authorization" if resp.status == 401 else "Proxy-Authorization"
                auth_header = (name, value)
                continue
            if method == "INVITE" and 200 <= resp.status < 300 and self.dialog is not None:
                contacts = resp.contacts
                if contacts:
                    self.dialog.remote_target = contacts[0].uri  # §12.2.1.2 target refresh
                    self._dialog_changed()
            return resp

    async def reinvite(self, sdp: bytes) -> bytes:
        """Send a re-INVITE offering `sdp` (hold: `sdp.with_direction(local, "sendonly")`, a new
        media address, resume) and return the far end's answer SDP (b"" if it sent none).

        Works on a confirmed call of either direction.  A 491 (glare, §14.1) is retried once
        after the RFC's random wait; 401/407 are answered with the call's credentials.  Any other
        final non-2xx (or no response: 408) raises SipRequestError and the dialog and the old
        session stay as they were.  On success `local_sdp` / `remote_sdp` are updated.
        The o= line of `sdp` is replaced by ours with the version RFC 3264 §8 needs
        (sdp.continue_session), so `sdp` may come straight from build_offer / with_direction.
        """
        if self.state != CallState.CONFIRMED or self.dialog is None:
            raise SipRequestError(481, "Call/Transaction Does Not Exist (call not confirmed)")
        if self._own_invite_pending:
            raise SipRequestError(491, "Request Pending")
        sdp = self._continue_session(sdp)
        resp: SipResponse | None = None
        for attempt in range(2):
            self._own_invite_pending = True
            try:
                resp = await self._request("INVITE", body=sdp)
            finally:
                self._own_invite_pending = False
            if resp.status != 491 or attempt == 1:
                break
            # §14.1: wait, then retry unless the far end's own re-INVITE changed things meanwhile
            # (we do not look: retrying with our offer is what the engine asked for).
            await asyncio.sleep(glare_retry_delay(self.dialog.is_uac, random.random()))
            if self.state != CallState.CONFIRMED:
                raise SipRequestError(481, "Call/Transaction Does Not Exist (call ended)")
        assert resp is not None
        if not 200 <= resp.status < 300:
            raise SipRequestError(resp.status, resp.reason)
        self.local_sdp = sdp
        if resp.body:
            self.remote_sdp = resp.body
        return resp.body

    # -- REFER (RFC 3515)

    async def refer(
        self,
        refer_to: str,
        *,
        auth: tuple[str, str] | None = None,
        referred_by: str | None = None,
        notify_timeout: float = 60.0,
    ) -> OutgoingRefer:
        """Send a REFER asking the far end to call `refer_to` (a URI, or `<uri?Replaces=...>`).

        Returns once the REFER's final response arrived (or none came: 408), never raises for
        the far end's behaviour.  The handle's `code` / `reason` are that response; iterate the
        handle (or read `handle.progress`) for ReferProgress reports from the NOTIFYs; the last
        one has final=True.  A rejected REFER yields one final report with its response code.
        No final NOTIFY within `notify_timeout` s of the 2xx gives a synthetic final 408.
        `auth` answers a 401/407 (the call's own credentials are used otherwise).
        """
        handle = OutgoingRefer(self)
        if self.state != CallState.CONFIRMED or self.dialog is None:
            handle._on_final_response(481, "Call/Transaction Does Not Exist (call not confirmed)")
            return handle
        value = refer_to.strip()
        if "<" not in value:
            value = f"<{value}>"
        extra = [("Refer-To", value)]
        if referred_by:
            rb = referred_by.strip()
            extra.append(("Referred-By", rb if "<" in rb else f"<{rb}>"))

        def register(req: SipRequest) -> None:
            # Registered before it is sent: a NOTIFY may overtake the 202 on UDP.
            if handle.cseq is not None:
                self._refers_out.pop(handle.cseq, None)
            handle.cseq = req.cseq.seq
            self._refers_out[req.cseq.seq] = handle

        resp = await self._request("REFER", extra=extra, on_sent=register, credentials=auth)
        handle._on_final_response(resp.status, resp.reason, notify_timeout)
        return handle

    def _on_notify(self, req: SipRequest, addr: tuple[str, int]) -> None:
        ep = self._ep
        event = req.headers.get("Event") or ""
        pkg, _, params = event.partition(";")
        if pkg.strip().lower() != "refer":
            ep._respond_new_tx(req, addr, 200, "OK", extra=[("Allow", ALLOW)])
            return
        try:
            ev_id = parse_params(params).get("id")
            state, _ = parse_subscription_state(req.headers.get("Subscription-State") or "")
            code, reason = parse_sipfrag(req.body)
        except SipParseError as e:
            ep._respond_new_tx(req, addr, 400, f"Bad Request ({e})"[:80])
            return
        handle: OutgoingRefer | None = None
        if ev_id is not None and ev_id.isdigit():
            handle = self._refers_out.get(int(ev_id))
        elif self._refers_out:
            handle = self._refers_out[min(self._refers_out)]
        if handle is None:
            # RFC 6665 §4.1.3: a NOTIFY for no subscription we know of.
            ep._respond_new_tx(req, addr, 481, "Subscription Does Not Exist")
            return
        ep._respond_new_tx(req, addr, 200, "OK")
        handle._on_notify(code, reason, state == "terminated" or code >= 200)

    def _on_refer(self, req: SipRequest, addr: tuple[str, int]) -> None:
        ep = self._ep
        try:
            target = parse_refer_to(req)
            rb = req.headers.get("Referred-By")
            referred_by = parse_name_addr(rb).uri if rb else None
        except SipParseError as e:
            ep._respond_new_tx(req, addr, 400, f"Bad Request ({e})"[:80])
            return
        if len(req.headers.get_all("Refer-To")) > 1:
            ep._respond_new_tx(req, addr, 400, "Bad Request (more than one Refer-To)")
            return
        tx = ServerNonInviteTransaction(req)
        entry = ep._add_server_tx(tx, addr)
        self._refers_in += 1
        handle = IncomingRefer(self, req, entry, tx, first=self._refers_in == 1)
        self._emit(Referred(target.uri, referred_by, req, handle))


class OutgoingCall(SipCall):
    """A call we placed with SipEndpoint.invite().

    Extra attributes: target_uri, from_uri (str), remote_target (Contact URI of the answer or
    None), response (the final SipResponse once received, else None).
    """

    def __init__(
        self,
        endpoint: SipEndpoint,
        invite: SipRequest,
        target_uri: str,
        from_uri: str,
        auth: tuple[str, str] | None,
    ) -> None:
        super().__init__(endpoint, invite.call_id, invite.from_.tag or "")
        self.target_uri = target_uri
        self.from_uri = from_uri
        self.local_sdp = invite.body or None
        self.response: SipResponse | None = None
        self._invite = invite
        self._auth = auth
        self._credentials = auth
        self._auth_tries = 0
        self._tx: ClientInviteTransaction | None = None
        self._addr: tuple[str, int] | None = None
        self._provisional = False
        self._cancel_requested: FailCause | None = None
        self._cancel_sent = False
        self._ack: bytes | None = None
        self._ring_timer: asyncio.TimerHandle | None = None
        self._cancel_guard: asyncio.TimerHandle | None = None

    @property
    def remote_target(self) -> str | None:
        return self.dialog.remote_target if self.dialog else None

    async def bye(self, reason: str = "bye") -> None:
        if self.state == CallState.ENDED:
            return
        if self.state != CallState.CONFIRMED:
            await self.cancel()
            return
        self._send_bye()
        self._emit(Ended("local", reason))

    async def cancel(self) -> None:
        if self.state == CallState.ENDED:
            return
        if self.state == CallState.CONFIRMED:
            await self.bye()
            return
        self._request_cancel("cancelled")

    def _request_cancel(self, cause: FailCause) -> None:
        if self._cancel_requested is None:
            self._cancel_requested = cause
        if self._addr is None or self._tx is None:
            # Not sent yet (DNS lookup pending): just fail; _send_invite checks the flag.
            self._finish_cancelled()
            return
        # §9.1: a CANCEL must not be sent before a provisional response arrived; it is sent when
        # the first one does (see _on_response).  The engine should not wait up to timer B for
        # that, so the call fails now; a late 2xx is still ACKed and BYEd (see _on_2xx).
        if self._provisional:
            if not self._cancel_sent:
                self._send_cancel()
        else:
            self._fail_for_cancel(487, "Request Terminated")

    def _send_cancel(self) -> None:
        assert self._addr is not None
        self._cancel_sent = True
        cancel = build_cancel(self._invite)
        cancel.headers.add("User-Agent", self._ep.user_agent)
        self._ep._send_request(cancel, self._addr, None, None, keep_via=True)
        # §9.1: if no final response within 64*T1 of the CANCEL, give up on the INVITE.
        loop = asyncio.get_running_loop()
        self._cancel_guard = loop.call_later(64 * T1, self._finish_cancelled)

    def _finish_cancelled(self) -> None:
        if self._tx is not None and self._tx.state != TxState.ACCEPTED:
            self._ep._drop_client_tx(self._tx)
        if self.state == CallState.ENDED:
            return
        self._fail_for_cancel(487, "Request Terminated")

    def _fail_for_cancel(self, code: int, reason: str) -> None:
        if self._cancel_requested == "timeout":
            self._emit(Failed(408, "timeout", "timeout"))
        else:
            self._emit(Failed(code, reason, "cancelled"))

    def _on_ring_timeout(self) -> None:
        self._ring_timer = None
        if self.state in (CallState.CALLING, CallState.RINGING):
            self._request_cancel("timeout")

    def _cleanup(self) -> None:
        for h in (self._ring_timer, self._cancel_guard):
            if h is not None:
                h.cancel()
        self._ring_timer = self._cancel_guard = None

    def _emit(self, ev: SipCallEvent) -> None:
        if isinstance(ev, Failed | Ended):
            self._cleanup()
        super()._emit(ev)

    # -- responses to our INVITE (delivered by the client transaction)
    def _on_response(self, resp: SipResponse) -> None:
        code = resp.status
        if 200 <= code < 300:
            self._on_2xx(resp)
            return
        if code < 200 and not self._provisional:
            self._provisional = True
            if self._cancel_requested and not self._cancel_sent:
                self._send_cancel()
        if self.state == CallState.ENDED:
            return
        if code < 200:
            if code == 100:
                self._emit(Trying())
            else:
                self.state = CallState.RINGING
                if resp.body:
                    self.remote_sdp = resp.body
                self._emit(Ringing(code, resp.body or None))
            return
        self.response = resp
        if code in (401, 407) and self._auth is not None and not self._cancel_requested:
            if self._retry_with_auth(resp):
                return
            self._emit(Failed(code, resp.reason, "auth"))
            return
        if self._cancel_requested and code == 487:
            self._fail_for_cancel(code, resp.reason)
            return
        cause: FailCause = "auth" if code in (401, 407) else "rejected"
        self._emit(Failed(code, resp.reason, cause))

    def _retry_with_auth(self, resp: SipResponse) -> bool:
        """§22.2: retry the INVITE with credentials, same Call-ID and From tag, CSeq + 1."""
        assert self._auth is not None and self._addr is not None
        hname = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
        try:
            ch = _auth.best_challenge(resp.headers.get_all(hname))
        except SipParseError:
            return False
        # One retry per challenge; a second try only when the server says the nonce was stale.
        if self._auth_tries >= 1 and not ch.stale:
            return False
        if self._auth_tries >= 3:
            return False
        self._auth_tries += 1
        old = self._invite
        h = old.headers.copy()
        h.remove("Via")
        h.remove("Authorization")
        h.remove("Proxy-Authorization")
        h.set("CSeq", f"{old.cseq.seq + 1} INVITE")
        user, pw = self._auth
        try:
            value = _auth.authorization(
                ch, method="INVITE", uri=old.uri, username=user, password=pw
            )
        except SipParseError:
            return False
        h.add("Authorization" if resp.status == 401 else "Proxy-Authorization", value)
        new = SipRequest("INVITE", old.uri, h, old.body)
        self._invite = self._ep._send_invite_tx(self, new, self._addr)
        return True

    def _on_2xx(self, resp: SipResponse) -> None:
        ep = self._ep
        if resp.cseq.seq != self._invite.cseq.seq:
            return
        to_tag = resp.to.tag
        if self.dialog is not None:
            if to_tag == self.dialog.remote_tag:
                # A retransmitted 2xx: our ACK was lost; send it again (§13.2.2.4).
                if self._ack is not None:
                    ep._sendto(self._ack, ep._dialog_addr(self))
                return
            # §13.2.2.4: a 2xx from another fork: ACK it, then BYE that dialog.
            other = Dialog.uac(self._invite, resp)
            ack = other.create_request("ACK", extra_headers=ep._common_headers())
            dest = ep._uri_addr(other.next_hop_uri()) or self._addr
            assert dest is not None
            ep._send_stateless(ack, dest)
            bye = other.create_request("BYE", extra_headers=ep._common_headers())
            ep._send_request(bye, dest, None, None)
            return
        self.response = resp
        try:
            self.dialog = Dialog.uac(self._invite, resp)
        except SipParseError:
            log.warning("2xx without To tag on %s", self.call_id)
            return
        ack = self.dialog.create_request("ACK", extra_headers=ep._common_headers())
        self._ack = ep._send_stateless(ack, ep._dialog_addr(self))
        # §13.2.1 / RFC 3264: the answer in a 183 (early media) stays the answer when the 2xx
        # repeats it or carries no body, which is what most gateways do.
        self.remote_sdp = resp.body or self.remote_sdp
        if self.state == CallState.ENDED:
            # We had given up (local cancel raced with the answer): hang up at once (§15).
            self._send_bye()
            return
        if self._cancel_requested:
            self._send_bye()
            self._fail_for_cancel(487, "Request Terminated")
            return
        self.state = CallState.CONFIRMED
        self._cleanup()
        self._dialog_changed()
        self._emit(Answered(resp.body or self.remote_sdp or b""))

    def _on_timeout(self, timer: str) -> None:
        if self.state == CallState.ENDED:
            return
        if self._cancel_requested:
            self._fail_for_cancel(487, "Request Terminated")
        elif timer == "transport":
            self._emit(Failed(503, "Service Unavailable (transport error)", "transport"))
        else:
            # Timer B: not even a provisional response (§17.1.1.2).
            self._emit(Failed(408, "Request Timeout (no response)", "transport"))


class IncomingCall(SipCall):
    """A call the far end placed; handed to SipEndpoint.on_incoming.

    Attributes: request (the INVITE as a message.SipRequest), from_uri, to_uri, request_uri (str),
    from_display (str|None), headers (Mapping[str, str], first value of each header, lower-case
    long names), remote_sdp = the INVITE's body (None for a late offer), source (ip, port),
    user (the digest user name an untrusted source authenticated as, else None), trusted (the
    source is in the policy's trusted networks).
    """

    def __init__(
        self,
        endpoint: SipEndpoint,
        request: SipRequest,
        tx: ServerInviteTransaction,
        addr: tuple[str, int],
        dialog: Dialog,
        user: str | None = None,
    ) -> None:
        super().__init__(endpoint, request.call_id, dialog.local_tag)
        self.request = request
        fr, to = request.from_, request.to
        self.from_uri = fr.uri
        self.from_display = fr.display_name
        self.to_uri = to.uri
        self.request_uri = request.uri
        hdrs: dict[str, str] = {}
        for n, v in request.headers:
            hdrs.setdefault(n.lower(), v)
        self.headers: Mapping[str, str] = hdrs
        self.remote_sdp = request.body or None
        self.source = addr
        self._peer = addr
        self._tx = tx
        self.dialog = dialog
        # The digest user name the caller authenticated as (None: a trusted source).
        self.user = user
        # From --sip-trusted: only then may the SDP aim our media (RtpSession.latch_only).
        self.trusted = endpoint.policy.is_trusted(addr[0])
        self._retx: _Retransmit | None = None
        self._bye_after_ack = False

    async def ringing(self, sdp: bytes | None = None) -> None:
        """Send 180 Ringing (or 183 Session Progress when `sdp` is given, for early media)."""
        if self.state not in (CallState.CALLING, CallState.RINGING):
            return
        if sdp:
            self.local_sdp = sdp
            self._respond(183, "Session Progress", body=sdp)
        else:
            self._respond(180, "Ringing")
        self.state = CallState.RINGING

    async def answer(self, sdp: bytes) -> None:
        """Send 200 OK with `sdp`; retransmit it (T1..T2) until the ACK arrives (RFC 3261
        §13.3.1.4).  Answered is emitted on ACK; no ACK within 64*T1 -> BYE + Ended("local",
        "ack timeout").  A no-op when the call already ended (e.g. the caller's CANCEL won the
        race: the Ended event is in the queue)."""
        if self.state not in (CallState.CALLING, CallState.RINGING):
            return
        self.local_sdp = sdp
        resp = self._respond(200, "OK", body=sdp)
        self.state = CallState.ANSWERED
        assert self.dialog is not None
        self.dialog.state = DialogState.CONFIRMED
        self._dialog_changed()  # from our 200 on, a crash leaves the caller a dialog to end
        self._retx = _Retransmit(self._ep, resp.to_bytes(), self.source, self._on_ack_timeout)

    async def reject(
        self,
        code: int = 486,
        reason: str | None = None,
        *,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        """Send a final non-2xx response (default 486 Busy Here) with `headers` (a 503's
        Retry-After); emits Ended(by="local", reason="rejected")."""
        if self.state not in (CallState.CALLING, CallState.RINGING):
            return
        if not 300 <= code <= 699:
            raise ValueError("reject needs a 3xx-6xx code")
        self._respond(code, reason or _REASONS.get(code, "Rejected"), extra=headers)
        self._emit(Ended("local", "rejected"))

    async def bye(self, reason: str = "bye") -> None:
        if self.state == CallState.ENDED:
            return
        if self.state in (CallState.CALLING, CallState.RINGING):
            await self.reject(480, "Temporarily Unavailable")
            return
        if self.state == CallState.ANSWERED:
            # §15: the callee must not send BYE before the ACK (or the 2xx timeout).
            self._bye_after_ack = True
        else:
            self._send_bye()
        self._emit(Ended("local", reason))

    async def cancel(self) -> None:
        if self.state in (CallState.CALLING, CallState.RINGING):
            await self.reject(487, "Request Terminated")
        else:
            await self.bye()

    def _respond(
        self,
        code: int,
        reason: str,
        body: bytes = b"",
        extra: list[tuple[str, str]] | None = None,
    ) -> SipResponse:
        ep = self._ep
        resp = ep._make_response(
            self.request,
            code,
            reason,
            to_tag=self.local_tag,
            contact=code < 300,
            body=body,
            extra=extra,
        )
        entry = ep._server_txs.get(self._tx.key)
        actions = self._tx.send_response(resp, ep._now())
        if entry is not None:
            ep._run_server(entry, actions)
        return resp

    def _on_cancel(self) -> None:
        """CANCEL matched our INVITE (§9.2): 487 the INVITE if not answered yet."""
        if self.state in (CallState.CALLING, CallState.RINGING):
            self._respond(487, "Request Terminated")
            self._emit(Ended("remote", "cancel"))

    def _on_ack(self, req: SipRequest) -> None:
        if self._retx is not None and req.cseq.seq == self.request.cseq.seq:
            self._retx.stop()
            self._retx = None
            if req.body:
                self.remote_sdp = req.body
            if self._bye_after_ack:
                self._send_bye()
                return
            if self.state == CallState.ANSWERED:
                self.state = CallState.CONFIRMED
                self.events.put_nowait(Answered(req.body))
            return
        super()._on_ack(req)

    def _on_ack_timeout(self) -> None:
        self._retx = None
        # §13.3.1.4: no ACK in 64*T1 -> the UAS should terminate the dialog with a BYE.
        if self.dialog is not None and self.dialog.state != DialogState.TERMINATED:
            self._send_bye()
        self._emit(Ended("local", "ack timeout"))


class OutgoingRefer:
    """A REFER we sent (SipCall.refer): `code` / `reason` of its final response, `cseq`, and the
    progress reports of its NOTIFYs, as an asyncio.Queue (`progress`) or by iterating the handle:

        async for p in handle:      # ends after the report with final=True
            ...
    """

    def __init__(self, call: SipCall) -> None:
        self._call = call
        self.cseq: int | None = None
        self.code = 0
        self.reason = ""
        self.progress: asyncio.Queue[ReferProgress] = asyncio.Queue()
        self.done = False  # the final report was put
        self._guard: asyncio.TimerHandle | None = None
        self._early: list[ReferProgress] = []  # NOTIFYs that overtook the final response

    @property
    def accepted(self) -> bool:
        return 200 <= self.code < 300

    def __repr__(self) -> str:
        return f"<OutgoingRefer {self.code} {self.reason!r} done={self.done}>"

    async def __aiter__(self) -> AsyncIterator[ReferProgress]:
        while True:
            if self.done and self.progress.empty():
                return
            p = await self.progress.get()
            yield p
            if p.final:
                return

    def _put(self, p: ReferProgress) -> None:
        if self.done:
            return
        self.progress.put_nowait(p)
        if p.final:
            self._finish_now()

    def _finish_now(self) -> None:
        self.done = True
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None
        if self.cseq is not None and self._call._refers_out.get(self.cseq) is self:
            del self._call._refers_out[self.cseq]

    def _finish(self, code: int, reason: str) -> None:
        """A synthetic last report (no final NOTIFY came, or the dialog ended)."""
        if self.code == 0:
            self.code, self.reason = code, reason
        self._put(ReferProgress(code, reason, True))

    def _on_final_response(self, code: int, reason: str, notify_timeout: float = 0.0) -> None:
        self.code, self.reason = code, reason
        if not 200 <= code < 300:
            self._early.clear()
            self._put(ReferProgress(code, reason, True))
            return
        for p in self._early:
            self._put(p)
        self._early.clear()
        if not self.done and notify_timeout > 0:
            self._guard = asyncio.get_running_loop().call_later(
                notify_timeout, self._finish, 408, "Request Timeout (no final NOTIFY)"
            )

    def _on_notify(self, code: int, reason: str, final: bool) -> None:
        p = ReferProgress(code, reason, final)
        if self.code == 0:
            # The NOTIFY overtook the 202: keep it until the REFER's response says the
            # subscription exists (a REFER answered 4xx has no subscription, RFC 3515 §2.4.2).
            self._early.append(p)
        else:
            self._put(p)


class IncomingRefer:
    """A REFER the far end sent (in a Referred event).  The engine answers it once with
    `accept()` (202 Accepted + NOTIFY "100 Trying") or `reject()`, then reports the outcome of
    the referred call with `notify(code, reason)`; a final code (>= 200) ends the implicit
    subscription.  All are no-ops once the dialog has ended."""

    def __init__(
        self,
        call: SipCall,
        request: SipRequest,
        entry: _TxEntry,
        tx: ServerNonInviteTransaction,
        *,
        first: bool,
    ) -> None:
        self._call = call
        self.request = request
        self._entry = entry
        self._tx = tx
        # RFC 3515 §2.4.6: NOTIFYs for any but the first REFER of a dialog carry its CSeq as id.
        self._event = "refer" if first else f"refer;id={request.cseq.seq}"
        self.state: Literal["pending", "accepted", "rejected", "terminated"] = "pending"
        self._guard: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            call._ep.refer_decision_timeout, self._undecided
        )

    def __repr__(self) -> str:
        return f"<IncomingRefer {self.request.cseq.seq} {self.state}>"

    def _respond(self, code: int, reason: str) -> None:
        ep = self._call._ep
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None
        resp = ep._make_response(
            self.request,
            code,
            reason,
            to_tag=None if self.request.to.tag else new_tag(),
            contact=200 <= code < 300,
        )
        ep._run_server(self._entry, self._tx.send_response(resp, ep._now()))

    def _undecided(self) -> None:
        self._guard = None
        if self.state == "pending":
            log.warning("REFER on %s not answered by the engine: 480", self._call.call_id)
            self.state = "rejected"
            self._respond(480, _REASONS[480])

    async def accept(self) -> None:
        """202 Accepted, then the initial NOTIFY (sipfrag "SIP/2.0 100 Trying", active)."""
        if self.state != "pending":
            return
        self.state = "accepted"
        self._respond(202, "Accepted")
        await self.notify(100, "Trying")

    async def reject(self, code: int = 603, reason: str = "Decline") -> None:
        if self.state != "pending":
            return
        if not 300 <= code <= 699:
            raise ValueError("reject needs a 3xx-6xx code")
        self.state = "rejected"
        self._respond(code, reason)

    async def notify(self, code: int, reason: str) -> None:
        """A NOTIFY whose message/sipfrag body is `SIP/2.0 code reason`; final codes (>= 200)
        send Subscription-State: terminated;reason=noresource (RFC 3515 §2.4.7)."""
        call = self._call
        if self.state != "accepted" or call.dialog is None or call.ended:
            return
        if call.dialog.state == DialogState.TERMINATED:
            return
        body = sipfrag(code, reason)
        final = code >= 200
        if final:
            self.state = "terminated"
        ep = call._ep
        req = call.dialog.create_request(
            "NOTIFY",
            body=body,
            content_type="message/sipfrag;version=2.0",
            extra_headers=[
                *ep._common_headers(),
                ("Event", self._event),
                (
                    "Subscription-State",
                    "terminated;reason=noresource" if final else "active;expires=60",
                ),
            ],
        )
        ep._send_request(req, ep._dialog_addr(call), None, None)


_REASONS = {
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    420: "Bad Extension",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    600: "Busy Everywhere",
    603: "Decline",
}


class _Retransmit:
    """Drives a dialog.Uas2xxRetransmitter with a loop timer."""

    def __init__(
        self, ep: SipEndpoint, data: bytes, addr: tuple[str, int], on_timeout: Callable[[], object]
    ) -> None:
        self._ep = ep
        self._addr = addr
        self._on_timeout = on_timeout
        self._r = Uas2xxRetransmitter(data, ep._now())
        self._handle: asyncio.TimerHandle | None = None
        ep._retransmitters.add(self)
        self._schedule()

    def _schedule(self) -> None:
        d = self._r.next_deadline
        if d is not None:
            self._handle = asyncio.get_running_loop().call_at(d, self._fire)

    def _fire(self) -> None:
        out = self._r.on_timer(self._ep._now())
        if out is None:
            self.stop()
            self._on_timeout()
            return
        for data in out:
            self._ep._sendto(data, self._addr)
        self._schedule()

    def stop(self) -> None:
        self._r.on_ack()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._ep._retransmitters.discard(self)


# --------------------------------------------------------------------------- transactions


class _TxEntry:
    __slots__ = ("addr", "handle", "on_response", "on_timeout", "tx")

    def __init__(
        self,
        tx: ClientInviteTransaction
        | ClientNonInviteTransaction
        | ServerInviteTransaction
        | ServerNonInviteTransaction,
        addr: tuple[str, int],
        on_response: Callable[[SipResponse], None] | None = None,
        on_timeout: Callable[[str], None] | None = None,
    ) -> None:
        self.tx = tx
        self.addr = addr
        self.on_response = on_response
        self.on_timeout = on_timeout
        self.handle: asyncio.TimerHandle | None = None


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, ep: SipEndpoint) -> None:
        self._ep = ep

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            self._ep._on_datagram(data, (str(addr[0]), int(addr[1])))
        except Exception:  # one bad datagram must never kill the endpoint
            log.exception("error handling a SIP datagram from %s", addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable etc. on a connected-less UDP socket: logged; transaction timers
        # handle the consequences (§18.4 would report transport errors per transaction).
        log.debug("SIP socket error: %s", exc)


# --------------------------------------------------------------------------- endpoint


class SipEndpoint:
    """A SIP user agent on UDP host:port (port 0 = ephemeral; `port` holds the bound port after
    start()).

    on_incoming: async callback receiving each new IncomingCall; if None, INVITEs get 480.
    routable: called with each admitted INVITE; False refuses it with a stateless 404.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5060,
        user_agent: str = "callplane",
        *,
        public_host: str | None = None,
        trusted: Iterable[str | IpNetwork] | None = None,
        users: Mapping[str, str] | None = None,
        realm: str = "callplane",
        max_calls: int | None = None,
        rate: float | None = None,
        burst: float = 40.0,
    ) -> None:
        """`public_host` overrides the address put in Via/Contact (defaults to `host`).

        Inbound policy for new INVITEs (sip.policy.InboundPolicy): sources in `trusted` (CIDRs,
        default 127.0.0.0/8 and ::1) are accepted; others are challenged with digest (MD5 and
        SHA-256, realm `realm`) against `users` {name: password}, or get 403 when there are
        none.  More than `max_calls` concurrent calls (incoming and outgoing) or more than
        `rate` new INVITEs a second from one source (bursts up to `burst`) -> 503 with
        Retry-After.  max_calls and rate default to no limit (`callplane serve` sets both)."""
        self.policy = InboundPolicy(
            trusted=trusted,
            users=users,
            realm=realm,
            max_calls=max_calls,
            rate=rate,
            burst=burst,
        )
        self._active = 0  # calls not ended yet, both directions (for max_calls)
        # A received REFER the engine has not accepted or rejected by then gets 480 (the
        # referrer's transaction gives up at 32 s anyway).
        self.refer_decision_timeout = 30.0
        self.host = host
        self.port = port
        self.user_agent = user_agent
        self.public_host = public_host or host
        self.on_incoming: Callable[[IncomingCall], Awaitable[None]] | None = None
        # Whether anyone takes an (admitted) INVITE; False: 404 at once, with no state kept.
        # None: every INVITE goes to on_incoming.
        self.routable: Callable[[SipRequest], bool] | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._client_txs: dict[tuple[str, ...], _TxEntry] = {}
        self._server_txs: dict[tuple[str, ...], _TxEntry] = {}
        self._calls: dict[tuple[str, str], SipCall] = {}  # (Call-ID, local tag)
        self._incoming_by_key: dict[tuple[str, str, str], IncomingCall] = {}
        self._retransmitters: set[_Retransmit] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Bind the UDP socket; afterwards `self.port` is the bound port."""
        self._loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.host, self.port), family=family
        )
        self._transport = transport
        sockname = transport.get_extra_info("sockname")
        self.port = int(sockname[1])

    async def stop(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109
        """BYE every confirmed dialog, CANCEL every pending outgoing INVITE, 480 every pending
        incoming one, wait up to `timeout` s for the responses, close the socket."""
        if self._transport is None:
            return
        for call in list(self._calls.values()):
            try:
                if isinstance(call, IncomingCall) and call.state in (
                    CallState.CALLING,
                    CallState.RINGING,
                ):
                    await call.reject(480, "Temporarily Unavailable")
                elif call.state in (CallState.CONFIRMED, CallState.ANSWERED):
                    await call.bye("stop")
                else:
                    await call.cancel()
            except Exception:
                log.exception("error hanging up %s", call)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and (  # noqa: ASYNC110 - polls several conditions
            self._pending_client_work()
            or any(c.state != CallState.ENDED for c in self._calls.values())
        ):
            await asyncio.sleep(0.02)
        for call in list(self._calls.values()):
            if isinstance(call, OutgoingCall):
                call._fail_for_cancel(487, "Request Terminated")
            else:
                call._emit(Ended("local", "stop"))
        for entry in [*self._client_txs.values(), *self._server_txs.values()]:
            if entry.handle is not None:
                entry.handle.cancel()
            if entry.on_timeout is not None and entry.tx.state != TxState.TERMINATED:
                entry.on_timeout("stop")  # wakes reinvite()/refer() waiting for a response
        for r in list(self._retransmitters):
            r.stop()
        self._client_txs.clear()
        self._server_txs.clear()
        for t in list(self._tasks):
            t.cancel()
        self._transport.close()
        self._transport = None

    def _pending_client_work(self) -> bool:
        """BYE/CANCEL transactions still waiting for their final response."""
        return any(
            isinstance(e.tx, ClientNonInviteTransaction)
            and e.tx.state in (TxState.TRYING, TxState.PROCEEDING)
            for e in self._client_txs.values()
        )

    # ---------------------------------------------------------------- outgoing calls

    def invite(
        self,
        target_uri: str,
        from_uri: str,
        sdp_offer: bytes,
        *,
        auth: tuple[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        outbound_proxy: tuple[str, int] | None = None,
        display_name: str | None = None,
    ) -> OutgoingCall:
        """Place a call: the INVITE is sent at once (after an async DNS lookup if the target host
        is not an IP literal).  `auth` = (username, password) answers a 401/407 challenge once
        (again only if the server flags the nonce stale).  `headers` are added to the INVITE
        verbatim.  `timeout` = ring timeout in seconds: when it expires before a final response
        we CANCEL and emit Failed(408, "timeout", cause="timeout") ("no answer").
        `outbound_proxy` sends the request there instead of to the URI's host.
        Raises SipParseError if target_uri / from_uri are not SIP URIs.
        """
        if self._transport is None:
            raise RuntimeError("endpoint not started")
        target = parse_uri(target_uri)
        src = parse_uri(from_uri)
        call_id = new_call_id(self.public_host.strip("[]"))
        tag = new_tag()
        h = Headers()
        h.add("Max-Forwards", "70")
        dn = f"{quote(display_name)} " if display_name else ""
        h.add("From", f"{dn}<{from_uri}>;tag={tag}")
        h.add("To", f"<{target_uri}>")
        h.add("Call-ID", call_id)
        h.add("CSeq", "1 INVITE")
        h.add("Contact", self._contact(src.user))
        for n, v in self._common_headers():
            h.add(n, v)
        for n, v in (headers or {}).items():
            h.add(n, v)
        if sdp_offer:
            h.add("Content-Type", "application/sdp")
        req = SipRequest("INVITE", target_uri, h, sdp_offer)
        call = OutgoingCall(self, req, target_uri, from_uri, auth)
        self._calls[(call.call_id, call.local_tag)] = call
        self._active += 1
        if timeout is not None:
            call._ring_timer = asyncio.get_running_loop().call_later(timeout, call._on_ring_timeout)
        if outbound_proxy is not None:
            dest_host, dest_port = outbound_proxy
        else:
            dest_host, dest_port = target.host_bare, target.default_port()
        if _is_ip(dest_host):
            call._addr = (dest_host, dest_port)
            call._invite = self._send_invite_tx(call, req, call._addr)
        else:
            task = asyncio.get_running_loop().create_task(
                self._resolve_and_send(call, req, dest_host, dest_port)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return call

    async def _resolve_and_send(
        self, call: OutgoingCall, req: SipRequest, host: str, port: int
    ) -> None:
        # RFC 3263 NAPTR/SRV is not implemented: an A/AAAA lookup of the host, default port.
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
        except OSError:
            infos = []
        if call.state == CallState.ENDED:
            return
        if not infos:
            call._emit(Failed(503, f"cannot resolve {host}", "transport"))
            return
        addr = infos[0][4]
        call._addr = (str(addr[0]), int(addr[1]))
        if call._cancel_requested:
            call._finish_cancelled()
            return
        call._invite = self._send_invite_tx(call, req, call._addr)

    def _send_invite_tx(
        self, call: OutgoingCall, req: SipRequest, addr: tuple[str, int]
    ) -> SipRequest:
        req = self._add_via(req)
        tx = ClientInviteTransaction(req)
        call._tx = tx
        entry = _TxEntry(tx, addr, call._on_response, call._on_timeout)
        self._client_txs[tx.key] = entry
        self._run_client(entry, tx.start(self._now()))
        return req

    # ---------------------------------------------------------------- helpers

    def _now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    def _hostport(self) -> str:
        h = self.public_host
        if ":" in h and not h.startswith("["):
            h = f"[{h}]"
        return f"{h}:{self.port}"

    def _contact(self, user: str | None = None) -> str:
        return f"<sip:{user or 'callplane'}@{self._hostport()}>"

    def _common_headers(self) -> list[tuple[str, str]]:
        return [("User-Agent", self.user_agent), ("Allow", ALLOW)]

    def _add_via(self, req: SipRequest) -> SipRequest:
        # §18.1.1 / RFC 3581: our Via with a fresh branch and rport so replies come back to the
        # address the request was sent from.
        req.headers.prepend("Via", f"SIP/2.0/UDP {self._hostport()};branch={new_branch()};rport")
        return req

    def _sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._transport is None:
            return
        self._transport.sendto(data, addr)

    def _send_stateless(self, req: SipRequest, addr: tuple[str, int]) -> bytes:
        """Send a request outside any transaction (ACK for 2xx, §13.2.2.4)."""
        self._add_via(req)
        data = req.to_bytes()
        self._sendto(data, addr)
        return data

    def _send_request(
        self,
        req: SipRequest,
        addr: tuple[str, int],
        on_response: Callable[[SipResponse], None] | None,
        on_timeout: Callable[[str], None] | None,
        *,
        keep_via: bool = False,
    ) -> None:
        """Send a non-INVITE request in a client transaction."""
        if not keep_via:
            self._add_via(req)
        tx = ClientNonInviteTransaction(req)
        entry = _TxEntry(tx, addr, on_response, on_timeout)
        self._client_txs[tx.key] = entry
        self._run_client(entry, tx.start(self._now()))

    async def bye_orphan(self, state: dict[str, Any]) -> SipResponse:
        """End a dialog that a previous process confirmed (`SipCall.orphan_state()`) and left
        behind when it died: send its BYE to the saved address in a non-INVITE client
        transaction (retransmitted on timer E, given up on timer F, §17.1.2) and return the
        final response, whatever it is (a synthetic 408 when none came). The far end may
        answer 481 if it already gave up on the dialog: either way the call is over.
        Raises SipParseError when `state` is not a saved dialog."""
        dialog = Dialog.from_state(state)
        try:
            host, port = state["addr"]
            addr = (str(host), int(port))
        except (KeyError, TypeError, ValueError) as exc:
            raise SipParseError(f"not a saved dialog address: {exc}") from exc
        req = dialog.create_request("BYE", extra_headers=self._common_headers())
        return await self._transact(req, addr)

    async def _transact(self, req: SipRequest, addr: tuple[str, int]) -> SipResponse:
        """Send `req` (Via added) in a client transaction and return its final response; no
        response gives a synthetic 408 (timer B/F) or 503 (transport error, endpoint stopped).
        A 2xx to INVITE is ACKed here, retransmitted 2xx again (§13.2.2.4)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[SipResponse] = loop.create_future()
        ack: list[bytes] = []

        def on_response(resp: SipResponse) -> None:
            if resp.status < 200:
                return
            if req.method == "INVITE" and 200 <= resp.status < 300:
                if ack:
                    self._sendto(ack[0], addr)
                else:
                    ack_req = self._ack_for_2xx(req, resp)
                    if ack_req is not None:
                        ack.append(self._send_stateless(ack_req, addr))
            if not fut.done():
                fut.set_result(resp)

        def on_timeout(timer: str) -> None:
            if fut.done():
                return
            if timer in ("transport", "stop"):
                fut.set_result(SipResponse(503, "Service Unavailable (transport error)"))
            else:
                fut.set_result(SipResponse(408, "Request Timeout (no response)"))

        self._add_via(req)
        tx: ClientInviteTransaction | ClientNonInviteTransaction
        if req.method == "INVITE":
            tx = ClientInviteTransaction(req)
        else:
            tx = ClientNonInviteTransaction(req)
        entry = _TxEntry(tx, addr, on_response, on_timeout)
        self._client_txs[tx.key] = entry
        self._run_client(entry, tx.start(self._now()))
        return await fut

    def _ack_for_2xx(self, invite: SipRequest, resp: SipResponse) -> SipRequest | None:
        """§13.2.2.4: the ACK of a 2xx to an in-dialog INVITE: the dialog's request with the
        INVITE's CSeq number."""
        call = self._calls.get((invite.call_id, invite.from_.tag or ""))
        if call is None or call.dialog is None:
            return None
        return call.dialog.create_request(
            "ACK", cseq=invite.cseq.seq, extra_headers=self._common_headers()
        )

    def _uri_addr(self, uri: str) -> tuple[str, int] | None:
        try:
            u = parse_uri(uri)
        except SipParseError:
            return None
        if not _is_ip(u.host_bare):
            return None
        return (u.host_bare, u.default_port())

    def _dialog_addr(self, call: SipCall) -> tuple[str, int]:
        """Where in-dialog requests go: the first Route or the remote target (§12.2.1.1).
        Hostnames are not resolved here: we fall back to where the peer was heard from."""
        assert call.dialog is not None
        addr = self._uri_addr(call.dialog.next_hop_uri())
        if addr is not None:
            return addr
        if isinstance(call, OutgoingCall) and call._addr is not None:
            return call._addr
        assert call._peer is not None
        return call._peer

    def _drop_client_tx(self, tx: ClientInviteTransaction | ClientNonInviteTransaction) -> None:
        entry = self._client_txs.pop(tx.key, None)
        if entry is not None and entry.handle is not None:
            entry.handle.cancel()

    @property
    def active_calls(self) -> int:
        """Calls of both directions that have not ended (what `max_calls` limits)."""
        return self._active

    def _forget(self, call: SipCall) -> None:
        self._active -= 1
        # Keep the call findable for a while so late retransmissions (2xx, BYE) are still
        # answered properly; then drop it.
        key = (call.call_id, call.local_tag)
        if isinstance(call, IncomingCall) and (
            call.dialog is None or call.dialog.state is not DialogState.CONFIRMED
        ):
            # Refused before any answer: its server transaction alone absorbs the INVITE's
            # retransmissions and ACK (§17.2.1) and CANCEL gets 481 now; the call itself need
            # not outlive it by 32 s (a flood of unrouted INVITEs would hold them all).
            self._calls.pop(key, None)
            self._incoming_by_key.pop(call._tx.key, None)
            return
        if self._loop is not None and self._transport is not None:
            self._loop.call_later(32.0, self._calls.pop, key, None)
            if isinstance(call, IncomingCall):
                self._loop.call_later(32.0, self._incoming_by_key.pop, call._tx.key, None)

    def _run_client(self, entry: _TxEntry, actions: list[Action]) -> None:
        tx = entry.tx
        for a in actions:
            if isinstance(a, Send):
                self._sendto(a.data, entry.addr)
            elif isinstance(a, Deliver):
                if entry.on_response is not None and isinstance(a.message, SipResponse):
                    entry.on_response(a.message)
            elif isinstance(a, Timeout):
                if entry.on_timeout is not None:
                    entry.on_timeout(a.timer)
            elif isinstance(a, Terminated) and self._client_txs.get(tx.key) is entry:
                del self._client_txs[tx.key]
        self._schedule(entry, self._on_client_timer)

    def _run_server(self, entry: _TxEntry, actions: list[Action]) -> None:
        tx = entry.tx
        for a in actions:
            if isinstance(a, Send):
                self._sendto(a.data, entry.addr)
            elif isinstance(a, Terminated):
                if self._server_txs.get(tx.key) is entry:
                    del self._server_txs[tx.key]
            elif isinstance(a, Timeout):
                # Timer H: our non-2xx final response was never ACKed; nothing more to do.
                log.debug("server transaction %s timed out (%s)", tx.key, a.timer)
        self._schedule(entry, self._on_server_timer)

    def _schedule(self, entry: _TxEntry, cb: Callable[[_TxEntry], None]) -> None:
        if entry.handle is not None:
            entry.handle.cancel()
            entry.handle = None
        d = entry.tx.next_deadline
        if d is not None and self._loop is not None:
            entry.handle = self._loop.call_at(d, cb, entry)

    def _on_client_timer(self, entry: _TxEntry) -> None:
        entry.handle = None
        self._run_client(entry, entry.tx.on_timer(self._now()))

    def _on_server_timer(self, entry: _TxEntry) -> None:
        entry.handle = None
        self._run_server(entry, entry.tx.on_timer(self._now()))

    def _add_server_tx(
        self, tx: ServerInviteTransaction | ServerNonInviteTransaction, addr: tuple[str, int]
    ) -> _TxEntry:
        entry = _TxEntry(tx, addr)
        self._server_txs[tx.key] = entry
        return entry

    def _make_response(
        self,
        req: SipRequest,
        code: int,
        reason: str,
        *,
        to_tag: str | None = None,
        contact: bool = False,
        body: bytes = b"",
        extra: list[tuple[str, str]] | None = None,
    ) -> SipResponse:
        """§8.2.6.2: copy Via (all, in order), From, Call-ID, CSeq; To with our tag (not for
        100); Record-Route for dialog-creating responses (§12.1.1)."""
        h = Headers()
        for v in req.headers.get_all("Via"):
            h.add("Via", v)
        h.add("From", req.headers.get("From") or "")
        to = req.headers.get("To") or ""
        if to_tag and code > 100 and ";tag=" not in to.replace(" ", "").lower():
            to = f"{to};tag={to_tag}"
        h.add("To", to)
        h.add("Call-ID", req.headers.get("Call-ID") or "")
        h.add("CSeq", req.headers.get("CSeq") or "")
        if req.method == "INVITE" and 100 < code < 300:
            for rr in req.headers.get_all("Record-Route"):
                h.add("Record-Route", rr)
        if contact:
            h.add("Contact", self._contact())
        h.add("User-Agent", self.user_agent)
        if code < 300 or code == 405:
            h.add("Allow", ALLOW)
        for n, v in extra or []:
            h.add(n, v)
        if body:
            h.add("Content-Type", "application/sdp")
        return SipResponse(code, reason, h, body)

    def _respond_stateless(
        self, req: SipRequest, addr: tuple[str, int], code: int, reason: str
    ) -> None:
        self._sendto(self._make_response(req, code, reason, to_tag=new_tag()).to_bytes(), addr)

    def _respond_new_tx(
        self,
        req: SipRequest,
        addr: tuple[str, int],
        code: int,
        reason: str,
        *,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        """Answer a non-INVITE request in a server transaction (it absorbs retransmissions)."""
        tx = ServerNonInviteTransaction(req)
        entry = self._add_server_tx(tx, addr)
        to_tag = None if req.to.tag else new_tag()
        resp = self._make_response(req, code, reason, to_tag=to_tag, extra=extra)
        self._run_server(entry, tx.send_response(resp, self._now()))

    # ---------------------------------------------------------------- receiving

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.strip(b"\r\n"):
            return  # RFC 5626 keep-alive CRLF
        try:
            msg = parse_message(data)
        except SipParseError as e:
            log.debug("malformed datagram from %s: %s", addr, e)
            self._bad_request(data, addr, str(e))
            return
        if isinstance(msg, SipResponse):
            self._on_response(msg)
            return
        self._fix_via(msg, addr)
        try:
            self._on_request(msg, addr)
        except SipParseError as e:
            # A header parsed lazily (Contact, Refer-To, ...) was malformed.  The handlers
            # parse before they keep state, so a 400 is all that is left to do.
            log.debug("malformed %s from %s: %s", msg.method, addr, e)
            self._bad_request(msg, addr, str(e))

    def _bad_request(self, data: bytes | SipRequest, addr: tuple[str, int], why: str) -> None:
        """§8.2 / §16.3: answer a malformed request with a stateless 400 when there is something
        to answer: a request line and the Via, From, To, Call-ID and CSeq header lines (copied
        as they are, so a From with a bad tag still gets its 400).  Nothing is kept: its
        retransmission is answered the same way."""
        try:
            req = data if isinstance(data, SipRequest) else parse_message(data, strict=False)
        except SipParseError:
            return
        if not isinstance(req, SipRequest) or req.method == "ACK":
            return
        if any(req.headers.get(n) is None for n in ("Via", "From", "To", "Call-ID", "CSeq")):
            return
        reason = "Bad Request (" + "".join(c for c in why[:60] if c.isprintable()) + ")"
        resp = self._make_response(req, 400, reason)
        to = req.headers.get("To") or ""
        if ";tag=" not in to.replace(" ", "").lower():
            resp.headers.set("To", f"{to};tag={new_tag()}")
        self._sendto(resp.to_bytes(), addr)

    def _fix_via(self, req: SipRequest, addr: tuple[str, int]) -> None:
        # §18.2.1 + RFC 3581: note where the request really came from in the top Via.
        raw = req.headers.get("Via") or ""
        vias = parse_via(raw)
        top = vias[0]
        changed = False
        if top.host.strip("[]") != addr[0]:
            top.params["received"] = addr[0]
            changed = True
        if "rport" in top.params and top.params["rport"] is None:
            top.params["rport"] = str(addr[1])
            changed = True
        if changed:
            new = ", ".join(str(v) for v in vias)
            items = list(req.headers)
            idx = next(i for i, (n, _) in enumerate(items) if n == "Via")
            items[idx] = ("Via", new)
            req.headers = Headers(items)

    def _on_response(self, resp: SipResponse) -> None:
        entry = self._client_txs.get(client_key(resp))
        if entry is not None:
            self._run_client(entry, entry.tx.on_response(resp, self._now()))  # type: ignore[union-attr]
            return
        # No transaction: a 2xx retransmission after the INVITE transaction ended (§13.2.2.4).
        if 200 <= resp.status < 300 and resp.cseq.method == "INVITE":
            call = self._calls.get((resp.call_id, resp.from_.tag or ""))
            if isinstance(call, OutgoingCall):
                call._on_2xx(resp)

    def _on_request(self, req: SipRequest, addr: tuple[str, int]) -> None:
        key = server_key(req)
        if req.method == "CANCEL":
            self._on_cancel(req, addr, key)
            return
        entry = self._server_txs.get(key)
        if entry is not None:
            # A retransmission, or the ACK of a non-2xx final response (§17.2.1).
            tx = entry.tx
            actions = tx.on_request(req, self._now())  # type: ignore[union-attr]
            self._run_server(entry, actions)
            if req.method != "ACK" or not any(isinstance(a, Deliver) for a in actions):
                return
        to_tag = req.to.tag
        if to_tag:
            call = self._calls.get((req.call_id, to_tag))
            if call is not None and call.dialog is not None:
                call._on_in_dialog_request(req, addr)
            elif req.method != "ACK":
                # §12.2.2: an in-dialog request for a dialog we do not know.
                self._respond_stateless(req, addr, 481, _REASONS[481])
            return
        if req.method == "ACK":
            return
        mf = req.headers.get("Max-Forwards")
        if mf is not None and mf.strip() == "0":
            self._respond_stateless(req, addr, 483, _REASONS[483])
            return
        if req.method == "INVITE":
            self._on_new_invite(req, addr)
        elif req.method == "OPTIONS":
            self._respond_new_tx(
                req,
                addr,
                200,
                "OK",
                extra=[("Accept", "application/sdp"), ("Supported", "")],
            )
        elif req.method == "BYE":
            self._respond_new_tx(req, addr, 481, _REASONS[481])
        elif req.method == "REFER":
            # We accept REFER only inside a call (RFC 3515 §2.4.2 lets us refuse it outside).
            self._respond_new_tx(req, addr, 403, "Forbidden (REFER outside a dialog)")
        else:
            self._respond_new_tx(req, addr, 405, _REASONS[405])

    def _on_cancel(self, req: SipRequest, addr: tuple[str, int], key: tuple[str, str, str]) -> None:
        entry = self._server_txs.get(key)
        if entry is not None:
            self._run_server(entry, entry.tx.on_request(req, self._now()))  # type: ignore[union-attr]
            return
        # §9.2: CANCEL matches the INVITE server transaction with the same branch and sent-by.
        call = self._incoming_by_key.get((key[0], key[1], "INVITE"))
        if call is None:
            self._respond_new_tx(req, addr, 481, _REASONS[481])
            return
        self._respond_new_tx(req, addr, 200, "OK")
        call._on_cancel()

    def _on_new_invite(self, req: SipRequest, addr: tuple[str, int]) -> None:
        # Everything that can refuse the INVITE runs before any state exists, and refusals are
        # stateless (a retransmission is simply refused again): a flood of bad, unauthenticated
        # or excess INVITEs leaves nothing behind.
        dialog = Dialog.uas(req, new_tag(), self._contact())  # SipParseError -> 400
        # The engine calling one of its own routes sends INVITEs to itself: not a flood.
        own = addr == (self.host, self.port)
        adm = self.policy.check_invite(
            req, addr[0], self._now(), self._active, rate_limited=not own
        )
        if not adm.accepted:
            resp = self._make_response(
                req, adm.code, adm.reason, to_tag=dialog.local_tag, extra=adm.headers
            )
            self._sendto(resp.to_bytes(), addr)
            return
        if self.routable is not None and not self.routable(req):
            # Nobody here takes this call: refused like the policy's refusals, statelessly, so a
            # flood of INVITEs to unknown users leaves nothing behind either.
            resp = self._make_response(req, 404, _REASONS[404], to_tag=dialog.local_tag)
            self._sendto(resp.to_bytes(), addr)
            return
        tx = ServerInviteTransaction(req)
        entry = self._add_server_tx(tx, addr)
        # §8.2.2.3: we support no extensions; refuse requests that require one.
        required = [r for r in req.headers.get_list("Require") if r]
        if required:
            resp = self._make_response(
                req,
                420,
                _REASONS[420],
                to_tag=new_tag(),
                extra=[("Unsupported", ", ".join(required))],
            )
            self._run_server(entry, tx.send_response(resp, self._now()))
            return
        if self.on_incoming is None:
            resp = self._make_response(req, 480, _REASONS[480], to_tag=new_tag())
            self._run_server(entry, tx.send_response(resp, self._now()))
            return
        # §17.2.1: send 100 Trying at once so the UAC stops retransmitting.
        self._run_server(
            entry, tx.send_response(self._make_response(req, 100, "Trying"), self._now())
        )
        call = IncomingCall(self, req, tx, addr, dialog, adm.user)
        self._calls[(call.call_id, call.local_tag)] = call
        self._active += 1
        ikey = tx.key
        self._incoming_by_key[ikey] = call
        assert self._loop is not None
        task = self._loop.create_task(self._dispatch_incoming(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch_incoming(self, call: IncomingCall) -> None:
        assert self.on_incoming is not None
        try:
            await self.on_incoming(call)
        except Exception:
            log.exception("on_incoming failed for %s", call.call_id)
            if call.state in (CallState.CALLING, CallState.RINGING):
                await call.reject(500, "Server Internal Error")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
