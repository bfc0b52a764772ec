"""End-to-end: SipEndpoint against real sipp and against another SipEndpoint, on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callplane.sip.endpoint import (
    Answered,
    CallState,
    Ended,
    Failed,
    IncomingCall,
    Reinvited,
    Ringing,
    SipCallEvent,
    SipEndpoint,
    Trying,
)
from callplane.sip.message import SipRequest, SipResponse, parse_message
from callplane.sip.sdp import build_offer, negotiate_answer, parse_answer

pytestmark = pytest.mark.e2e

HOST = "127.0.0.1"
SIPP = shutil.which("sipp")
needs_sipp = pytest.mark.skipif(
    SIPP is None, reason="sipp (Debian package sip-tester) is not installed"
)


def free_udp_port(used: set[int] | None = None, *, even: bool = False) -> int:
    """A free UDP port in 15060-15999 (the range these tests may use)."""
    used = used if used is not None else set()
    for _ in range(200):
        p = random.randrange(15060, 15990)
        if even:
            p &= ~1
        if p in used:
            continue
        ok = True
        for q in (p, p + 1, p + 2, p + 3) if even else (p,):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind((HOST, q))
                except OSError:
                    ok = False
                    break
        if ok:
            used.add(p)
            return p
    raise RuntimeError("no free port")


async def next_event(call: object, within: float = 5.0) -> SipCallEvent:
    ev = await asyncio.wait_for(call.events.get(), within)  # type: ignore[attr-defined]
    return ev  # type: ignore[no-any-return]


async def until(call: object, kind: type, within: float = 8.0) -> SipCallEvent:
    """Skip events until one of `kind` (fails on a terminal event of another kind)."""
    while True:
        ev = await next_event(call, within)
        if isinstance(ev, kind):
            return ev
        assert not isinstance(ev, Failed | Ended), f"unexpected terminal event {ev}"


class Sipp:
    def __init__(self, proc: asyncio.subprocess.Process, port: int, workdir: Path) -> None:
        self.proc = proc
        self.port = port
        self.workdir = workdir

    async def wait(self, within: float = 15.0) -> int:
        try:
            out, err = await asyncio.wait_for(self.proc.communicate(), within)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise
        rc = self.proc.returncode
        assert rc is not None
        if rc != 0:
            logs = "\n".join(
                p.read_text(errors="replace")[-3000:] for p in self.workdir.glob("*.log")
            )
            print("sipp stdout:", out.decode(errors="replace")[-3000:])
            print("sipp stderr:", err.decode(errors="replace")[-3000:])
            print("sipp logs:", logs)
        return rc


async def start_sipp(
    workdir: Path,
    *args: str,
    scenario: str | None = None,
    remote: str | None = None,
    port: int | None = None,
) -> Sipp:
    assert SIPP is not None
    port = port or free_udp_port()
    mport = free_udp_port({port}, even=True)
    cmd = [SIPP]
    if remote:
        cmd.append(remote)
    if scenario is not None:
        path = workdir / "scenario.xml"
        path.write_text(scenario)
        cmd += ["-sf", str(path)]
    cmd += [
        "-i",
        HOST,
        "-p",
        str(port),
        "-mi",
        HOST,
        "-mp",
        str(mport),
        "-m",
        "1",
        "-nostdin",
        "-timeout",
        "20s",
        "-timeout_error",
        "-trace_err",
        *args,
    ]
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=workdir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    if remote is None:
        # Wait until sipp has bound its SIP port (a UAS must listen before we call).
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind((HOST, port))
                except OSError:
                    break
            if proc.returncode is not None:
                break
            await asyncio.sleep(0.02)
    return Sipp(proc, port, workdir)


@pytest.fixture
async def ep() -> AsyncIterator[SipEndpoint]:
    e = SipEndpoint(HOST, 0, "callplane-test/1.0")
    await e.start()
    yield e
    await e.stop(timeout=1.0)


def offer() -> bytes:
    return build_offer(HOST, 20000)


# ----------------------------------------------------------------------------- sipp scenarios

BUSY_UAS = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="busy">
  <recv request="INVITE"/>
  <send><![CDATA[
SIP/2.0 486 Busy Here
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <recv request="ACK"/>
</scenario>
"""

