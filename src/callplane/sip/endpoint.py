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
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from . import auth as _auth
from .dialog import (
    Dialog,
    DialogState,
    Uas2xxRetransmitter,
    new_branch,
    new_call_id,
    new_tag,
)
from .message import (
    Headers,
    SipParseError,
    SipRequest,
    SipResponse,
    parse_message,
    parse_uri,
    parse_via,
    quote,
)
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

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, NOTIFY"

__all__ = [
    "Answered",
    "CallState",
    "Ended",
    "Failed",
    "IncomingCall",
    "OutgoingCall",
    "Reinvited",
    "Ringing",
    "SipCall",
    "SipCallEvent",
    "SipEndpoint",
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
    """The far end sent a re-INVITE (hold/resume, media change) that we answered automatically
    with our current SDP; `sdp` is its new offer (also in `call.remote_sdp`)."""

    sdp: bytes


SipCallEvent = Trying | Ringing | Answered | Failed | Ended | Reinvited


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
            self._on_reinvite(req, addr)
        elif req.method in ("OPTIONS", "INFO", "NOTIFY"):
            ep._respond_new_tx(req, addr, 200, "OK", extra=[("Allow", ALLOW)])
        else:
            ep._respond_new_tx(req, addr, 405, "Method Not Allowed", extra=[("Allow", ALLOW)])

    def _on_reinvite(self, req: SipRequest, addr: tuple[str, int]) -> None:
        # §14.2: answer a re-INVITE with our current session description.  We never have our own
        # re-INVITE outstanding, so the 491 glare case cannot arise.
        ep = self._ep
        assert self.dialog is not None
        tx = ServerInviteTransaction(req)
        entry = ep._add_server_tx(tx, addr)
        if req.body:
            self.remote_sdp = req.body
        body = self.local_sdp or b""
        resp = ep._make_response(req, 200, "OK", to_tag=self.local_tag, contact=True, body=body)
        ep._run_server(entry, tx.send_response(resp, ep._now()))
        self._pending_2xx[req.cseq.seq] = _Retransmit(
            ep, resp.to_bytes(), addr, lambda: self._pending_2xx.pop(req.cseq.seq, None)
        )
        if req.body:
            self._emit(Reinvited(req.body))

    def _on_ack(self, req: SipRequest) -> None:
        seq = req.cseq.seq
        r = self._pending_2xx.pop(seq, None)
        if r is not None:
            r.stop()
            if req.body:
                self.remote_sdp = req.body


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
        value = resp.headers.get(hname)
        if value is None:
            return False
        try:
            ch = _auth.parse_challenge(value)
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
        self.remote_sdp = resp.body or None
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
        self._emit(Answered(resp.body))

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
    long names), remote_sdp = the INVITE's body (None for a late offer), source (ip, port).
    """

    def __init__(
        self,
        endpoint: SipEndpoint,
        request: SipRequest,
        tx: ServerInviteTransaction,
        addr: tuple[str, int],
    ) -> None:
        super().__init__(endpoint, request.call_id, new_tag())
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
        self.dialog = Dialog.uas(request, self.local_tag, endpoint._contact())
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
        self._retx = _Retransmit(self._ep, resp.to_bytes(), self.source, self._on_ack_timeout)

    async def reject(self, code: int = 486, reason: str | None = None) -> None:
        """Send a final non-2xx response (default 486 Busy Here); emits Ended(by="local",
        reason="rejected")."""
        if self.state not in (CallState.CALLING, CallState.RINGING):
            return
        if not 300 <= code <= 699:
            raise ValueError("reject needs a 3xx-6xx code")
        self._respond(code, reason or _REASONS.get(code, "Rejected"))
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

    def _respond(self, code: int, reason: str, body: bytes = b"") -> SipResponse:
        ep = self._ep
        resp = ep._make_response(
            self.request,
            code,
            reason,
            to_tag=self.local_tag,
            contact=code < 300,
            body=body,
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
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5060,
        user_agent: str = "callplane",
        *,
        public_host: str | None = None,
    ) -> None:
        """`public_host` overrides the address put in Via/Contact (defaults to `host`)."""
        self.host = host
        self.port = port
        self.user_agent = user_agent
        self.public_host = public_host or host
        self.on_incoming: Callable[[IncomingCall], Awaitable[None]] | None = None
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

    def _forget(self, call: SipCall) -> None:
        # Keep the call findable for a while so late retransmissions (2xx, BYE) are still
        # answered properly; then drop it.
        key = (call.call_id, call.local_tag)
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
        else:
            self._fix_via(msg, addr)
            self._on_request(msg, addr)

    def _bad_request(self, data: bytes, addr: tuple[str, int], why: str) -> None:
        """§8.2 / §16.3: answer a malformed request with 400 when its headers allow a response
        at all (Via, From, To, Call-ID and CSeq must be readable); otherwise drop it."""
        try:
            req = parse_message(data, strict=False)
            if not isinstance(req, SipRequest) or req.method == "ACK":
                return
            _ = (req.top_via, req.from_, req.to, req.call_id, req.cseq)
        except SipParseError:
            return
        reason = "Bad Request (" + "".join(c for c in why[:60] if c.isprintable()) + ")"
        self._respond_stateless(req, addr, 400, reason)

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
        call = IncomingCall(self, req, tx, addr)
        self._calls[(call.call_id, call.local_tag)] = call
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
