"""Inbound SIP policy end to end on 127.0.0.1: malformed INVITEs get 400 and leave no state,
untrusted sources are challenged with digest (sipp -au/-ap gets through), max_calls and the
per-source rate limit give 503.  "Untrusted" is made by trusting nothing (or only ::1), so all
traffic stays on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_sip_endpoint_e2e import (
    HOST,
    RawPeer,
    needs_sipp,
    offer,
    raw_request,
    start_sipp,
    until,
)

from callplane.sip.auth import parse_challenge
from callplane.sip.endpoint import Answered, Ended, Failed, IncomingCall, SipEndpoint
from callplane.sip.message import SipResponse, parse_message
from callplane.sip.sdp import negotiate_answer

pytestmark = pytest.mark.e2e

SCENARIOS = Path(__file__).parent / "scenarios"


def assert_no_state(ep: SipEndpoint) -> None:
    assert not ep._server_txs and not ep._calls and not ep._incoming_by_key
    assert ep.active_calls == 0


async def get_response(peer: RawPeer, within: float = 2.0) -> SipResponse:
    msg = await asyncio.wait_for(peer.queue.get(), within)
    assert isinstance(msg, SipResponse)
    return msg


def answering(ep: SipEndpoint, got: asyncio.Queue[IncomingCall] | None = None) -> None:
    async def on_incoming(call: IncomingCall) -> None:
        await call.answer(negotiate_answer(call.remote_sdp or b"", HOST, 20400)[0])
        if got is not None:
            await got.put(call)

    ep.on_incoming = on_incoming


class LenientPeer(RawPeer):
    """Our 400 copies a malformed From as it came, so read responses without validation."""

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait(parse_message(data, strict=False))


async def lenient_peer() -> tuple[asyncio.DatagramTransport, RawPeer, int]:
    loop = asyncio.get_running_loop()
    t, p = await loop.create_datagram_endpoint(LenientPeer, local_addr=(HOST, 0))
    return t, p, t.get_extra_info("sockname")[1]


@pytest.fixture
async def ep() -> AsyncIterator[SipEndpoint]:
    e = SipEndpoint(HOST, 0, "callplane-test/1.0")
    await e.start()
    yield e
    await e.stop(timeout=1.0)


def malformed(port: int, ep_port: int, variant: str, n: int = 0) -> bytes:
    good_contact = f"Contact: <sip:raw@{HOST}:{port}>"
    data = raw_request(
        "INVITE",
        port,
        ep_port,
        branch=f"z9hG4bKbad{n}",
        call_id=f"bad-{n}",
        body=offer(),
    ).decode()
    if variant == "contact-open-bracket":
        data = data.replace(good_contact, "Contact: <")
    elif variant == "contact-unterminated-quote":
        data = data.replace(good_contact, f'Contact: "Bob <sip:raw@{HOST}:{port}>')
    elif variant == "contact-folded-into-uri":
        data = data.replace(good_contact, f"Contact: <sip:raw@{HOST}\r\n :{port}>")
    elif variant == "from-empty-tag":
        data = data.replace(";tag=rawtag", ";tag=")
    elif variant == "from-unterminated-quote":
        data = data.replace("From: <sip:raw", 'From: "Raw <sip:raw')
    elif variant == "record-route":
        data = data.replace("Max-Forwards: 70", "Record-Route: <sip:\r\nMax-Forwards: 70")
    elif variant == "from-bad-host":  # found by bench/fuzz_sip.py: a traceback in the engine
        data = data.replace(f"From: <sip:raw@{HOST}", "From: <sip:raw@127.0\x0e0.1")
    elif variant == "to-bad-host":
        data = data.replace("To: <sip:callplane@", "To: <sip:callplane@[::1")
    else:
        raise AssertionError(variant)
    return data.encode()


VARIANTS = [
    "contact-open-bracket",
    "contact-unterminated-quote",
    "contact-folded-into-uri",
    "from-empty-tag",
    "from-unterminated-quote",
    "record-route",
    "from-bad-host",
    "to-bad-host",
]


@pytest.mark.parametrize("variant", VARIANTS)
async def test_malformed_invite_gets_400_twice_and_leaves_nothing(
    ep: SipEndpoint, variant: str
) -> None:
    answering(ep)
    t, peer, port = await lenient_peer()
    try:
        data = malformed(port, ep.port, variant)
        for _ in range(2):  # the original and its retransmission
            t.sendto(data, (HOST, ep.port))
            r = await get_response(peer)
            assert r.status == 400, r
            assert r.call_id == "bad-0" and r.top_via.branch == "z9hG4bKbad0"
        await asyncio.sleep(0.1)
        assert peer.queue.empty()  # no 100 Trying, no 200 later
        assert_no_state(ep)
    finally:
        t.close()


async def test_30000_malformed_invites_leave_no_entries(ep: SipEndpoint) -> None:
    answering(ep)
    t, peer, port = await lenient_peer()
    total, batch = 30_000, 100
    try:
        for start in range(0, total, batch):
            before = peer.queue.qsize()
            for n in range(start, start + batch):
                t.sendto(malformed(port, ep.port, VARIANTS[n % len(VARIANTS)], n), (HOST, ep.port))
            # Let the endpoint (same loop) answer this batch before sending the next one; stop
            # waiting when nothing more arrives (a datagram or two may be dropped).
            seen = -1
            while seen != peer.queue.qsize() < before + batch:
                seen = peer.queue.qsize()
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        statuses = set()
        count = 0
        while not peer.queue.empty():
            r = peer.queue.get_nowait()
            assert isinstance(r, SipResponse)
            statuses.add(r.status)
            count += 1
        assert statuses == {400}
        assert count >= total * 0.95  # UDP on a shared machine may drop a few
        assert_no_state(ep)
        assert len(ep.policy.limiter or ()) <= 1  # trusted loopback: one bucket at most
    finally:
        t.close()


# ----------------------------------------------------------------------------- who may call in


@pytest.fixture
async def guarded() -> AsyncIterator[SipEndpoint]:
    """Trusts only ::1, so callers on 127.0.0.1 are untrusted and must authenticate."""
    e = SipEndpoint(
        HOST, 0, "callplane-guarded", trusted=["::1/128"], users={"alice": "s3cret"}, realm="cp"
    )
    await e.start()
    yield e
    await e.stop(timeout=1.0)


async def test_untrusted_invite_is_challenged_statelessly(guarded: SipEndpoint) -> None:
    answering(guarded)
    t, peer, port = await lenient_peer()
    try:
        data = raw_request("INVITE", port, guarded.port, body=offer())
        t.sendto(data, (HOST, guarded.port))
        r = await get_response(peer)
        assert r.status == 401 and r.to.tag
        chs = [parse_challenge(v) for v in r.headers.get_all("WWW-Authenticate")]
        assert [c.algorithm for c in chs] == ["MD5", "SHA-256"]
        assert all(c.realm == "cp" and c.qop == ["auth"] for c in chs)
        t.sendto(data, (HOST, guarded.port))  # retransmission: challenged again
        assert (await get_response(peer)).status == 401
        assert_no_state(guarded)
    finally:
        t.close()


@pytest.mark.parametrize(("password", "outcome"), [("s3cret", Answered), ("wrong", Failed)])
async def test_callplane_client_authenticates_with_sha256(
    guarded: SipEndpoint, password: str, outcome: type
) -> None:
    got: asyncio.Queue[IncomingCall] = asyncio.Queue()
    answering(guarded, got)
    caller = SipEndpoint(HOST, 0, "caller")
    await caller.start()
    try:
        call = caller.invite(
            f"sip:bob@{HOST}:{guarded.port}",
            f"sip:alice@{HOST}",
            offer(),
            auth=("alice", password),
        )
        ev = await until(call, outcome)
        if outcome is Failed:
            assert isinstance(ev, Failed) and ev.code == 403
            assert guarded.active_calls == 0
            return
        inc = await asyncio.wait_for(got.get(), 2)
        assert inc.user == "alice" and guarded.active_calls == 1
        assert "algorithm=SHA-256" in inc.headers["authorization"]
        await call.bye()
        assert await until(inc, Ended) == Ended("remote", "bye")
        assert guarded.active_calls == 0
    finally:
        await caller.stop(timeout=0.5)


@needs_sipp
async def test_sipp_with_credentials_gets_through(guarded: SipEndpoint, tmp_path: Path) -> None:
    got: asyncio.Queue[IncomingCall] = asyncio.Queue()
    answering(guarded, got)
    sipp = await start_sipp(
        tmp_path,
        "-au",
        "alice",
        "-ap",
        "s3cret",
        "-d",
        "200",
        scenario=(SCENARIOS / "uac_digest.xml").read_text(),
        remote=f"{HOST}:{guarded.port}",
    )
    inc = await asyncio.wait_for(got.get(), 10)
    assert inc.user == "alice"
    assert await until(inc, Ended) == Ended("remote", "bye")
    assert await sipp.wait() == 0


@needs_sipp
async def test_sipp_with_wrong_password_is_refused(guarded: SipEndpoint, tmp_path: Path) -> None:
    answering(guarded)
    sipp = await start_sipp(
        tmp_path,
        "-au",
        "alice",
        "-ap",
        "wrong",
        scenario=(SCENARIOS / "uac_digest.xml").read_text(),
        remote=f"{HOST}:{guarded.port}",
    )
    assert await sipp.wait() != 0  # it got 403 where it expects 200
    assert_no_state(guarded)


async def test_untrusted_without_users_gets_403() -> None:
    e = SipEndpoint(HOST, 0, "closed", trusted=[])
    await e.start()
    answering(e)
    t, peer, port = await lenient_peer()
    try:
        t.sendto(raw_request("INVITE", port, e.port, body=offer()), (HOST, e.port))
        assert (await get_response(peer)).status == 403
        assert_no_state(e)
    finally:
        t.close()
        await e.stop(timeout=0.5)


# ----------------------------------------------------------------------------- capacity


async def test_max_calls_gives_503_with_retry_after() -> None:
    e = SipEndpoint(HOST, 0, "small", max_calls=1)
    await e.start()
    got: asyncio.Queue[IncomingCall] = asyncio.Queue()
    answering(e, got)
    caller = SipEndpoint(HOST, 0, "caller")
    await caller.start()
    try:
        first = caller.invite(f"sip:a@{HOST}:{e.port}", f"sip:x@{HOST}", offer())
        await until(first, Answered)
        assert e.active_calls == 1
        second = caller.invite(f"sip:b@{HOST}:{e.port}", f"sip:x@{HOST}", offer())
        ev = await until(second, Failed)
        assert isinstance(ev, Failed) and ev.code == 503
        assert second.response is not None and second.response.headers.get("Retry-After")
        # an outgoing call counts too: e calls out, so even after the first call ends
        # the limit is still reached
        inc = await asyncio.wait_for(got.get(), 2)
        await first.bye()
        await until(inc, Ended)
        assert e.active_calls == 0
        third = caller.invite(f"sip:c@{HOST}:{e.port}", f"sip:x@{HOST}", offer())
        await until(third, Answered)
    finally:
        await caller.stop(timeout=0.5)
        await e.stop(timeout=0.5)


async def test_outgoing_calls_count_towards_max_calls() -> None:
    e = SipEndpoint(HOST, 0, "small", max_calls=1)
    await e.start()
    answering(e)
    other = SipEndpoint(HOST, 0, "other")
    await other.start()
    answering(other)
    try:
        out = e.invite(f"sip:o@{HOST}:{other.port}", f"sip:e@{HOST}", offer())
        await until(out, Answered)
        assert e.active_calls == 1
        back = other.invite(f"sip:e@{HOST}:{e.port}", f"sip:o@{HOST}", offer())
        ev = await until(back, Failed)
        assert isinstance(ev, Failed) and ev.code == 503
    finally:
        await other.stop(timeout=0.5)
        await e.stop(timeout=0.5)


async def test_per_source_rate_limit_gives_503() -> None:
    e = SipEndpoint(HOST, 0, "limited", rate=2, burst=3)
    await e.start()
    answering(e)
    t, peer, port = await lenient_peer()
    try:
        for n in range(5):
            t.sendto(
                raw_request(
                    "INVITE", port, e.port, branch=f"z9hG4bKr{n}", call_id=f"r{n}", body=offer()
                ),
                (HOST, e.port),
            )
        codes: dict[str, set[int]] = {}
        while sum(len(v) for v in codes.values()) < 3 * 2 + 2:  # 3 x (100, 200), 2 x 503
            r = await get_response(peer)
            codes.setdefault(r.call_id, set()).add(r.status)
        assert sorted(sorted(v) for v in codes.values()) == [[100, 200]] * 3 + [[503]] * 2
        assert e.active_calls == 3
        await asyncio.sleep(0.6)  # one token back (2/s)
        t.sendto(
            raw_request("INVITE", port, e.port, branch="z9hG4bKr9", call_id="r9", body=offer()),
            (HOST, e.port),
        )
        while (r := await get_response(peer)).call_id != "r9":
            pass  # 200 retransmissions of the calls above (we never ACK them)
        assert r.status == 100
    finally:
        t.close()
        await e.stop(timeout=0.5)


async def test_flood_of_unauthenticated_invites_leaves_no_state(guarded: SipEndpoint) -> None:
    answering(guarded)
    t, peer, port = await lenient_peer()
    total, batch = 3000, 100
    try:
        for start in range(0, total, batch):
            before = peer.queue.qsize()
            for n in range(start, start + batch):
                t.sendto(
                    raw_request(
                        "INVITE",
                        port,
                        guarded.port,
                        branch=f"z9hG4bKf{n}",
                        call_id=f"flood-{n}",
                        body=offer(),
                    ),
                    (HOST, guarded.port),
                )
            seen = -1
            while seen != peer.queue.qsize() < before + batch:
                seen = peer.queue.qsize()
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        statuses: set[int] = set()
        count = 0
        while not peer.queue.empty():
            r = peer.queue.get_nowait()
            assert isinstance(r, SipResponse)
            statuses.add(r.status)
            count += 1
        assert statuses == {401} and count >= total * 0.95
        assert_no_state(guarded)
    finally:
        t.close()


async def test_invites_to_itself_are_not_rate_limited() -> None:
    e = SipEndpoint(HOST, 0, "self", rate=1, burst=1)
    await e.start()
    got: asyncio.Queue[IncomingCall] = asyncio.Queue()
    answering(e, got)
    try:
        calls = [e.invite(f"sip:me@{HOST}:{e.port}", f"sip:me@{HOST}", offer()) for _ in range(4)]
        for c in calls:
            await until(c, Answered)
        assert e.active_calls == 8  # each call is two legs of this endpoint
    finally:
        await e.stop(timeout=0.5)


async def test_unroutable_invite_gets_a_stateless_404_and_a_refused_call_is_dropped(
    ep: SipEndpoint,
) -> None:
    got: asyncio.Queue[IncomingCall] = asyncio.Queue()
    answering(ep, got)
    ep.routable = lambda req: req.uri.startswith("sip:alice@")
    t, peer, port = await lenient_peer()
    try:
        data = raw_request("INVITE", port, ep.port, body=offer(), call_id="nobody-1")
        for _ in range(2):  # the original and its retransmission
            t.sendto(data, (HOST, ep.port))
            r = await get_response(peer)
            assert r.status == 404 and r.call_id == "nobody-1"
        await asyncio.sleep(0.1)
        assert peer.queue.empty()  # no 100 Trying first
        assert_no_state(ep)
        assert got.empty()  # the engine never saw it
    finally:
        t.close()

    # A routable call the engine refuses keeps only its transaction (for retransmissions and
    # the ACK), not the call: nothing of it outlives timer H.
    async def refuse(call: IncomingCall) -> None:
        await call.reject(486)

    ep.on_incoming = refuse
    caller = SipEndpoint(HOST, 0, "caller")
    await caller.start()
    try:
        call = caller.invite(f"sip:alice@{HOST}:{ep.port}", f"sip:x@{HOST}", offer())
        ev = await until(call, Failed)
        assert isinstance(ev, Failed) and ev.code == 486
        await asyncio.sleep(0.1)
        assert not ep._calls and not ep._incoming_by_key and ep.active_calls == 0
    finally:
        await caller.stop(timeout=0.5)