RING_FOREVER_UAS = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="ring forever">
  <recv request="INVITE"/>
  <send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Length: 0

]]></send>
  <recv request="CANCEL"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <send><![CDATA[
SIP/2.0 487 Request Terminated
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
CSeq: 1 INVITE
Content-Length: 0

]]></send>
  <recv request="ACK"/>
</scenario>
"""

AUTH_UAS = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="digest challenge">
  <recv request="INVITE"/>
  <send><![CDATA[
SIP/2.0 401 Unauthorized
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
WWW-Authenticate: Digest realm="callplane.test", nonce="47ebe028cda1", opaque="xyz"
Content-Length: 0

]]></send>
  <recv request="ACK"/>
  <recv request="INVITE">
    <action>
      <verifyauth assign_to="authvalid" username="alice" password="s3cret"/>
    </action>
  </recv>
  <nop hide="true" test="authvalid" next="good"/>
  <send><![CDATA[
SIP/2.0 403 Forbidden
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <recv request="ACK" next="end"/>
  <label id="good"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000

]]></send>
  <recv request="ACK"/>
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <label id="end"/>
</scenario>
"""


@needs_sipp
async def test_a_invite_sipp_uas_answers_then_bye(ep: SipEndpoint, tmp_path: Path) -> None:
    sipp = await start_sipp(tmp_path, "-sn", "uas")
    o = offer()
    call = ep.invite(f"sip:service@{HOST}:{sipp.port}", f"sip:alice@{HOST}", o, timeout=10)
    ans = await until(call, Answered)
    assert isinstance(ans, Answered) and ans.sdp
    assert call.state == CallState.CONFIRMED
    chosen = parse_answer(ans.sdp, o)
    assert chosen is not None and chosen.codec == "PCMU" and chosen.remote_ip == HOST
    await call.bye()
    assert await next_event(call) == Ended("local", "bye")
    assert await sipp.wait() == 0


@needs_sipp
async def test_b_sipp_busy_gives_failed_486(ep: SipEndpoint, tmp_path: Path) -> None:
    sipp = await start_sipp(tmp_path, scenario=BUSY_UAS)
    call = ep.invite(f"sip:service@{HOST}:{sipp.port}", f"sip:alice@{HOST}", offer(), timeout=10)
    ev = await until(call, Failed)
    assert ev == Failed(486, "Busy Here", "rejected")
    assert call.state == CallState.ENDED
    assert await sipp.wait() == 0  # sipp got our ACK for the 486


@needs_sipp
async def test_c_ring_timeout_cancels_no_answer(ep: SipEndpoint, tmp_path: Path) -> None:
    sipp = await start_sipp(tmp_path, scenario=RING_FOREVER_UAS)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    call = ep.invite(f"sip:service@{HOST}:{sipp.port}", f"sip:alice@{HOST}", offer(), timeout=1.0)
    ring = await until(call, Ringing)
    assert ring == Ringing(180, None)
    ev = await until(call, Failed)
    assert ev == Failed(408, "timeout", "timeout")
    assert 0.9 < loop.time() - t0 < 4.0
    assert await sipp.wait() == 0  # sipp saw CANCEL, and the ACK for its 487


@needs_sipp
async def test_d_sipp_uac_calls_us_and_hangs_up(ep: SipEndpoint, tmp_path: Path) -> None:
    incoming: asyncio.Queue[IncomingCall] = asyncio.Queue()

    async def on_incoming(call: IncomingCall) -> None:
        await incoming.put(call)
        await call.ringing()
        assert call.remote_sdp is not None
        answer, chosen = negotiate_answer(call.remote_sdp, HOST, 20010)
        assert chosen is not None
        await call.answer(answer)

    ep.on_incoming = on_incoming
    sipp = await start_sipp(tmp_path, "-sn", "uac", "-d", "300", remote=f"{HOST}:{ep.port}")
    call = await asyncio.wait_for(incoming.get(), 5)
    assert call.request_uri.startswith("sip:service@")
    assert call.headers["call-id"] == call.call_id
    assert await next_event(call) == Answered(b"")  # the ACK arrived
    assert call.state == CallState.CONFIRMED
    assert await next_event(call) == Ended("remote", "bye")
    assert await sipp.wait() == 0


