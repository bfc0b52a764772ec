"""Bridging SIP against sipp (a third-party implementation): re-INVITE hold answered with
a=recvonly, REFER answered by sipp with NOTIFY sipfrags, REFER sent by sipp to us.  The
scenarios are in tests/sip/scenarios/."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_sip_endpoint_e2e import HOST, needs_sipp, offer, start_sipp, until

from callplane.sip.endpoint import (
    Answered,
    Ended,
    IncomingCall,
    ReferProgress,
    Referred,
    Reinvited,
    SipEndpoint,
)
from callplane.sip.sdp import negotiate_answer, offered_direction

pytestmark = [pytest.mark.e2e, needs_sipp]

SCENARIOS = Path(__file__).parent / "scenarios"


def scenario(name: str) -> str:
    return (SCENARIOS / name).read_text()


@pytest.fixture
async def ep() -> AsyncIterator[SipEndpoint]:
    e = SipEndpoint(HOST, 0, "callplane-test/1.0")
    await e.start()
    yield e
    await e.stop(timeout=1.0)


async def test_sipp_reinvite_sendonly_gets_recvonly(ep: SipEndpoint, tmp_path: Path) -> None:
    sipp = await start_sipp(tmp_path, scenario=scenario("uas_reinvite_hold.xml"))
    call = ep.invite(f"sip:service@{HOST}:{sipp.port}", f"sip:alice@{HOST}", offer(), timeout=10)
    await until(call, Answered)
    ev = await until(call, Reinvited)
    assert isinstance(ev, Reinvited) and offered_direction(ev.sdp) == "sendonly"
    assert call.local_sdp is not None and offered_direction(call.local_sdp) == "recvonly"
    await asyncio.sleep(0.2)  # let sipp's ACK arrive before the BYE
    await call.bye()
    assert await sipp.wait() == 0  # sipp checked a=recvonly in our 200 (check_it)


async def test_sipp_answers_refer_with_digest_and_notifies(ep: SipEndpoint, tmp_path: Path) -> None:
    sipp = await start_sipp(tmp_path, scenario=scenario("uas_refer_notify.xml"))
    call = ep.invite(f"sip:service@{HOST}:{sipp.port}", f"sip:alice@{HOST}", offer(), timeout=10)
    await until(call, Answered)
    handle = await call.refer(f"sip:carol@{HOST}:5099", auth=("alice", "s3cret"))
    assert (handle.code, handle.reason) == (202, "Accepted")  # 403 if sipp's verifyauth failed
    got = [p async for p in handle]
    assert got == [ReferProgress(100, "Trying", False), ReferProgress(200, "OK", True)]
    await call.bye()
    assert await sipp.wait() == 0


async def test_sipp_refer_with_wrong_password_is_reported(ep: SipEndpoint, tmp_path: Path) -> None:
    sipp = await start_sipp(tmp_path, scenario=scenario("uas_refer_notify.xml"))
    call = ep.invite(f"sip:service@{HOST}:{sipp.port}", f"sip:alice@{HOST}", offer(), timeout=10)
    await until(call, Answered)
    handle = await call.refer(f"sip:carol@{HOST}:5099", auth=("alice", "wrong"))
    assert handle.code == 403
    assert [p async for p in handle] == [ReferProgress(403, "Forbidden", True)]
    await call.bye()
    assert await sipp.wait() == 0


async def test_sipp_uac_refers_us(ep: SipEndpoint, tmp_path: Path) -> None:
    referred: asyncio.Queue[Referred] = asyncio.Queue()

    async def on_incoming(call: IncomingCall) -> None:
        await call.answer(negotiate_answer(call.remote_sdp or b"", HOST, 20300)[0])
        ev = await until(call, Referred, within=10)
        assert isinstance(ev, Referred)
        await referred.put(ev)
        assert await until(call, Ended, within=10) == Ended("remote", "bye")

    ep.on_incoming = on_incoming
    sipp = await start_sipp(
        tmp_path, scenario=scenario("uac_refers_us.xml"), remote=f"{HOST}:{ep.port}"
    )
    ev = await asyncio.wait_for(referred.get(), 10)
    assert ev.refer_to == f"sip:carol@{HOST}:5099"
    assert ev.referred_by is not None and ev.referred_by.startswith("sip:sipp@")
    await ev.handle.accept()
    await asyncio.sleep(0.1)
    await ev.handle.notify(200, "OK")
    assert await sipp.wait() == 0  # sipp checked 202, both NOTIFYs' sipfrag and states
