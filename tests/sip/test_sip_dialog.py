"""Dialogs (RFC 3261 §12-§15) and UAS 2xx retransmission."""

from __future__ import annotations

import json

import pytest
from sip_samples import INVITE

from callplane.sip.dialog import (
    Dialog,
    DialogState,
    Uas2xxRetransmitter,
    glare_retry_delay,
    new_branch,
    new_tag,
    parse_refer_to,
    parse_sipfrag,
    parse_sipfrag_status,
    parse_subscription_state,
    sipfrag,
)
from callplane.sip.message import Headers, SipParseError, SipRequest, SipResponse, parse_message
from callplane.sip.transaction import T1, T2


def invite(record_route: list[str] | None = None) -> SipRequest:
    msg = parse_message(INVITE)
    assert isinstance(msg, SipRequest)
    for rr in record_route or []:
        msg.headers.add("Record-Route", rr)
    return msg


def ok_for(
    req: SipRequest,
    *,
    to_tag: str = "bobtag",
    contact: str = "<sip:bob@192.0.2.4:5070>",
    record_route: list[str] | None = None,
    status: int = 200,
) -> SipResponse:
    h = Headers()
    for v in req.headers.get_all("Via"):
        h.add("Via", v)
    h.add("From", req.headers.get("From") or "")
    h.add("To", (req.headers.get("To") or "") + f";tag={to_tag}")
    h.add("Call-ID", req.call_id)
    h.add("CSeq", req.headers.get("CSeq") or "")
    h.add("Contact", contact)
    for rr in record_route or []:
        h.add("Record-Route", rr)
    return SipResponse(status, "OK", h)


def test_uac_dialog_from_2xx() -> None:
    req = invite()
    d = Dialog.uac(
        req, ok_for(req, record_route=["<sip:p2.example.com;lr>, <sip:p1.example.com;lr>"])
    )
    assert d.id == (req.call_id, "1928301774", "bobtag")
    assert d.state == DialogState.CONFIRMED and d.is_uac
    assert d.remote_target == "sip:bob@192.0.2.4:5070"
    # §12.1.2: route set is the Record-Route in reverse order
    assert d.route_set == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert d.local_seq == 314159
    assert d.next_hop_uri() == "sip:p1.example.com;lr"


def test_uac_ack_and_bye() -> None:
    req = invite()
    d = Dialog.uac(req, ok_for(req))
    ack = d.create_request("ACK")
    # §13.2.2.4: ACK for 2xx reuses the INVITE's CSeq number, goes to the remote target
    assert ack.method == "ACK" and ack.cseq.seq == 314159 and ack.cseq.method == "ACK"
    assert ack.uri == "sip:bob@192.0.2.4:5070"
    assert ack.to.tag == "bobtag" and ack.from_.tag == "1928301774"
    assert ack.from_.display_name == "Alice" and ack.to.display_name == "Bob"
    assert ack.headers.get("Max-Forwards") == "70"
    bye = d.create_request("BYE")
    assert bye.cseq.seq == 314160 and bye.call_id == req.call_id
    assert d.create_request("INFO").cseq.seq == 314161
    assert bye.headers.get("Route") is None


def test_uac_early_dialog_then_confirmed() -> None:
    req = invite()
    d = Dialog.uac(req, ok_for(req, status=180, contact="<sip:bob@10.0.0.1>"))
    assert d.state == DialogState.EARLY
    d.update_from_response(ok_for(req, record_route=["<sip:p.example.com;lr>"]))
    assert d.state == DialogState.CONFIRMED
    assert d.remote_target == "sip:bob@192.0.2.4:5070" and d.route_set == ["<sip:p.example.com;lr>"]


def test_uac_needs_to_tag() -> None:
    req = invite()
    resp = ok_for(req)
    resp.headers.set("To", "<sip:bob@biloxi.example.com>")
    with pytest.raises(SipParseError):
        Dialog.uac(req, resp)