@needs_sipp
async def test_e_digest_auth_against_sipp_verifyauth(ep: SipEndpoint, tmp_path: Path) -> None:
    sipp = await start_sipp(tmp_path, scenario=AUTH_UAS)
    call = ep.invite(
        f"sip:service@{HOST}:{sipp.port}",
        f"sip:alice@{HOST}",
        offer(),
        auth=("alice", "s3cret"),
        timeout=10,
    )
    await until(call, Answered)
    await call.bye()
    assert await next_event(call) == Ended("local", "bye")
    assert await sipp.wait() == 0


@needs_sipp
async def test_e_wrong_password_fails(ep: SipEndpoint, tmp_path: Path) -> None:
    sipp = await start_sipp(tmp_path, scenario=AUTH_UAS)
    call = ep.invite(
        f"sip:service@{HOST}:{sipp.port}",
        f"sip:alice@{HOST}",
        offer(),
        auth=("alice", "nope"),
        timeout=10,
    )
    ev = await until(call, Failed)
    assert isinstance(ev, Failed) and ev.code == 403
    assert await sipp.wait() == 0


@needs_sipp
async def test_e_no_credentials_gives_auth_failure(ep: SipEndpoint, tmp_path: Path) -> None:
    sipp = await start_sipp(tmp_path, scenario=AUTH_UAS)
    call = ep.invite(f"sip:service@{HOST}:{sipp.port}", f"sip:alice@{HOST}", offer(), timeout=10)
    ev = await until(call, Failed)
    assert ev == Failed(401, "Unauthorized", "auth")
    sipp.proc.kill()
    await sipp.proc.wait()


# ------------------------------------------------------------------------- callplane to callplane


@pytest.fixture
async def pair() -> AsyncIterator[tuple[SipEndpoint, SipEndpoint]]:
    a = SipEndpoint(HOST, 0, "callplane-a")
    b = SipEndpoint(HOST, 0, "callplane-b")
    await a.start()
    await b.start()
    yield a, b
    await a.stop(timeout=1.0)
    await b.stop(timeout=1.0)


async def test_callplane_to_callplane_answer_and_remote_bye(
    pair: tuple[SipEndpoint, SipEndpoint],
) -> None:
    a, b = pair
    got: asyncio.Queue[IncomingCall] = asyncio.Queue()

    async def on_incoming(call: IncomingCall) -> None:
        await got.put(call)

    b.on_incoming = on_incoming
    o = offer()
    out = a.invite(
        f"sip:bob@{HOST}:{b.port}",
        f"sip:alice@{HOST}",
        o,
        display_name="Alice A",
        headers={"X-Test": "1"},
    )
    inc = await asyncio.wait_for(got.get(), 3)
    assert inc.from_display == "Alice A" and inc.headers["x-test"] == "1"
    assert inc.remote_sdp == o and inc.to_uri == f"sip:bob@{HOST}:{b.port}"
    assert await next_event(out) == Trying()
    await inc.ringing()
    assert await next_event(out) == Ringing(180, None)
    answer, _ = negotiate_answer(o, HOST, 20020)
    await inc.answer(answer)
    assert await next_event(out) == Answered(answer)
    assert await next_event(inc) == Answered(b"")
    assert out.remote_sdp == answer and inc.local_sdp == answer
    assert out.dialog is not None and inc.dialog is not None
    assert out.dialog.remote_tag == inc.local_tag and inc.dialog.remote_tag == out.local_tag
    await inc.bye()
    assert await next_event(inc) == Ended("local", "bye")
    assert await next_event(out) == Ended("remote", "bye")


