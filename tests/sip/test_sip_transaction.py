"""RFC 3261 §17 transaction state machines, driven by stepping time."""

from __future__ import annotations

import pytest
from sip_samples import INVITE

from callplane.sip.message import Headers, SipRequest, SipResponse, parse_message
from callplane.sip.transaction import (
    T1,
    T2,
    T4,
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


def invite() -> SipRequest:
    msg = parse_message(INVITE)
    assert isinstance(msg, SipRequest)
    return msg


def request(method: str, branch: str = "z9hG4bKnon") -> SipRequest:
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP 192.0.2.1:5060;branch={branch}")
    h.add("From", "<sip:a@example.com>;tag=1")
    h.add("To", "<sip:b@example.com>;tag=2")
    h.add("Call-ID", "cid")
    h.add("CSeq", f"2 {method}")
    return SipRequest(method, "sip:b@192.0.2.2", h)


def response(req: SipRequest, code: int, to_tag: str | None = "abc") -> SipResponse:
    h = Headers()
    for v in req.headers.get_all("Via"):
        h.add("Via", v)
    h.add("From", req.headers.get("From") or "")
    to = req.headers.get("To") or ""
    if to_tag and "tag=" not in to:
        to += f";tag={to_tag}"
    h.add("To", to)
    h.add("Call-ID", req.call_id)
    h.add("CSeq", req.headers.get("CSeq") or "")
    return SipResponse(code, "X", h)


def sends(actions: list[Action]) -> list[bytes]:
    return [a.data for a in actions if isinstance(a, Send)]


def run_until(
    tx: ClientInviteTransaction
    | ClientNonInviteTransaction
    | ServerInviteTransaction
    | ServerNonInviteTransaction,
    end: float,
) -> list[tuple[float, Action]]:
    """Fire every timer up to `end`, recording (time, action)."""
    out: list[tuple[float, Action]] = []
    while tx.next_deadline is not None and tx.next_deadline <= end:
        t = tx.next_deadline
        for a in tx.on_timer(t):
            out.append((t, a))
    return out


# ----------------------------------------------------------------------------- client INVITE


def test_client_invite_timer_a_doubles_and_timer_b_fires_at_64_t1() -> None:
    tx = ClientInviteTransaction(invite())
    assert sends(tx.start(0.0)) == [invite().to_bytes()]
    assert tx.state == TxState.CALLING
    events = run_until(tx, 100.0)
    retrans = [t for t, a in events if isinstance(a, Send)]
    # Timer A: T1, 2T1, 4T1, ... not capped by T2 for INVITE (§17.1.1.2)
    assert retrans == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert [(t, a) for t, a in events if not isinstance(a, Send)] == [
        (32.0, Timeout("B")),
        (32.0, Terminated()),
    ]
    assert tx.state == TxState.TERMINATED and tx.next_deadline is None


def test_client_invite_provisional_stops_retransmission() -> None:
    req = invite()
    tx = ClientInviteTransaction(req)
    tx.start(0.0)
    r180 = response(req, 180)
    assert tx.on_response(r180, 0.2) == [Deliver(r180)]
    assert tx.state == TxState.PROCEEDING
    # no retransmissions and no timer B in Proceeding; the TU's ring timeout governs
    assert not [a for _, a in run_until(tx, 200.0) if isinstance(a, Send | Timeout)]


def test_client_invite_non2xx_generates_ack_and_timer_d() -> None:
    req = invite()
    tx = ClientInviteTransaction(req)
    tx.start(0.0)
    r486 = response(req, 486)
    actions = tx.on_response(r486, 1.0)
    assert tx.state == TxState.COMPLETED
    assert isinstance(actions[1], Deliver)
    ack = parse_message(sends(actions)[0])
    assert isinstance(ack, SipRequest) and ack.method == "ACK"
    # §17.1.1.3: same Request-URI, Call-ID, From, CSeq number, top Via; To from the response
    assert ack.uri == req.uri and ack.call_id == req.call_id
    assert ack.cseq.seq == req.cseq.seq and ack.cseq.method == "ACK"
    assert ack.top_via.branch == req.top_via.branch
    assert ack.to.tag == "abc" and ack.from_.tag == req.from_.tag
    # retransmitted final response -> ACK again, not delivered
    again = tx.on_response(r486, 2.0)
    assert sends(again) == sends(actions) and not [a for a in again if isinstance(a, Deliver)]
    # Timer D = 32 s
    assert tx.next_deadline == pytest.approx(33.0)
    assert tx.on_timer(33.0) == [Terminated()]


def test_client_invite_2xx_goes_to_accepted_and_passes_retransmissions() -> None:
    req = invite()
    tx = ClientInviteTransaction(req)
    tx.start(0.0)
    ok = response(req, 200)
    assert tx.on_response(ok, 0.1) == [Deliver(ok)]  # no ACK from the transaction for 2xx
    assert tx.state == TxState.ACCEPTED
    assert tx.on_response(ok, 0.6) == [Deliver(ok)]  # RFC 6026: retransmitted 2xx to the TU
    assert tx.on_response(response(req, 180), 0.7) == []
    assert tx.next_deadline == pytest.approx(0.1 + 64 * T1)  # timer M
    assert tx.on_timer(0.1 + 64 * T1) == [Terminated()]


def test_client_invite_transport_error() -> None:
    tx = ClientInviteTransaction(invite())
    tx.start(0.0)
    assert tx.on_transport_error() == [Timeout("transport"), Terminated()]
    assert tx.on_transport_error() == []


def test_cancel_request_shares_branch() -> None:
    req = invite()
    cancel = build_cancel(req)
    assert cancel.method == "CANCEL" and cancel.uri == req.uri
    assert cancel.top_via.branch == req.top_via.branch
    assert cancel.cseq.seq == req.cseq.seq and cancel.cseq.method == "CANCEL"
    assert len(cancel.vias) == 1
    # different client transactions (method is part of the key)
    assert client_key(cancel) != client_key(req)
    assert client_key(cancel)[0] == client_key(req)[0]


# ----------------------------------------------------------------------------- client non-INVITE


def test_client_non_invite_timer_e_capped_at_t2_and_timer_f() -> None:
    tx = ClientNonInviteTransaction(request("BYE"))
    tx.start(0.0)
    events = run_until(tx, 100.0)
    retrans = [t for t, a in events if isinstance(a, Send)]
    assert retrans == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert events[-2:] == [(32.0, Timeout("F")), (32.0, Terminated())]


def test_client_non_invite_proceeding_retransmits_every_t2() -> None:
    req = request("BYE")
    tx = ClientNonInviteTransaction(req)
    tx.start(0.0)
    tx.on_response(response(req, 100), 0.1)
    assert tx.state == TxState.PROCEEDING
    first = tx.on_timer(0.5)
    assert sends(first)
    assert tx.next_deadline == pytest.approx(0.5 + T2)


def test_client_non_invite_final_then_timer_k() -> None:
    req = request("OPTIONS")
    tx = ClientNonInviteTransaction(req)
    tx.start(0.0)
    ok = response(req, 200)
    assert tx.on_response(ok, 0.3) == [Deliver(ok)]
    assert tx.state == TxState.COMPLETED
    assert tx.on_response(ok, 0.4) == []  # absorbed
    assert tx.next_deadline == pytest.approx(0.3 + T4)
    assert tx.on_timer(0.3 + T4) == [Terminated()]


# ----------------------------------------------------------------------------- server INVITE


def test_server_invite_repeats_last_provisional_on_retransmission() -> None:
    req = invite()
    tx = ServerInviteTransaction(req)
    assert tx.on_request(req, 0.0) == []  # nothing sent yet
    r100 = response(req, 100, to_tag=None)
    assert sends(tx.send_response(r100, 0.0)) == [r100.to_bytes()]
    assert sends(tx.on_request(req, 0.5)) == [r100.to_bytes()]


def test_server_invite_non2xx_timer_g_h() -> None:
    req = invite()
    tx = ServerInviteTransaction(req)
    r486 = response(req, 486)
    assert sends(tx.send_response(r486, 0.0)) == [r486.to_bytes()]
    assert tx.state == TxState.COMPLETED
    events = run_until(tx, 100.0)
    retrans = [t for t, a in events if isinstance(a, Send)]
    # Timer G: T1, doubling, capped at T2 (§17.2.1)
    assert retrans == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert events[-2:] == [(32.0, Timeout("H")), (32.0, Terminated())]


def test_server_invite_ack_confirms_then_timer_i() -> None:
    req = invite()
    tx = ServerInviteTransaction(req)
    r486 = response(req, 486)
    tx.send_response(r486, 0.0)
    ack = request("ACK", branch=req.top_via.branch or "")
    ack.headers.set("Via", req.headers.get("Via") or "")
    ack.headers.set("CSeq", f"{req.cseq.seq} ACK")
    assert server_key(ack) == tx.key
    assert tx.on_request(ack, 0.2) == []
    assert tx.state == TxState.CONFIRMED
    assert tx.next_deadline == pytest.approx(0.2 + T4)
    assert tx.on_request(req, 0.3) == []  # retransmitted INVITE absorbed in Confirmed
    assert tx.on_timer(0.2 + T4) == [Terminated()]


def test_server_invite_2xx_accepted_and_timer_l() -> None:
    req = invite()
    tx = ServerInviteTransaction(req)
    ok = response(req, 200)
    assert sends(tx.send_response(ok, 0.0)) == [ok.to_bytes()]
    assert tx.state == TxState.ACCEPTED
    assert tx.on_request(req, 0.1) == []  # retransmitted INVITE absorbed (RFC 6026)
    assert tx.send_response(response(req, 486), 0.2) == []  # no second final response
    assert tx.next_deadline == pytest.approx(64 * T1)
    assert tx.on_timer(64 * T1) == [Terminated()]


# ----------------------------------------------------------------------------- server non-INVITE


def test_server_non_invite() -> None:
    req = request("BYE")
    tx = ServerNonInviteTransaction(req)
    assert tx.on_request(req, 0.1) == []  # Trying: absorb
    ok = response(req, 200)
    assert sends(tx.send_response(ok, 0.2)) == [ok.to_bytes()]
    assert sends(tx.on_request(req, 0.3)) == [ok.to_bytes()]  # Completed: repeat
    assert tx.next_deadline == pytest.approx(0.2 + 64 * T1)  # timer J
    assert tx.on_timer(0.2 + 64 * T1) == [Terminated()]
    assert tx.next_deadline is None


def test_server_non_invite_provisional_then_final() -> None:
    req = request("OPTIONS")
    tx = ServerNonInviteTransaction(req)
    tx.send_response(response(req, 100), 0.0)
    assert tx.state == TxState.PROCEEDING
    assert sends(tx.on_request(req, 0.1))
    tx.send_response(response(req, 200), 0.2)
    assert tx.state == TxState.COMPLETED


def test_server_keys_match_ack_and_cancel() -> None:
    req = invite()
    cancel = build_cancel(req)
    k_inv, k_can = server_key(req), server_key(cancel)
    assert k_inv[:2] == k_can[:2] and k_inv[2] == "INVITE" and k_can[2] == "CANCEL"
    ack = SipRequest("ACK", req.uri, cancel.headers.copy())
    ack.headers.set("CSeq", f"{req.cseq.seq} ACK")
    assert server_key(ack) == k_inv


def test_custom_timer_values() -> None:
    tx = ClientNonInviteTransaction(request("BYE"), t1=0.1, t2=0.4, t4=1.0)
    tx.start(0.0)
    assert tx.next_deadline == pytest.approx(0.1)
    retrans = [t for t, a in run_until(tx, 10.0) if isinstance(a, Send)]
    assert retrans[:4] == pytest.approx([0.1, 0.3, 0.7, 1.1])