def test_loose_and_strict_routing() -> None:
    req = invite()
    loose = Dialog.uac(req, ok_for(req, record_route=["<sip:p1.example.com;lr>"]))
    r = loose.create_request("BYE")
    assert r.uri == "sip:bob@192.0.2.4:5070"
    assert r.headers.get_all("Route") == ["<sip:p1.example.com;lr>"]
    strict = Dialog.uac(
        req, ok_for(req, record_route=["<sip:p2.example.com>", "<sip:p1.example.com>"])
    )
    s = strict.create_request("BYE")
    # §12.2.1.1 strict routing: first route becomes the Request-URI, remote target appended
    assert s.uri == "sip:p1.example.com"
    assert s.headers.get_all("Route") == ["<sip:p2.example.com>", "<sip:bob@192.0.2.4:5070>"]


def test_uas_dialog() -> None:
    req = invite(record_route=["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"])
    d = Dialog.uas(req, "mytag", "<sip:me@127.0.0.1:5060>")
    assert d.id == (req.call_id, "mytag", "1928301774")
    assert not d.is_uac and d.remote_seq == 314159 and d.local_seq == 0
    assert d.remote_target == "sip:alice@pc33.atlanta.example.com"
    assert d.route_set == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]  # in order
    bye = d.create_request("BYE")
    assert bye.to.tag == "1928301774" and bye.from_.tag == "mytag" and bye.cseq.seq == 1
    assert bye.from_.uri == "sip:bob@biloxi.example.com"
    reinv = d.create_request("INVITE", body=b"v=0\r\n")
    assert reinv.headers.get("Contact") == "<sip:me@127.0.0.1:5060>"
    assert reinv.headers.get("Content-Type") == "application/sdp" and d.invite_seq == 2


def test_remote_cseq_ordering_and_target_refresh() -> None:
    req = invite()
    d = Dialog.uas(req, "mytag", "<sip:me@h>")
    bye = SipRequest("BYE", "sip:me@h", req.headers.copy())
    bye.headers.set("CSeq", "314159 BYE")
    assert d.check_remote_request(bye) == 500  # not greater than the last one (§12.2.2)
    reinv = SipRequest("INVITE", "sip:me@h", req.headers.copy())
    reinv.headers.set("CSeq", "314160 INVITE")
    reinv.headers.set("Contact", "<sip:alice@10.9.9.9:5090>")
    assert d.check_remote_request(reinv) is None
    assert d.remote_target == "sip:alice@10.9.9.9:5090" and d.remote_seq == 314160
    ack = SipRequest("ACK", "sip:me@h", req.headers.copy())
    ack.headers.set("CSeq", "1 ACK")
    assert d.check_remote_request(ack) is None


def test_dialog_matching() -> None:
    req = invite()
    d = Dialog.uas(req, "mytag", "<sip:me@h>")
    bye = SipRequest("BYE", "sip:me@h", req.headers.copy())
    bye.headers.set("To", "<sip:bob@biloxi.example.com>;tag=mytag")
    assert d.matches(bye)
    bye.headers.set("To", "<sip:bob@biloxi.example.com>;tag=other")
    assert not d.matches(bye)
    bye.headers.set("To", "garbage <")
    assert not d.matches(bye)


def test_uas_2xx_retransmitter() -> None:
    r = Uas2xxRetransmitter(b"200", 0.0)
    times: list[float] = []
    while True:
        d = r.next_deadline
        if d is None:
            break
        out = r.on_timer(d)
        if out is None:
            break
        times += [d] * len(out)
    # §13.3.1.4: T1, then doubling up to T2, until 64*T1
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert r.timed_out and r.next_deadline is None
    r2 = Uas2xxRetransmitter(b"200", 0.0, t1=T1, t2=T2)
    assert r2.on_timer(0.6) == [b"200"]
    r2.on_ack()
    assert r2.next_deadline is None and r2.on_timer(100.0) == []


def test_refer_and_sipfrag_helpers() -> None:
    req = invite()
    refer = SipRequest("REFER", "sip:a@b", req.headers.copy())
    refer.headers.add("r", "<sip:carol@example.com?Replaces=abc>")
    assert parse_refer_to(refer).uri == "sip:carol@example.com?Replaces=abc"
    with pytest.raises(SipParseError):
        parse_refer_to(invite())
    assert parse_sipfrag_status(b"SIP/2.0 180 Ringing\r\n") == 180
    assert parse_sipfrag_status(b"SIP/2.0 200 OK") == 200
    for bad in (b"", b"HTTP/1.1 200 OK", b"SIP/2.0 20 OK", b"\xff"):
        with pytest.raises(SipParseError):
            parse_sipfrag_status(bad)


