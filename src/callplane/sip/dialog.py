"""Dialogs (RFC 3261 §12) and the UA-core pieces that live beside them (sans-IO).

* `Dialog.uac(invite, response)` / `Dialog.uas(invite, local_tag, local_contact)` create dialog
  state from the request and the (provisional or 2xx) response that carries a To tag.
* `Dialog.create_request(method)` builds in-dialog requests per §12.2.1.1 (route set, remote
  target, CSeq); ACK for a 2xx reuses the INVITE's CSeq number (§13.2.2.4).
* `Dialog.check_remote_request(req)` applies §12.2.2 CSeq ordering and target refresh.
* `Uas2xxRetransmitter` is the UAS core's 2xx retransmission until ACK (§13.3.1.4).
* Helpers to parse REFER (Refer-To) and NOTIFY sipfrag bodies, for call transfer later.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field
from typing import Any

from .message import (
    MAGIC_COOKIE,
    Headers,
    NameAddr,
    SipParseError,
    SipRequest,
    SipResponse,
    parse_name_addr,
    parse_params,
    parse_uri,
)
from .transaction import T1, T2

__all__ = [
    "Dialog",
    "DialogState",
    "Uas2xxRetransmitter",
    "glare_retry_delay",
    "new_branch",
    "new_call_id",
    "new_tag",
    "parse_refer_to",
    "parse_sipfrag",
    "parse_sipfrag_status",
    "parse_subscription_state",
    "sipfrag",
]


def new_tag() -> str:
    """A globally unique tag with >= 32 bits of randomness (§19.3)."""
    return secrets.token_hex(6)


def new_branch() -> str:
    """A branch unique in space and time starting with the magic cookie (§8.1.1.7)."""
    return MAGIC_COOKIE + secrets.token_hex(10)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(12)}@{host}"


class DialogState(enum.StrEnum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(slots=True)
class Dialog:
    """Dialog state (§12): ID = Call-ID + local tag + remote tag."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str  # the From (UAC) / To (UAS) header value without tag
    remote_uri: str
    remote_target: str  # URI from the peer's Contact
    local_contact: str  # our Contact header value
    route_set: list[str] = field(default_factory=list)  # name-addr strings, in sending order
    local_seq: int = 0
    remote_seq: int | None = None
    state: DialogState = DialogState.EARLY
    is_uac: bool = True
    invite_seq: int = 0  # CSeq of the INVITE that created / last refreshed the dialog
    secure: bool = False

    @property
    def id(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def uac(cls, invite: SipRequest, response: SipResponse) -> Dialog:
        """§12.1.2: UAC side, from the INVITE we sent and a 101-299 response with a To tag."""
        to = response.to
        if not to.tag:
            raise SipParseError("response without To tag cannot create a dialog")
        contacts = response.contacts
        # §12.1.2: route set = Record-Route of the response in reverse order.
        routes = [v for v in response.headers.get_list("Record-Route")]
        routes.reverse()
        fr = invite.from_
        state = DialogState.CONFIRMED if 200 <= response.status < 300 else DialogState.EARLY
        return cls(
            call_id=invite.call_id,
            local_tag=fr.tag or "",
            remote_tag=to.tag,
            local_uri=str(NameAddr(fr.uri, fr.display_name)),
            remote_uri=str(NameAddr(to.uri, to.display_name)),
            remote_target=contacts[0].uri if contacts else invite.uri,
            local_contact=invite.headers.get("Contact") or "",
            route_set=routes,
            local_seq=invite.cseq.seq,
            remote_seq=None,
            state=state,
            is_uac=True,
            invite_seq=invite.cseq.seq,
            secure=invite.uri.lower().startswith("sips:"),
        )

    @classmethod
    def uas(cls, invite: SipRequest, local_tag: str, local_contact: str) -> Dialog:
        """§12.1.1: UAS side, from the received INVITE and the To tag we put in responses.
        Raises SipParseError when a header the dialog needs (Contact, From, To, Record-Route)
        does not parse, so a caller can refuse the INVITE before keeping any state."""
        contacts = invite.contacts
        fr = invite.from_
        to = invite.to
        # The engine reads the caller and callee from these URIs; in-dialog requests carry them.
        parse_uri(fr.uri)
        parse_uri(to.uri)
        if contacts:
            contacts[0].sip_uri  # noqa: B018 - in-dialog requests are sent to it
        for rr in invite.headers.get_list("Record-Route"):
            parse_name_addr(rr).sip_uri  # noqa: B018 - the route set must be usable
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=fr.tag or "",
            local_uri=str(NameAddr(to.uri, to.display_name)),
            remote_uri=str(NameAddr(fr.uri, fr.display_name)),
            remote_target=contacts[0].uri if contacts else fr.uri,
            local_contact=local_contact,
            # §12.1.1: route set = Record-Route of the request, in order.
            route_set=list(invite.headers.get_list("Record-Route")),
            local_seq=0,
            remote_seq=invite.cseq.seq,
            state=DialogState.EARLY,
            is_uac=False,
            invite_seq=invite.cseq.seq,
            secure=invite.uri.lower().startswith("sips:"),
        )

    def update_from_response(self, response: SipResponse) -> None:
        """A later (2xx after 1xx) response on a UAC dialog: §12.1.2 / §13.2.2.4 - the 2xx's
        Record-Route and Contact define the confirmed dialog."""
        contacts = response.contacts
        if contacts:
            self.remote_target = contacts[0].uri
        if 200 <= response.status < 300:
            routes = list(response.headers.get_list("Record-Route"))
            routes.reverse()
            self.route_set = routes
            self.state = DialogState.CONFIRMED

    # ---------------------------------------------------------------- requests within the dialog

    def _request_uri_and_routes(self) -> tuple[str, list[str]]:
        """§12.2.1.1: loose routing (first route has ;lr) keeps the remote target as the
        Request-URI; strict routing moves the first route into the Request-URI and appends the
        remote target as the last Route."""
        if not self.route_set:
            return self.remote_target, []
        first = parse_name_addr(self.route_set[0])
        if "lr" in first.sip_uri.params:
            return self.remote_target, list(self.route_set)
        return first.uri, [*self.route_set[1:], f"<{self.remote_target}>"]

    def next_hop_uri(self) -> str:
        """The URI whose host/port to send the next request to (§8.1.2: first Route if any)."""
        if self.route_set:
            return parse_name_addr(self.route_set[0]).uri
        return self.remote_target

    def create_request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        extra_headers: list[tuple[str, str]] | None = None,
        cseq: int | None = None,
    ) -> SipRequest:
        """A request within the dialog, without Via (the transport layer adds it).

        CSeq: ACK (and CANCEL) reuse `cseq`/the INVITE's number; other methods increment the
        local sequence (§12.2.1.1).
        """
        if method == "ACK":
            seq = cseq if cseq is not None else self.invite_seq
        else:
            self.local_seq += 1
            seq = self.local_seq
            if method == "INVITE":
                self.invite_seq = seq
        ruri, routes = self._request_uri_and_routes()
        h = Headers()
        for r in routes:
            h.add("Route", r)
        h.add("Max-Forwards", "70")
        h.add("From", f"{self.local_uri};tag={self.local_tag}")
        h.add("To", f"{self.remote_uri};tag={self.remote_tag}")
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{seq} {method}")
        if method in ("INVITE", "UPDATE", "SUBSCRIBE", "REFER", "NOTIFY") and self.local_contact:
            h.add("Contact", self.local_contact)
        for n, v in extra_headers or []:
            h.add(n, v)
        if body:
            h.add("Content-Type", content_type or "application/sdp")
        return SipRequest(method, ruri, h, body)

    # ---------------------------------------------------------------- persistence

    def to_state(self) -> dict[str, Any]:
        """What a later process needs to end this dialog with a BYE (§12.2.1.1): its ID, the
        URIs, remote target, route set and the next local CSeq number. JSON-serialisable."""
        return {
            "call_id": self.call_id,
            "local_tag": self.local_tag,
            "remote_tag": self.remote_tag,
            "local_uri": self.local_uri,
            "remote_uri": self.remote_uri,
            "remote_target": self.remote_target,
            "route_set": list(self.route_set),
            "next_cseq": self.local_seq + 1,
            "is_uac": self.is_uac,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Dialog:
        """The dialog `to_state` described, confirmed; its next request takes `next_cseq`.
        Raises SipParseError when the state is not one `to_state` wrote."""
        try:
            dialog = cls(
                call_id=str(state["call_id"]),
                local_tag=str(state["local_tag"]),
                remote_tag=str(state["remote_tag"]),
                local_uri=str(state["local_uri"]),
                remote_uri=str(state["remote_uri"]),
                remote_target=str(state["remote_target"]),
                local_contact="",
                route_set=[str(r) for r in state["route_set"]],
                local_seq=int(state["next_cseq"]) - 1,
                state=DialogState.CONFIRMED,
                is_uac=bool(state["is_uac"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SipParseError(f"not a saved dialog: {exc}") from exc
        dialog.next_hop_uri()  # a route set that does not parse is refused here, not at send
        return dialog

    def check_remote_request(self, req: SipRequest) -> int | None:
        """§12.2.2: validate an in-dialog request.  Returns an error status (500 for an
        out-of-order CSeq) or None when the request is acceptable.  Updates the remote CSeq and,
        for target-refresh requests (re-INVITE, UPDATE), the remote target."""
        if req.method in ("ACK", "CANCEL"):
            return None
        seq = req.cseq.seq
        if self.remote_seq is not None and seq <= self.remote_seq:
            return 500
        # Parse before changing anything: a bad Contact raises with the dialog untouched.
        contacts = req.contacts if req.method in ("INVITE", "UPDATE") else []
        self.remote_seq = seq
        if contacts:
            self.remote_target = contacts[0].uri
        return None

    def matches(self, msg: SipRequest | SipResponse) -> bool:
        """Does an in-dialog request (our local tag is in To) belong to this dialog?"""
        try:
            if msg.call_id != self.call_id:
                return False
            if isinstance(msg, SipRequest):
                return msg.to.tag == self.local_tag and msg.from_.tag == self.remote_tag
            return msg.from_.tag == self.local_tag and msg.to.tag == self.remote_tag
        except SipParseError:
            return False


class Uas2xxRetransmitter:
    """§13.3.1.4: the UAS core retransmits its 2xx to INVITE at T1, 2*T1, ... capped at T2, until
    the ACK arrives, and gives up after 64*T1 (then it should BYE the dialog)."""

    def __init__(self, data: bytes, now: float, *, t1: float = T1, t2: float = T2) -> None:
        self.data = data
        self.t1, self.t2 = t1, t2
        self._interval = t1
        self._next: float | None = now + t1
        self._give_up = now + 64 * t1
        self.acked = False
        self.timed_out = False

    @property
    def next_deadline(self) -> float | None:
        if self.acked or self.timed_out:
            return None
        assert self._next is not None
        return min(self._next, self._give_up)

    def on_ack(self) -> None:
        self.acked = True

    def on_timer(self, now: float) -> list[bytes] | None:
        """Returns datagrams to send, or None when the ACK wait timed out."""
        if self.acked or self.timed_out:
            return []
        if now >= self._give_up:
            self.timed_out = True
            return None
        out: list[bytes] = []
        while self._next is not None and self._next <= now:
            out.append(self.data)
            self._interval = min(2 * self._interval, self.t2)
            self._next += self._interval
        return out


def parse_refer_to(req: SipRequest) -> NameAddr:
    """RFC 3515 §2.1: the Refer-To header (compact form r) of a REFER."""
    v = req.headers.get("Refer-To")
    if v is None:
        raise SipParseError("REFER without Refer-To")
    return parse_name_addr(v)


def parse_sipfrag_status(body: bytes) -> int:
    """RFC 3515 §2.4.5: a NOTIFY for a REFER carries a message/sipfrag whose first line is a
    status line, e.g. b"SIP/2.0 200 OK"; returns its code."""
    return parse_sipfrag(body)[0]


def parse_sipfrag(body: bytes) -> tuple[int, str]:
    """The (code, reason phrase) of a message/sipfrag status line (RFC 3420)."""
    try:
        first = body.split(b"\n", 1)[0].decode("utf-8").strip()
    except UnicodeDecodeError as e:
        raise SipParseError("sipfrag is not UTF-8") from e
    parts = first.split(None, 2)
    if len(parts) < 2 or parts[0].upper() != "SIP/2.0" or not parts[1].isdigit():
        raise SipParseError(f"bad sipfrag {first!r}")
    if len(parts[1]) != 3:
        raise SipParseError(f"bad sipfrag status {first!r}")
    return int(parts[1]), parts[2] if len(parts) > 2 else ""


def sipfrag(code: int, reason: str) -> bytes:
    """The message/sipfrag body a REFER's NOTIFY carries (RFC 3515 §2.4.5): a status line."""
    if not 100 <= code <= 699:
        raise ValueError(f"bad status code {code}")
    clean = "".join(c for c in reason if c.isprintable())
    return f"SIP/2.0 {code} {clean}\r\n".encode()


def parse_subscription_state(value: str) -> tuple[str, dict[str, str | None]]:
    """RFC 6665 §8.2.3 (RFC 3265 §7.2.4): `active;expires=60` / `terminated;reason=noresource`
    -> (state lower-case, parameters)."""
    state, _, rest = value.strip().partition(";")
    state = state.strip().lower()
    if not state or not all(c.isalnum() or c in "-.!%*_+`'~" for c in state):
        raise SipParseError(f"bad Subscription-State {value!r}")
    return state, parse_params(";" + rest) if rest else {}


def glare_retry_delay(owns_call_id: bool, rand: float) -> float:
    """§14.1: after a 491 the UAC that generated the Call-ID waits 2.1-4 s, the other one 0-2 s,
    in units of 10 ms.  `rand` is uniform in [0, 1) (passed in to keep this pure)."""
    lo, hi = (2.1, 4.0) if owns_call_id else (0.0, 2.0)
    steps = round((hi - lo) * 100)
    return round(lo + min(int(rand * (steps + 1)), steps) / 100, 2)
