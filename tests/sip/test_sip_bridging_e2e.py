"""End-to-end SIP for bridging: re-INVITE both ways (hold, late offer, glare), REFER both ways
and early media, between two SipEndpoints and against raw UDP peers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from test_sip_endpoint_e2e import (
    HOST,
    RawPeer,
    next_event,
    offer,
    raw_peer,
    raw_request,
    until,
)

from callplane.sip.endpoint import (
    Answered,
    Ended,
    IncomingCall,
    OutgoingCall,
    ReferProgress,
    Referred,
    Reinvited,
    Ringing,
    SipEndpoint,
    SipRequestError,
)
from callplane.sip.message import SipRequest, SipResponse
from callplane.sip.sdp import (
    build_offer,
    negotiate_answer,
    offered_direction,
    parse_sdp,
    with_direction,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
async def pair() -> AsyncIterator[tuple[SipEndpoint, SipEndpoint]]:
    a = SipEndpoint(HOST, 0, "callplane-a")
    b = SipEndpoint(HOST, 0, "callplane-b")
    await a.start()
    await b.start()
    yield a, b
    await a.stop(timeout=1.0)
    await b.stop(timeout=1.0)


async def connected(a: SipEndpoint, b: SipEndpoint) -> tuple[OutgoingCall, IncomingCall]:
    """a calls b, b answers; both sides confirmed, events drained."""
    got: asyncio.Queue[IncomingCall] = asyncio.Queue()

    async def on_incoming(call: IncomingCall) -> None:
        await call.answer(negotiate_answer(call.remote_sdp or b"", HOST, 20100)[0])
        await got.put(call)

    b.on_incoming = on_incoming
    out = a.invite(f"sip:bob@{HOST}:{b.port}", f"sip:alice@{HOST}", offer())
    inc = await asyncio.wait_for(got.get(), 3)
    await until(out, Answered)
    await until(inc, Answered)
    return out, inc


async def test_reinvite_hold_and_resume_both_directions(
    pair: tuple[SipEndpoint, SipEndpoint],
) -> None:
    a, b = pair
    out, inc = await connected(a, b)
    before = inc.local_sdp
    assert before is not None and out.local_sdp is not None
    # a puts b on hold; b answers by itself (no hook): recvonly, version + 1
    hold = with_direction(out.local_sdp, "sendonly")
    answer = await out.reinvite(hold)
    assert offered_direction(answer) == "recvonly"
    v0 = int(parse_sdp(before).origin.split()[2])
    assert int(parse_sdp(answer).origin.split()[2]) == v0 + 1
    assert await next_event(inc) == Reinvited(hold)
    assert inc.remote_sdp == hold and inc.local_sdp == answer
    assert out.local_sdp == hold and out.remote_sdp == answer
    # b resumes the other way round; a's owner hook chooses the answer
    seen: list[bytes] = []
    mine = build_offer(HOST, 20200, session_id=5, session_version=9)

    def hook(o: bytes) -> bytes:
        seen.append(o)
        return mine

    out.on_offer = hook
    resume = build_offer(HOST, 20102)
    assert await inc.reinvite(resume) == mine
    assert seen == [resume]
    assert await next_event(out) == Reinvited(resume)
    assert out.local_sdp == mine and inc.remote_sdp == mine
    # the hook refuses: 488, the old session stays, the dialog too
    out.on_offer = lambda o: None
    with pytest.raises(SipRequestError) as ei:
        await inc.reinvite(with_direction(resume, "inactive"))
    assert ei.value.code == 488
    assert out.remote_sdp == resume and inc.local_sdp == resume
    # a hook that raises is a 488 too, never an exception out of the endpoint
    out.on_offer = lambda o: 1 / 0  # type: ignore[return-value,arg-type]
    with pytest.raises(SipRequestError) as ei2:
        await inc.reinvite(resume)
    assert ei2.value.code == 488
    await inc.bye()
    assert await until(out, Ended) == Ended("remote", "bye")


async def test_reinvite_on_unconfirmed_or_ended_call_raises(
    pair: tuple[SipEndpoint, SipEndpoint],
) -> None:
    a, b = pair
    out, _inc = await connected(a, b)
    await out.bye()
    with pytest.raises(SipRequestError) as ei:
        await out.reinvite(offer())
    assert ei.value.code == 481
    handle = await out.refer(f"sip:carol@{HOST}")
    assert handle.code == 481 and [p async for p in handle] == [
        ReferProgress(481, handle.reason, True)
    ]


async def test_reinvite_glare_both_succeed_after_491(
    pair: tuple[SipEndpoint, SipEndpoint],
) -> None:
    a, b = pair
    out, inc = await connected(a, b)
    assert out.local_sdp is not None and inc.local_sdp is not None
    o1 = with_direction(out.local_sdp, "sendonly")
    o2 = with_direction(inc.local_sdp, "inactive")
    t0 = time.monotonic()
    r1, r2 = await asyncio.wait_for(asyncio.gather(out.reinvite(o1), inc.reinvite(o2)), 12)
    took = time.monotonic() - t0
    # Both were refused with 491 at first (each had its own pending); the non-owner of the
    # Call-ID (b) retries after 0-2 s, the owner (a) after 2.1-4 s (§14.1).
    assert 2.0 <= took <= 6.0
    assert offered_direction(r1) in ("recvonly", "inactive")
    assert offered_direction(r2) == "inactive"
    assert isinstance(await next_event(inc), Reinvited)
    assert isinstance(await next_event(out), Reinvited)


async def test_refer_accepted_with_progress(pair: tuple[SipEndpoint, SipEndpoint]) -> None:
    a, b = pair
    out, inc = await connected(a, b)

    async def transferee() -> None:
        ev = await next_event(inc)
        assert isinstance(ev, Referred)
        assert ev.refer_to == f"sip:carol@{HOST}:5099"
        assert ev.referred_by == f"sip:alice@{HOST}"
        assert ev.request.method == "REFER"
        await ev.handle.accept()
        await ev.handle.notify(180, "Ringing")
        await ev.handle.notify(200, "OK")
        await ev.handle.notify(486, "too late")  # after the final one: nothing is sent

    task = asyncio.create_task(transferee())
    handle = await out.refer(f"sip:carol@{HOST}:5099", referred_by=f"sip:alice@{HOST}")
    assert handle.code == 202 and handle.accepted
    got = [p async for p in handle]
    await task
    assert got == [
        ReferProgress(100, "Trying", False),
        ReferProgress(180, "Ringing", False),
        ReferProgress(200, "OK", True),
    ]
    assert handle.done and not out._refers_out
    # the dialog is still fine
    await out.bye()
    assert await until(inc, Ended) == Ended("remote", "bye")


async def test_refer_rejected_and_second_refer_uses_event_id(
    pair: tuple[SipEndpoint, SipEndpoint],
) -> None:
    a, b = pair
    out, inc = await connected(a, b)

    async def decline_then_accept() -> None:
        ev = await next_event(inc)
        assert isinstance(ev, Referred)
        await ev.handle.reject()
        ev2 = await next_event(inc)
        assert isinstance(ev2, Referred)
        await ev2.handle.accept()
        await ev2.handle.notify(503, "Service Unavailable")

    task = asyncio.create_task(decline_then_accept())
    h1 = await out.refer(f"sip:carol@{HOST}")
    assert (h1.code, h1.reason) == (603, "Decline")
    assert [p async for p in h1] == [ReferProgress(603, "Decline", True)]
    h2 = await out.refer(f"<sip:dave@{HOST}?Replaces=abc%40x>")
    assert h2.code == 202
    assert [p async for p in h2] == [
        ReferProgress(100, "Trying", False),
        ReferProgress(503, "Service Unavailable", True),
    ]
    await task


async def test_call_ending_finishes_refer_progress(
    pair: tuple[SipEndpoint, SipEndpoint],
) -> None:
    a, b = pair
    out, inc = await connected(a, b)

    async def accept_and_hang_up() -> None:
        ev = await next_event(inc)
        assert isinstance(ev, Referred)
        await ev.handle.accept()
        await asyncio.sleep(0.2)
        await inc.bye()

    task = asyncio.create_task(accept_and_hang_up())
    h = await out.refer(f"sip:carol@{HOST}")
    got = [p async for p in h]
    await task
    assert got[0] == ReferProgress(100, "Trying", False)
    assert got[-1].final and got[-1].status_code == 487


# ----------------------------------------------------------------------------- raw peers


async def raw_uas_call(
    ep: SipEndpoint, t: asyncio.DatagramTransport, peer: RawPeer, port: int
) -> tuple[OutgoingCall, SipRequest]:
    """ep calls the raw peer, which answers 200 (tag uas1); returns the call and the INVITE."""
    call = ep.invite(f"sip:raw@{HOST}:{port}", f"sip:alice@{HOST}", offer())
    inv = await asyncio.wait_for(peer.queue.get(), 2)
    assert isinstance(inv, SipRequest) and inv.method == "INVITE"
    answer = negotiate_answer(inv.body, HOST, 4002)[0]
    t.sendto(response_to(inv, 200, "OK", answer, port=port), (HOST, ep.port))
    ack = await asyncio.wait_for(peer.queue.get(), 2)
    assert isinstance(ack, SipRequest) and ack.method == "ACK"
    await until(call, Answered)
    return call, inv


def response_to(req: SipRequest, code: int, reason: str, body: bytes = b"", *, port: int) -> bytes:
    to = req.headers.get("To") or ""
    if ";tag=" not in to:
        to += ";tag=uas1"
    head = (
        f"SIP/2.0 {code} {reason}\r\n"
        + "".join(f"Via: {v}\r\n" for v in req.headers.get_all("Via"))
        + f"From: {req.headers.get('From')}\r\nTo: {to}\r\n"
        + f"Call-ID: {req.call_id}\r\nCSeq: {req.cseq}\r\n"
        + f"Contact: <sip:raw@{HOST}:{port}>\r\n"
    )
    if body:
        head += "Content-Type: application/sdp\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def in_dialog_from_uas(
    inv: SipRequest, method: str, port: int, cseq: int, branch: str, extra: str, body: bytes = b""
) -> bytes:
    """A request from the raw UAS to the caller inside the dialog of `inv`."""
    head = (
        f"{method} {inv.contacts[0].uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{port};branch={branch}\r\n"
        f"From: {inv.headers.get('To')};tag=uas1\r\nTo: {inv.headers.get('From')}\r\n"
        f"Call-ID: {inv.call_id}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n{extra}"
    )
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def test_notify_before_202_is_not_lost(ep: SipEndpoint) -> None:
    t, peer, port = await raw_peer()
    try:
        call, inv = await raw_uas_call(ep, t, peer, port)
        task = asyncio.create_task(call.refer(f"sip:carol@{HOST}"))
        refer = await asyncio.wait_for(peer.queue.get(), 2)
        assert isinstance(refer, SipRequest) and refer.method == "REFER"
        assert refer.headers.get("Refer-To") == f"<sip:carol@{HOST}>"
        frag = "Event: refer\r\nContent-Type: message/sipfrag;version=2.0\r\n"
        t.sendto(
            in_dialog_from_uas(
                inv,
                "NOTIFY",
                port,
                1,
                "z9hG4bKn1",
                frag + "Subscription-State: active;expires=60\r\n",
                b"SIP/2.0 100 Trying\r\n",
            ),
            (HOST, ep.port),
        )
        ok1 = await asyncio.wait_for(peer.queue.get(), 2)
        assert isinstance(ok1, SipResponse) and ok1.status == 200
        t.sendto(response_to(refer, 202, "Accepted", port=port), (HOST, ep.port))
        handle = await asyncio.wait_for(task, 2)
        assert handle.code == 202
        t.sendto(
            in_dialog_from_uas(
                inv,
                "NOTIFY",
                port,
                2,
                "z9hG4bKn2",
                frag + "Subscription-State: terminated;reason=noresource\r\n",
                b"SIP/2.0 200 OK\r\n",
            ),
            (HOST, ep.port),
        )
        ok2 = await asyncio.wait_for(peer.queue.get(), 2)
        assert isinstance(ok2, SipResponse) and ok2.status == 200
        got = [p async for p in handle]
        assert got == [ReferProgress(100, "Trying", False), ReferProgress(200, "OK", True)]
        # a NOTIFY for no subscription gets 481, a bad sipfrag 400
        t.sendto(
            in_dialog_from_uas(
                inv,
                "NOTIFY",
                port,
                3,
                "z9hG4bKn3",
                frag + "Subscription-State: active\r\n",
                b"SIP/2.0 180 Ringing\r\n",
            ),
            (HOST, ep.port),
        )
        r481 = await asyncio.wait_for(peer.queue.get(), 2)
        assert isinstance(r481, SipResponse) and r481.status == 481
    finally:
        t.close()


async def test_refer_timeout_is_reported(ep: SipEndpoint) -> None:
    t, peer, port = await raw_peer()
    try:
        call, _ = await raw_uas_call(ep, t, peer, port)
        # The raw peer never answers the REFER: timer F (32 s) is too long for a test, so we
        # accept the REFER and then never NOTIFY: the notify timeout reports 408.
        task = asyncio.create_task(call.refer(f"sip:carol@{HOST}", notify_timeout=0.3))
        refer = await asyncio.wait_for(peer.queue.get(), 2)
        assert isinstance(refer, SipRequest)
        t.sendto(response_to(refer, 202, "Accepted", port=port), (HOST, ep.port))
        handle = await asyncio.wait_for(task, 2)
        got = [p async for p in handle]
        assert [(p.status_code, p.final) for p in got] == [(408, True)]
    finally:
        t.close()


async def test_early_media_183_then_200_without_sdp(ep: SipEndpoint) -> None:
    t, peer, port = await raw_peer()
    try:
        call = ep.invite(f"sip:raw@{HOST}:{port}", f"sip:alice@{HOST}", offer())
        inv = await asyncio.wait_for(peer.queue.get(), 2)
        assert isinstance(inv, SipRequest)
        early = negotiate_answer(inv.body, HOST, 4002)[0]
        t.sendto(response_to(inv, 183, "Session Progress", early, port=port), (HOST, ep.port))
        assert await until(call, Ringing) == Ringing(183, early)
        t.sendto(response_to(inv, 200, "OK", port=port), (HOST, ep.port))
        assert await until(call, Answered) == Answered(early)
        assert call.remote_sdp == early
    finally:
        t.close()


async def test_early_media_183_then_200_with_same_sdp(ep: SipEndpoint) -> None:
    t, peer, port = await raw_peer()
    try:
        call = ep.invite(
            f"sip:raw@{HOST}:{port}", f"sip:alice@{HOST}", offer(), headers={"X-Bridge": "b1"}
        )
        inv = await asyncio.wait_for(peer.queue.get(), 2)
        assert isinstance(inv, SipRequest) and inv.headers.get("X-Bridge") == "b1"
        early = negotiate_answer(inv.body, HOST, 4002)[0]
        t.sendto(response_to(inv, 183, "Session Progress", early, port=port), (HOST, ep.port))
        assert await until(call, Ringing) == Ringing(183, early)
        t.sendto(response_to(inv, 200, "OK", early, port=port), (HOST, ep.port))
        assert await until(call, Answered) == Answered(early)
    finally:
        t.close()


async def test_reinvite_without_sdp_offer_in_200_answer_in_ack(ep: SipEndpoint) -> None:
    got: asyncio.Queue[IncomingCall] = asyncio.Queue()

    async def on_incoming(call: IncomingCall) -> None:
        await call.answer(negotiate_answer(call.remote_sdp or b"", HOST, 20050)[0])
        await got.put(call)

    ep.on_incoming = on_incoming
    t, peer, port = await raw_peer()
    try:
        t.sendto(
            raw_request("INVITE", port, ep.port, body=build_offer(HOST, 4000)), (HOST, ep.port)
        )
        await asyncio.wait_for(peer.queue.get(), 2)  # 100
        ok = await asyncio.wait_for(peer.queue.get(), 2)
        assert isinstance(ok, SipResponse) and ok.status == 200
        tag = ok.to.tag or ""
        inc = await asyncio.wait_for(got.get(), 1)
        t.sendto(raw_request("ACK", port, ep.port, to_tag=tag, branch="z9hG4bKa1"), (HOST, ep.port))
        await until(inc, Answered)
        t.sendto(
            raw_request("INVITE", port, ep.port, to_tag=tag, branch="z9hG4bKre", cseq=2),
            (HOST, ep.port),
        )
        r = await asyncio.wait_for(peer.queue.get(), 2)
        assert isinstance(r, SipResponse) and r.status == 200 and r.body == inc.local_sdp
        answer = build_offer(HOST, 4010, direction="recvonly")
        t.sendto(
            raw_request("ACK", port, ep.port, to_tag=tag, branch="z9hG4bKa2", cseq=2, body=answer),
            (HOST, ep.port),
        )
        assert await next_event(inc) == Reinvited(answer)
        assert inc.remote_sdp == answer
        # the dialog still works: a re-INVITE with SDP afterwards is answered
        t.sendto(
            raw_request(
                "INVITE",
                port,
                ep.port,
                to_tag=tag,
                branch="z9hG4bKre3",
                cseq=3,
                body=build_offer(HOST, 4010, direction="inactive"),
            ),
            (HOST, ep.port),
        )
        r3 = await asyncio.wait_for(peer.queue.get(), 2)
        assert isinstance(r3, SipResponse) and r3.status == 200
        assert offered_direction(r3.body) == "inactive"
    finally:
        t.close()


@pytest.fixture
async def ep() -> AsyncIterator[SipEndpoint]:
    e = SipEndpoint(HOST, 0, "callplane-test/1.0")
    await e.start()
    yield e
    await e.stop(timeout=1.0)