async def test_callplane_cancel_before_answer(pair: tuple[SipEndpoint, SipEndpoint]) -> None:
    a, b = pair
    got: asyncio.Queue[IncomingCall] = asyncio.Queue()

    async def on_incoming(call: IncomingCall) -> None:
        await call.ringing(sdp=negotiate_answer(call.remote_sdp or b"", HOST, 20030)[0])
        await got.put(call)

    b.on_incoming = on_incoming
    out = a.invite(f"sip:bob@{HOST}:{b.port}", f"sip:alice@{HOST}", offer())
    inc = await asyncio.wait_for(got.get(), 3)
    ring = await until(out, Ringing)
    assert isinstance(ring, Ringing) and ring.code == 183 and ring.sdp  # early media
    await out.cancel()
    assert await until(out, Failed) == Failed(487, "Request Terminated", "cancelled")
    assert await next_event(inc) == Ended("remote", "cancel")


async def test_callplane_reject_and_timeout_without_provisional(
    pair: tuple[SipEndpoint, SipEndpoint],
) -> None:
    a, b = pair

    async def on_incoming(call: IncomingCall) -> None:
        await call.reject(603, "Decline")

    b.on_incoming = on_incoming
    out = a.invite(f"sip:bob@{HOST}:{b.port}", f"sip:alice@{HOST}", offer())
    assert await until(out, Failed) == Failed(603, "Decline", "rejected")


async def test_callplane_ring_timeout(pair: tuple[SipEndpoint, SipEndpoint]) -> None:
    a, b = pair
    got: asyncio.Queue[IncomingCall] = asyncio.Queue()

    async def on_incoming(call: IncomingCall) -> None:
        await call.ringing()
        await got.put(call)

    b.on_incoming = on_incoming
    out = a.invite(f"sip:bob@{HOST}:{b.port}", f"sip:alice@{HOST}", offer(), timeout=0.5)
    inc = await asyncio.wait_for(got.get(), 3)
    assert await until(out, Failed) == Failed(408, "timeout", "timeout")
    assert await next_event(inc) == Ended("remote", "cancel")


async def test_no_on_incoming_gives_480(pair: tuple[SipEndpoint, SipEndpoint]) -> None:
    a, b = pair
    out = a.invite(f"sip:bob@{HOST}:{b.port}", f"sip:alice@{HOST}", offer())
    assert await until(out, Failed) == Failed(480, "Temporarily Unavailable", "rejected")


async def test_stop_byes_confirmed_calls(pair: tuple[SipEndpoint, SipEndpoint]) -> None:
    a, b = pair
    got: asyncio.Queue[IncomingCall] = asyncio.Queue()

    async def on_incoming(call: IncomingCall) -> None:
        await call.answer(negotiate_answer(call.remote_sdp or b"", HOST, 20040)[0])
        await got.put(call)

    b.on_incoming = on_incoming
    out = a.invite(f"sip:bob@{HOST}:{b.port}", f"sip:alice@{HOST}", offer())
    await until(out, Answered)
    inc = await asyncio.wait_for(got.get(), 3)
    await until(inc, Answered)
    await a.stop(timeout=1.0)
    assert await next_event(out) == Ended("local", "stop")
    assert await next_event(inc) == Ended("remote", "bye")


async def test_stop_cancels_pending_calls(pair: tuple[SipEndpoint, SipEndpoint]) -> None:
    a, b = pair
    got: asyncio.Queue[IncomingCall] = asyncio.Queue()

    async def on_incoming(call: IncomingCall) -> None:
        await call.ringing()
        await got.put(call)

    b.on_incoming = on_incoming
    out = a.invite(f"sip:bob@{HOST}:{b.port}", f"sip:alice@{HOST}", offer())
    inc = await asyncio.wait_for(got.get(), 3)
    await until(out, Ringing)
    await a.stop(timeout=1.0)
    ev = await until(out, Failed)
    assert isinstance(ev, Failed) and ev.code == 487
    assert await next_event(inc) == Ended("remote", "cancel")