def test_sipfrag_round_trip_and_subscription_state() -> None:
    assert sipfrag(100, "Trying") == b"SIP/2.0 100 Trying\r\n"
    assert parse_sipfrag(sipfrag(486, "Busy Here")) == (486, "Busy Here")
    assert parse_sipfrag(b"SIP/2.0 200\r\n") == (200, "")
    assert parse_sipfrag(sipfrag(603, "Decline\r\nX: injected")) == (603, "DeclineX: injected")
    with pytest.raises(ValueError):
        sipfrag(99, "x")
    assert parse_subscription_state("active;expires=60") == ("active", {"expires": "60"})
    assert parse_subscription_state(" Terminated ;reason=noresource") == (
        "terminated",
        {"reason": "noresource"},
    )
    assert parse_subscription_state("pending") == ("pending", {})
    for bad in ("", ";expires=1", "act ive", "active;=x"):
        with pytest.raises(SipParseError):
            parse_subscription_state(bad)


def test_glare_retry_delay_ranges() -> None:
    # §14.1: owner of the Call-ID 2.1-4 s, the other side 0-2 s, in 10 ms units
    assert glare_retry_delay(True, 0.0) == 2.1
    assert glare_retry_delay(True, 0.999999) == 4.0
    assert glare_retry_delay(False, 0.0) == 0.0
    assert glare_retry_delay(False, 0.999999) == 2.0
    for r in (0.1, 0.33, 0.5, 0.77):
        for owner in (True, False):
            d = glare_retry_delay(owner, r)
            assert round(d * 100) == d * 100 or abs(round(d * 100) - d * 100) < 1e-6
            assert (2.1 <= d <= 4.0) if owner else (0.0 <= d <= 2.0)


def test_ids_are_unique() -> None:
    assert new_branch().startswith("z9hG4bK")
    assert len({new_tag() for _ in range(100)}) == 100


# ---------------------------------------------------------------- persistence (crash recovery)


def test_saved_dialog_builds_the_same_bye_after_a_restart() -> None:
    req = invite()
    d = Dialog.uac(
        req, ok_for(req, record_route=["<sip:p2.example.com;lr>, <sip:p1.example.com;lr>"])
    )
    d.create_request("INVITE")  # a re-INVITE (hold) took a CSeq number before the crash
    state = d.to_state()
    assert state["next_cseq"] == d.local_seq + 1
    restored = Dialog.from_state(json.loads(json.dumps(state)))  # it goes through the store
    assert restored.id == d.id and restored.state is DialogState.CONFIRMED
    expected = d.create_request("BYE")
    bye = restored.create_request("BYE")
    assert bye.cseq.seq == expected.cseq.seq == state["next_cseq"]
    assert bye.uri == expected.uri == "sip:bob@192.0.2.4:5070"
    for name in ("From", "To", "Call-ID", "CSeq"):
        assert bye.headers.get(name) == expected.headers.get(name), name
    assert bye.headers.get_all("Route") == expected.headers.get_all("Route") != []
    assert restored.next_hop_uri() == "sip:p1.example.com;lr"


def test_uas_saved_dialog_targets_the_caller_s_contact() -> None:
    d = Dialog.uas(invite(), "ourtag", "<sip:callplane@127.0.0.1:5060>")
    state = d.to_state()
    assert state["next_cseq"] == 1 and not state["is_uac"]
    bye = Dialog.from_state(state).create_request("BYE")
    assert bye.to.tag == "1928301774" and bye.from_.tag == "ourtag"
    assert bye.cseq.seq == 1 and bye.cseq.method == "BYE"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: {},
        lambda s: {**s, "next_cseq": "x"},
        lambda s: {k: v for k, v in s.items() if k != "remote_tag"},
        lambda s: {**s, "route_set": ["<"]},
        lambda s: {**s, "route_set": None},
    ],
)
def test_a_state_that_to_state_did_not_write_is_refused(mangle: object) -> None:
    state = Dialog.uas(invite(), "ourtag", "").to_state()
    with pytest.raises(SipParseError):
        Dialog.from_state(mangle(state))  # type: ignore[operator]
