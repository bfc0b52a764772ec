"""RFC 3261 §17 transactions over an unreliable transport (UDP), sans-IO.

Each transaction is a state machine fed messages and `now` (seconds, any monotonic clock).  Every
method returns a list of actions for the caller to carry out, and `next_deadline` says when
`on_timer(now)` must be called next (None = no timer running).

Differences from the letter of RFC 3261, on purpose:
* RFC 6026 is applied: a client INVITE transaction receiving a 2xx goes to "Accepted" (timer M =
  64*T1) and passes retransmitted 2xx to the TU (which re-sends its ACK), instead of terminating
  and losing them; a server INVITE transaction sending a 2xx goes to "Accepted" (timer L) and
  absorbs INVITE retransmissions.  2xx retransmission itself is the UAS core's job (§13.3.1.4,
  see dialog.Uas2xxRetransmitter).
* Only RFC 3261 branches (magic cookie) are matched; RFC 2543 matching (§17.2.3 fallback) is not
  implemented: all peers we target are RFC 3261 compliant.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .message import Headers, SipRequest, SipResponse

__all__ = [
    "T1",
    "T2",
    "T4",
    "Action",
    "ClientInviteTransaction",
    "ClientNonInviteTransaction",
    "Deliver",
    "Send",
    "ServerInviteTransaction",
    "ServerNonInviteTransaction",
    "Terminated",
    "Timeout",
    "TxState",
    "build_cancel",
    "build_non2xx_ack",
    "client_key",
    "server_key",
]

T1 = 0.5  # RTT estimate (§17.1.1.1)
T2 = 4.0  # maximum retransmit interval for non-INVITE requests and INVITE responses
T4 = 5.0  # maximum duration a message remains in the network


@dataclass(frozen=True, slots=True)
class Send:
    """Send `data` (a serialised message) to the transaction's peer."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Deliver:
    """Pass `message` to the transaction user (a response for client, request for server)."""

    message: SipRequest | SipResponse


@dataclass(frozen=True, slots=True)
class Timeout:
    """Timer B, F or H fired: the peer did not answer (client) or did not ACK (server)."""

    timer: str


@dataclass(frozen=True, slots=True)
class Terminated:
    """The transaction is over; the caller should forget it."""


Action = Send | Deliver | Timeout | Terminated