async def test_unreachable_target_times_out_with_timer_b() -> None:
    # Shortened timers are not configurable on the endpoint; check only that the INVITE is
    # retransmitted to a silent peer and that cancel() settles the call.
    a = SipEndpoint(HOST, 0)
    await a.start()
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind((HOST, 0))
    silent.setblocking(False)
    port = silent.getsockname()[1]
    try:
        out = a.invite(f"sip:x@{HOST}:{port}", f"sip:alice@{HOST}", offer())
        await asyncio.sleep(0.7)  # INVITE at 0, retransmission at T1 = 0.5 s
        datagrams = []
        while True:
            try:
                datagrams.append(silent.recv(65535))
            except BlockingIOError:
                break
        assert len(datagrams) == 2 and datagrams[0] == datagrams[1]
        await out.cancel()
        assert await until(out, Failed) == Failed(487, "Request Terminated", "cancelled")
    finally:
        silent.close()
        await a.stop(timeout=0.2)


# ----------------------------------------------------------------------------- raw-socket probes


class RawPeer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[SipRequest | SipResponse] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait(parse_message(data))


async def raw_peer() -> tuple[asyncio.DatagramTransport, RawPeer, int]:
    loop = asyncio.get_running_loop()
    t, p = await loop.create_datagram_endpoint(RawPeer, local_addr=(HOST, 0))
    return t, p, t.get_extra_info("sockname")[1]


def raw_request(
    method: str,
    port: int,
    ep_port: int,
    *,
    to_tag: str = "",
    branch: str = "z9hG4bKraw1",
    cseq: int = 1,
    call_id: str = "raw-call",
    body: bytes = b"",
    extra: str = "",
) -> bytes:
    to = f"<sip:callplane@{HOST}:{ep_port}>" + (f";tag={to_tag}" if to_tag else "")
    head = (
        f"{method} sip:callplane@{HOST}:{ep_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{port};branch={branch};rport\r\n"
        f"From: <sip:raw@{HOST}:{port}>;tag=rawtag\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\nContact: <sip:raw@{HOST}:{port}>\r\nMax-Forwards: 70\r\n{extra}"
    )
    if body:
        head += "Content-Type: application/sdp\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def test_options_answered_with_allow(ep: SipEndpoint) -> None:
    t, peer, port = await raw_peer()
    try:
        t.sendto(raw_request("OPTIONS", port, ep.port), (HOST, ep.port))
        resp = await asyncio.wait_for(peer.queue.get(), 2)
        assert isinstance(resp, SipResponse) and resp.status == 200
        allow = resp.headers.get("Allow") or ""
        assert "INVITE" in allow and "BYE" in allow and "CANCEL" in allow
        assert resp.to.tag
        via = resp.top_via
        assert via.rport == port and via.branch == "z9hG4bKraw1"
        # unknown method -> 405 with Allow; BYE for an unknown dialog -> 481
        t.sendto(raw_request("SUBSCRIBE", port, ep.port, branch="z9hG4bKraw2"), (HOST, ep.port))
        r2 = await asyncio.wait_for(peer.queue.get(), 2)
        assert isinstance(r2, SipResponse) and r2.status == 405 and r2.headers.get("Allow")
        t.sendto(
            raw_request("BYE", port, ep.port, to_tag="nope", branch="z9hG4bKraw3"), (HOST, ep.port)
        )
        r3 = await asyncio.wait_for(peer.queue.get(), 2)
        assert isinstance(r3, SipResponse) and r3.status == 481
        # garbage is ignored, the endpoint keeps working
        t.sendto(b"\x00\xffnot sip at all", (HOST, ep.port))
        t.sendto(raw_request("OPTIONS", port, ep.port, branch="z9hG4bKraw4"), (HOST, ep.port))
        r4 = await asyncio.wait_for(peer.queue.get(), 2)
        assert isinstance(r4, SipResponse) and r4.status == 200
    finally:
        t.close()


async def test_incoming_retransmits_2xx_until_ack_and_handles_reinvite(ep: SipEndpoint) -> None:
    got: asyncio.Queue[IncomingCall] = asyncio.Queue()

    async def on_incoming(call: IncomingCall) -> None:
        await call.answer(negotiate_answer(call.remote_sdp or b"", HOST, 20050)[0])
        await got.put(call)

    ep.on_incoming = on_incoming
    t, peer, port = await raw_peer()
    try:
        body = build_offer(HOST, 4000)
        t.sendto(raw_request("INVITE", port, ep.port, body=body), (HOST, ep.port))
        r100 = await asyncio.wait_for(peer.queue.get(), 2)
        assert isinstance(r100, SipResponse) and r100.status == 100
        ok1 = await asyncio.wait_for(peer.queue.get(), 2)
        assert isinstance(ok1, SipResponse) and ok1.status == 200 and ok1.body
        assert ok1.headers.get("Contact") and ok1.to.tag
        # no ACK: the 200 is retransmitted after T1 (§13.3.1.4)
        ok2 = await asyncio.wait_for(peer.queue.get(), 1.5)
        assert isinstance(ok2, SipResponse) and ok2.status == 200 and ok2.to.tag == ok1.to.tag
        inc = await asyncio.wait_for(got.get(), 1)
        assert inc.state == CallState.ANSWERED
        tag = ok1.to.tag or ""
        t.sendto(
            raw_request("ACK", port, ep.port, to_tag=tag, branch="z9hG4bKack1"), (HOST, ep.port)
        )
        assert await next_event(inc) == Answered(b"")
        # a re-INVITE (hold) is answered with our SDP and reported
        hold = build_offer(HOST, 4000, direction="sendonly")
        t.sendto(
            raw_request(
                "INVITE", port, ep.port, to_tag=tag, branch="z9hG4bKre1", cseq=2, body=hold
            ),
            (HOST, ep.port),
        )
        r = await asyncio.wait_for(peer.queue.get(), 2)
        assert isinstance(r, SipResponse) and r.status == 200 and r.body == inc.local_sdp
        assert await next_event(inc) == Reinvited(hold)
        assert inc.remote_sdp == hold
        t.sendto(
            raw_request("ACK", port, ep.port, to_tag=tag, branch="z9hG4bKack2", cseq=2),
            (HOST, ep.port),
        )
        # an out-of-order CSeq gets 500 (§12.2.2)
        t.sendto(
            raw_request("INFO", port, ep.port, to_tag=tag, branch="z9hG4bKinfo", cseq=1),
            (HOST, ep.port),
        )
        r500 = await asyncio.wait_for(peer.queue.get(), 2)
        assert isinstance(r500, SipResponse) and r500.status == 500
        # retransmissions of the 200 have stopped
        await asyncio.sleep(1.2)
        assert peer.queue.empty()
        await inc.bye()
        bye = await asyncio.wait_for(peer.queue.get(), 2)
        assert isinstance(bye, SipRequest) and bye.method == "BYE" and bye.to.tag == "rawtag"
        assert bye.uri == f"sip:raw@{HOST}:{port}"
    finally:
        t.close()


async def test_require_unknown_extension_gets_420(ep: SipEndpoint) -> None:
    async def on_incoming(call: IncomingCall) -> None:  # pragma: no cover - must not be called
        raise AssertionError

    ep.on_incoming = on_incoming
    t, peer, port = await raw_peer()
    try:
        t.sendto(raw_request("INVITE", port, ep.port, extra="Require: 100rel\r\n"), (HOST, ep.port))
        r = await asyncio.wait_for(peer.queue.get(), 2)
        assert isinstance(r, SipResponse) and r.status == 420
        assert r.headers.get("Unsupported") == "100rel"
    finally:
        t.close()


async def test_malformed_request_gets_400(ep: SipEndpoint) -> None:
    t, peer, port = await raw_peer()
    try:
        bad = raw_request("OPTIONS", port, ep.port).replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE")
        t.sendto(bad, (HOST, ep.port))
        r = await asyncio.wait_for(peer.queue.get(), 2)
        assert isinstance(r, SipResponse) and r.status == 400 and "CSeq" in r.reason
    finally:
        t.close()