class TxState(enum.StrEnum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


def client_key(msg: SipRequest | SipResponse) -> tuple[str, str]:
    """§17.1.3: a response matches a client transaction by top-Via branch and CSeq method."""
    return (msg.top_via.branch or "", msg.cseq.method)


def server_key(req: SipRequest) -> tuple[str, str, str]:
    """§17.2.3: branch + sent-by + method, where ACK matches the INVITE's transaction.

    CANCEL keeps its own method, so it gets its own transaction even though it shares the
    INVITE's branch; use `server_key(cancel)` with method replaced by INVITE to find the INVITE.
    """
    via = req.top_via
    method = "INVITE" if req.method == "ACK" else req.method
    return (via.branch or "", via.sent_by.lower(), method)


class _Timers:
    """Named absolute deadlines."""

    def __init__(self) -> None:
        self.deadlines: dict[str, float] = {}

    def set(self, name: str, at: float) -> None:
        self.deadlines[name] = at

    def cancel(self, *names: str) -> None:
        for n in names:
            self.deadlines.pop(n, None)

    def due(self, now: float) -> list[str]:
        names = sorted(
            (n for n, t in self.deadlines.items() if t <= now), key=lambda n: self.deadlines[n]
        )
        return names

    @property
    def next(self) -> float | None:
        return min(self.deadlines.values()) if self.deadlines else None


class _Transaction:
    def __init__(self, t1: float, t2: float, t4: float) -> None:
        self.t1, self.t2, self.t4 = t1, t2, t4
        self.state = TxState.TRYING
        self._timers = _Timers()

    @property
    def next_deadline(self) -> float | None:
        return None if self.state == TxState.TERMINATED else self._timers.next

    def _terminate(self) -> list[Action]:
        self.state = TxState.TERMINATED
        self._timers.deadlines.clear()
        return [Terminated()]

    def on_timer(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for name in self._timers.due(now):
            if self.state == TxState.TERMINATED:
                break
            if name not in self._timers.deadlines:  # cancelled by an earlier timer this round
                continue
            del self._timers.deadlines[name]
            actions.extend(self._fire(name, now))
        return actions

    def _fire(self, name: str, now: float) -> list[Action]:
        raise NotImplementedError


# --------------------------------------------------------------------------- client side


def build_non2xx_ack(request: SipRequest, response: SipResponse) -> SipRequest:
    """§17.1.1.3: the ACK a client INVITE transaction sends for a 300-699 response.

    Same Request-URI, Call-ID, From, CSeq number and single top Via as the INVITE; To from the
    response (it carries the tag); Route headers of the INVITE.
    """
    h = Headers()
    h.add("Via", request.headers.get("Via") or "")
    for r in request.headers.get_all("Route"):
        h.add("Route", r)
    h.add("Max-Forwards", "70")
    h.add("From", request.headers.get("From") or "")
    h.add("To", response.headers.get("To") or "")
    h.add("Call-ID", request.headers.get("Call-ID") or "")
    h.add("CSeq", f"{request.cseq.seq} ACK")
    return SipRequest("ACK", request.uri, h)


def build_cancel(request: SipRequest) -> SipRequest:
    """§9.1: CANCEL for a pending INVITE: same Request-URI, Call-ID, To, From, CSeq number,
    the INVITE's top Via only (so it shares the branch), and its Route headers."""
    h = Headers()
    h.add("Via", request.headers.get("Via") or "")
    for r in request.headers.get_all("Route"):
        h.add("Route", r)
    h.add("Max-Forwards", "70")
    h.add("From", request.headers.get("From") or "")
    h.add("To", request.headers.get("To") or "")
    h.add("Call-ID", request.headers.get("Call-ID") or "")
    h.add("CSeq", f"{request.cseq.seq} CANCEL")
    return SipRequest("CANCEL", request.uri, h)


class ClientInviteTransaction(_Transaction):
    """§17.1.1 (figure 5) with the RFC 6026 Accepted state."""

    def __init__(
        self, request: SipRequest, *, t1: float = T1, t2: float = T2, t4: float = T4
    ) -> None:
        super().__init__(t1, t2, t4)
        self.request = request
        self.key = client_key(request)
        self.state = TxState.CALLING
        self._data = request.to_bytes()
        self._interval = t1
        self.ack: SipRequest | None = None
        self._ack_data = b""

    def start(self, now: float) -> list[Action]:
        # Timer A (retransmit, doubling, §17.1.1.2) and timer B (64*T1 overall timeout).
        self._timers.set("A", now + self._interval)
        self._timers.set("B", now + 64 * self.t1)
        return [Send(self._data)]

    def on_response(self, resp: SipResponse, now: float) -> list[Action]:
        code = resp.status
        st = self.state
        if st in (TxState.CALLING, TxState.PROCEEDING):
            if code < 200:
                self.state = TxState.PROCEEDING
                self._timers.cancel("A")
                return [Deliver(resp)]
            if code < 300:
                # RFC 6026 §8.4: Accepted, timer M; the TU (dialog) ACKs 2xx itself.
                self.state = TxState.ACCEPTED
                self._timers.cancel("A", "B")
                self._timers.set("M", now + 64 * self.t1)
                return [Deliver(resp)]
            self.state = TxState.COMPLETED
            self._timers.cancel("A", "B")
            self._timers.set("D", now + 32.0)  # Timer D: at least 32 s for unreliable transport
            self.ack = build_non2xx_ack(self.request, resp)
            self._ack_data = self.ack.to_bytes()
            return [Send(self._ack_data), Deliver(resp)]
        if st == TxState.COMPLETED and code >= 300:
            return [Send(self._ack_data)]  # retransmitted final response: ACK again, absorb
        if st == TxState.ACCEPTED and 200 <= code < 300:
            return [Deliver(resp)]  # 2xx retransmission: TU re-sends its ACK
        return []

    def on_transport_error(self) -> list[Action]:
        # §17.1.1.2: a transport error informs the TU and terminates the transaction.
        if self.state == TxState.TERMINATED:
            return []
        return [Timeout("transport"), *self._terminate()]

    def _fire(self, name: str, now: float) -> list[Action]:
        if name == "A" and self.state == TxState.CALLING:
            self._interval *= 2  # INVITE retransmissions are not capped by T2 (§17.1.1.2)
            self._timers.set("A", now + self._interval)
            return [Send(self._data)]
        if name == "B" and self.state == TxState.CALLING:
            return [Timeout("B"), *self._terminate()]
        if name == "B" and self.state == TxState.PROCEEDING:
            # Timer B only guards the Calling state; in Proceeding the TU's own timer (the ring
            # timeout / CANCEL) governs.  Cancelled on entering Proceeding anyway.
            return []
        if name in ("D", "M"):
            return self._terminate()
        return []


class ClientNonInviteTransaction(_Transaction):
    """§17.1.2 (figure 6)."""

    def __init__(
        self, request: SipRequest, *, t1: float = T1, t2: float = T2, t4: float = T4
    ) -> None:
        super().__init__(t1, t2, t4)
        self.request = request
        self.key = client_key(request)
        self.state = TxState.TRYING
        self._data = request.to_bytes()
        self._interval = t1

    def start(self, now: float) -> list[Action]:
        self._timers.set("E", now + self._interval)
        self._timers.set("F", now + 64 * self.t1)
        return [Send(self._data)]

    def on_response(self, resp: SipResponse, now: float) -> list[Action]:
        if self.state in (TxState.TRYING, TxState.PROCEEDING):
            if resp.status < 200:
                self.state = TxState.PROCEEDING
                return [Deliver(resp)]
            self.state = TxState.COMPLETED
            self._timers.cancel("E", "F")
            self._timers.set("K", now + self.t4)  # Timer K = T4 for unreliable transports
            return [Deliver(resp)]
        return []  # Completed: retransmissions are absorbed

    def on_transport_error(self) -> list[Action]:
        if self.state == TxState.TERMINATED:
            return []
        return [Timeout("transport"), *self._terminate()]

    def _fire(self, name: str, now: float) -> list[Action]:
        if name == "E" and self.state in (TxState.TRYING, TxState.PROCEEDING):
            # Trying: doubling up to T2; Proceeding: every T2 (§17.1.2.2).
            if self.state == TxState.TRYING:
                self._interval = min(2 * self._interval, self.t2)
            else:
                self._interval = self.t2
            self._timers.set("E", now + self._interval)
            return [Send(self._data)]
        if name == "F" and self.state in (TxState.TRYING, TxState.PROCEEDING):
            return [Timeout("F"), *self._terminate()]
        if name == "K":
            return self._terminate()
        return []


# --------------------------------------------------------------------------- server side


class ServerInviteTransaction(_Transaction):
    """§17.2.1 (figure 7) with the RFC 6026 Accepted state.

    Created on receipt of an INVITE; the TU sends responses with `send_response`.
    """

    def __init__(
        self, request: SipRequest, *, t1: float = T1, t2: float = T2, t4: float = T4
    ) -> None:
        super().__init__(t1, t2, t4)
        self.request = request
        self.key = server_key(request)
        self.state = TxState.PROCEEDING
        self.last_response: SipResponse | None = None
        self._last_data: bytes | None = None
        self._interval = t1

    def send_response(self, resp: SipResponse, now: float) -> list[Action]:
        code = resp.status
        if self.state != TxState.PROCEEDING:
            return []  # a final response was already sent; the TU must not send another
        self.last_response = resp
        self._last_data = resp.to_bytes()
        if code < 200:
            return [Send(self._last_data)]
        if code < 300:
            # RFC 6026 §8.5-8.7: Accepted; timer L absorbs INVITE retransmissions. The TU (dialog)
            # retransmits the 2xx itself until the ACK arrives.
            self.state = TxState.ACCEPTED
            self._timers.set("L", now + 64 * self.t1)
            return [Send(self._last_data)]
        self.state = TxState.COMPLETED
        self._timers.set("G", now + self._interval)  # Timer G: retransmit (UDP only)
        self._timers.set("H", now + 64 * self.t1)  # Timer H: give up waiting for the ACK
        return [Send(self._last_data)]

    def on_request(self, req: SipRequest, now: float) -> list[Action]:
        if req.method == "INVITE":
            # A retransmitted INVITE: repeat the last provisional / final response (§17.2.1).
            if self.state in (TxState.PROCEEDING, TxState.COMPLETED) and self._last_data:
                return [Send(self._last_data)]
            return []
        if req.method == "ACK":
            if self.state == TxState.COMPLETED:
                self.state = TxState.CONFIRMED
                self._timers.cancel("G", "H")
                self._timers.set("I", now + self.t4)  # Timer I = T4 absorbs ACK retransmissions
                return []
            if self.state == TxState.ACCEPTED:
                return [Deliver(req)]  # RFC 6026 §8.7: pass ACK matching the txn to the TU
        return []

    def _fire(self, name: str, now: float) -> list[Action]:
        if name == "G" and self.state == TxState.COMPLETED and self._last_data:
            self._interval = min(2 * self._interval, self.t2)
            self._timers.set("G", now + self._interval)
            return [Send(self._last_data)]
        if name == "H" and self.state == TxState.COMPLETED:
            return [Timeout("H"), *self._terminate()]
        if name in ("I", "L"):
            return self._terminate()
        return []


class ServerNonInviteTransaction(_Transaction):
    """§17.2.2 (figure 8)."""

    def __init__(
        self, request: SipRequest, *, t1: float = T1, t2: float = T2, t4: float = T4
    ) -> None:
        super().__init__(t1, t2, t4)
        self.request = request
        self.key = server_key(request)
        self.state = TxState.TRYING
        self._last_data: bytes | None = None

    def send_response(self, resp: SipResponse, now: float) -> list[Action]:
        if self.state not in (TxState.TRYING, TxState.PROCEEDING):
            return []
        self._last_data = resp.to_bytes()
        if resp.status < 200:
            self.state = TxState.PROCEEDING
            return [Send(self._last_data)]
        self.state = TxState.COMPLETED
        self._timers.set("J", now + 64 * self.t1)  # Timer J: absorb request retransmissions
        return [Send(self._last_data)]

    def on_request(self, req: SipRequest, now: float) -> list[Action]:
        # Trying: absorb; Proceeding/Completed: repeat the last response (§17.2.2).
        if self.state in (TxState.PROCEEDING, TxState.COMPLETED) and self._last_data:
            return [Send(self._last_data)]
        return []

    def _fire(self, name: str, now: float) -> list[Action]:
        if name == "J":
            return self._terminate()
        return []