async def test_uac_re_acks_retransmitted_2xx(ep: SipEndpoint) -> None:
    """A UAS whose ACK was 'lost' retransmits its 200; we must ACK each copy (§13.2.2.4)."""
    t, peer, port = await raw_peer()
    try:
        call = ep.invite(f"sip:raw@{HOST}:{port}", f"sip:alice@{HOST}", offer())
        inv = await asyncio.wait_for(peer.queue.get(), 2)
        assert isinstance(inv, SipRequest) and inv.method == "INVITE"
        assert inv.headers.get("Max-Forwards") == "70"
        assert inv.headers.get("User-Agent") == "callplane-test/1.0"
        assert "INVITE" in (inv.headers.get("Allow") or "")
        assert inv.contacts[0].sip_uri.port == ep.port
        answer = negotiate_answer(inv.body, HOST, 4002)[0]
        ok = (
            "SIP/2.0 200 OK\r\n"
            + "".join(f"Via: {v}\r\n" for v in inv.headers.get_all("Via"))
            + f"From: {inv.headers.get('From')}\r\nTo: {inv.headers.get('To')};tag=uas1\r\n"
            + f"Call-ID: {inv.call_id}\r\nCSeq: {inv.cseq}\r\n"
            + f"Contact: <sip:raw@{HOST}:{port}>\r\nContent-Type: application/sdp\r\n"
            + f"Content-Length: {len(answer)}\r\n\r\n"
        ).encode() + answer
        t.sendto(ok, (HOST, ep.port))
        ack1 = await asyncio.wait_for(peer.queue.get(), 2)
        assert isinstance(ack1, SipRequest) and ack1.method == "ACK"
        assert ack1.cseq.seq == inv.cseq.seq and ack1.to.tag == "uas1"
        assert ack1.top_via.branch != inv.top_via.branch  # ACK for 2xx is its own transaction
        assert await until(call, Answered) == Answered(answer)
        t.sendto(ok, (HOST, ep.port))
        ack2 = await asyncio.wait_for(peer.queue.get(), 2)
        assert isinstance(ack2, SipRequest) and ack2.method == "ACK"
        assert ack2.to_bytes() == ack1.to_bytes()
        # a 200 from another fork is ACKed and then BYEd
        t.sendto(ok.replace(b"tag=uas1", b"tag=uas2"), (HOST, ep.port))
        ack3 = await asyncio.wait_for(peer.queue.get(), 2)
        bye3 = await asyncio.wait_for(peer.queue.get(), 2)
        assert isinstance(ack3, SipRequest) and ack3.method == "ACK" and ack3.to.tag == "uas2"
        assert isinstance(bye3, SipRequest) and bye3.method == "BYE" and bye3.to.tag == "uas2"
        assert call.state == CallState.CONFIRMED
    finally:
        t.close()


# ----------------------------------------------------------------------------- crash recovery


async def answered_pair(
    a: SipEndpoint, b: SipEndpoint
) -> tuple[object, IncomingCall, list[dict[str, object]], list[dict[str, object]]]:
    """a calls b, b answers; each side's saved dialog states, as the engine keeps them."""
    got: asyncio.Queue[IncomingCall] = asyncio.Queue()

    async def on_incoming(call: IncomingCall) -> None:
        await got.put(call)

    b.on_incoming = on_incoming
    out = a.invite(f"sip:bob@{HOST}:{b.port}", f"sip:alice@{HOST}", offer())
    out_saved: list[dict[str, object]] = []
    out.on_dialog = out_saved.append
    inc = await asyncio.wait_for(got.get(), 3)
    inc_saved: list[dict[str, object]] = []
    inc.on_dialog = inc_saved.append
    answer, _ = negotiate_answer(offer(), HOST, 20020)
    await inc.answer(answer)
    assert inc_saved, "the UAS saves its dialog when it sends the 200"
    await until(out, Answered)
    await until(inc, Answered)
    assert out_saved, "the UAC saves its dialog when the 2xx confirms it"
    return out, inc, out_saved, inc_saved


async def test_a_restarted_endpoint_ends_an_orphaned_dialog_from_its_saved_state(
    pair: tuple[SipEndpoint, SipEndpoint],
) -> None:
    a, b = pair
    out, inc, out_saved, inc_saved = await answered_pair(a, b)
    assert out_saved[-1]["addr"] == [HOST, b.port] and inc_saved[-1]["addr"] == [HOST, a.port]
    # A re-INVITE takes a CSeq number: the saved state follows, so the BYE's CSeq stays in order.
    before = int(str(out_saved[-1]["next_cseq"]))
    await out.reinvite(offer())  # type: ignore[attr-defined]
    assert int(str(out_saved[-1]["next_cseq"])) == before + 1

    reborn = SipEndpoint(HOST, 0, "callplane-restarted")  # a's process after kill -9
    await reborn.start()
    try:
        response = await reborn.bye_orphan(json_round_trip(out_saved[-1]))
        assert response.status == 200
        assert await until(inc, Ended) == Ended("remote", "bye")
    finally:
        await reborn.stop(timeout=1.0)


async def test_a_restarted_uas_ends_the_caller_s_dialog(
    pair: tuple[SipEndpoint, SipEndpoint],
) -> None:
    a, b = pair
    out, _inc, _out_saved, inc_saved = await answered_pair(a, b)
    reborn = SipEndpoint(HOST, 0, "callplane-restarted")
    await reborn.start()
    try:
        response = await reborn.bye_orphan(json_round_trip(inc_saved[-1]))
        assert response.status == 200
        assert await until(out, Ended) == Ended("remote", "bye")
    finally:
        await reborn.stop(timeout=1.0)


async def test_orphan_bye_is_retransmitted_and_any_final_response_ends_it(
    ep: SipEndpoint,
) -> None:
    """Timer E resends the BYE until a response comes; a 481 (the peer gave up on the dialog)
    is as final as a 200."""
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind((HOST, 0))
    peer.setblocking(False)
    port = peer.getsockname()[1]
    state = {
        "call_id": "orphan@127.0.0.1",
        "local_tag": "ours",
        "remote_tag": "theirs",
        "local_uri": "<sip:callplane@127.0.0.1>",
        "remote_uri": "<sip:bob@127.0.0.1>",
        "remote_target": f"sip:bob@{HOST}:{port}",
        "route_set": [],
        "next_cseq": 7,
        "is_uac": True,
        "addr": [HOST, port],
    }
    loop = asyncio.get_running_loop()
    try:
        bye = asyncio.create_task(ep.bye_orphan(state))
        first, _ = await asyncio.wait_for(loop.sock_recvfrom(peer, 4096), 2)
        second, source = await asyncio.wait_for(loop.sock_recvfrom(peer, 4096), 2)  # ignored 1st
        assert first == second
        req = parse_message(second)
        assert isinstance(req, SipRequest) and req.method == "BYE"
        assert req.cseq.seq == 7 and req.call_id == "orphan@127.0.0.1"
        assert req.from_.tag == "ours" and req.to.tag == "theirs"
        h = req.headers
        resp = (
            "SIP/2.0 481 Call/Transaction Does Not Exist\r\n"
            f"Via: {h.get('Via')}\r\nFrom: {h.get('From')}\r\nTo: {h.get('To')}\r\n"
            f"Call-ID: {req.call_id}\r\nCSeq: 7 BYE\r\nContent-Length: 0\r\n\r\n"
        )
        await loop.sock_sendto(peer, resp.encode(), source)
        final = await asyncio.wait_for(bye, 2)
        assert isinstance(final, SipResponse) and final.status == 481
    finally:
        peer.close()


def json_round_trip(state: dict[str, object]) -> dict[str, object]:
    return json.loads(json.dumps(state))  # type: ignore[no-any-return]
