"""SIP REFER both ways, and hold / unhold re-INVITEs from the far end, over real SIP."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from farend import FarEnd, peaks, tone
from harness import Receiver, Server, Sipp, sipp_available
from harness import until as wait_for

from callplane import AsyncRestClient
from callplane.sip.sdp import bump_version, offered_direction, with_direction

requires_sipp = pytest.mark.skipif(not sipp_available(), reason="sipp (Debian sip-tester) missing")
SIP_SCENARIOS = Path(__file__).parent.parent / "sip" / "scenarios"
HANG_ON = {"version": "1.0.0", "sections": {"main": [{"sleep": -1}]}}
CAROL = "sip:carol@127.0.0.1:5099"  # what uas_refer_notify.xml expects in Refer-To


def refer_events(receiver: Receiver) -> list[dict[str, object]]:
    return [e["params"] for e in receiver.events("/refer")]


@requires_sipp
async def test_rest_refer_with_digest_follows_the_notify_sipfrags(
    server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    sipp = Sipp(["-sf", str(SIP_SCENARIOS / "uas_refer_notify.xml"), "-m", "1"]).start(tmp_path)
    try:
        async with AsyncRestClient(server.project, server.token, server.host) as client:
            leg = await client.calling.dial(
                from_="+15551230000", to=f"sip:service@{sipp.uri_host}", swml=HANG_ON
            )
            await asyncio.to_thread(server.wait_status, leg["id"], "answered")
            await client.calling.refer(
                leg["id"],
                device={
                    "type": "sip",
                    "params": {"to": CAROL, "username": "alice", "password": "s3cret"},
                },
                status_url=receiver.url("/refer"),
            )
            await wait_for(lambda: len(refer_events(receiver)) >= 2, 10, "the refer's events")
            await client.calling.end(leg["id"])
        assert sipp.wait(10) == 0
    finally:
        sipp.stop()
    first, last = refer_events(receiver)[:2]
    assert first["state"] == "inProgress" and first["sip_refer_response_code"] == "202"
    assert last["state"] == "success"
    assert last["sip_refer_to"] == CAROL
    assert last["sip_notify_response_code"] == "200"


@requires_sipp
async def test_swml_sip_refer_sets_its_variables(
    server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    sipp = Sipp(["-sf", str(SIP_SCENARIOS / "uas_refer_notify.xml"), "-m", "1"]).start(tmp_path)
    script = {
        "version": "1.0.0",
        "sections": {
            "main": [
                {"sip_refer": {"to_uri": CAROL, "username": "alice", "password": "s3cret"}},
                {
                    "request": {
                        "url": receiver.url("/vars"),
                        "method": "POST",
                        "body": {
                            "result": "${sip_refer_result}",
                            "code": "${sip_refer_response_code}",
                            "to_code": "${sip_refer_to_response_code}",
                        },
                    }
                },
                {"hangup": {}},
            ]
        },
    }
    try:
        async with AsyncRestClient(server.project, server.token, server.host) as client:
            await client.calling.dial(
                from_="+15551230000", to=f"sip:service@{sipp.uri_host}", swml=script
            )
            await wait_for(lambda: receiver.events("/vars"), 15, "the sip_refer variables")
        assert sipp.wait(10) == 0
    finally:
        sipp.stop()
    assert receiver.events("/vars")[0] == {"result": "success", "code": "202", "to_code": "200"}


async def test_a_refer_from_the_bridged_far_end_hands_the_bridge_to_its_target(
    server: Server, receiver: Receiver, far_end: FarEnd, far_b: FarEnd, far_c: FarEnd
) -> None:
    script = {
        "version": "1.0.0",
        "sections": {
            "main": [{"connect": {"to": far_b.uri, "status_url": receiver.url("/connect")}}]
        },
    }
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(from_="+15551230000", to=far_end.uri, swml=script)
        await asyncio.wait_for(far_b.answered.wait(), 10)
        await asyncio.sleep(0.3)
        # B blind-transfers A to C, as a phone's transfer key does.
        handle = await far_b.calls[0].refer(far_c.uri)
        assert handle.code == 202
        await asyncio.wait_for(far_c.answered.wait(), 10)
        progress = [p async for p in handle]
        assert progress[-1].status_code == 200 and progress[-1].final
        await far_b.calls[0].bye()  # the transferor leaves, as it does after NOTIFY 200
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        await asyncio.gather(far_c.play(tone(1800, 1.0)), far_end.play(tone(700, 1.0)))
        heard_by_a = far_end.audio(t0 + 0.2, time.monotonic())
        heard_by_c = far_c.audio(t0 + 0.2, time.monotonic())
        assert [round(f / 10) * 10 for f in peaks(heard_by_a, 1)] == [1800]
        assert [round(f / 10) * 10 for f in peaks(heard_by_c, 1)] == [700]
        assert server.call_status(leg["id"]) == "answered"
        events = (
            await asyncio.to_thread(server.get, f"/api/calling/calls/{leg['id']}/events")
        ).json()["data"]
        transferred = [
            e["params"]
            for e in events
            if e["event_type"] == "calling.call.refer" and e["params"]["state"] == "transferred"
        ]
        assert transferred and transferred[0]["sip_refer_to"] == far_c.uri
        await client.calling.end(leg["id"])
        await wait_for(lambda: far_c.calls[0].ended, 10, "C to be hung up with A")


async def test_a_refer_on_a_call_that_is_not_bridged_is_declined(
    server: Server, far_end: FarEnd, far_b: FarEnd
) -> None:
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(from_="+15551230000", to=far_end.uri, swml=HANG_ON)
        await asyncio.wait_for(far_end.answered.wait(), 10)
        await asyncio.sleep(0.2)
        handle = await far_end.calls[0].refer(far_b.uri)
        assert handle.code == 603
        events = (
            await asyncio.to_thread(server.get, f"/api/calling/calls/{leg['id']}/events")
        ).json()["data"]
        declined = [e["params"] for e in events if e["event_type"] == "calling.call.refer"]
        assert declined[0]["state"] == "declined" and "not bridged" in declined[0]["reason"]
        assert not far_b.answered.is_set()
        await client.calling.end(leg["id"])


async def test_hold_and_unhold_from_the_far_end_stop_and_restart_our_media(
    server: Server, far_end: FarEnd
) -> None:
    script = {"version": "1.0.0", "sections": {"main": [{"play": {"url": "ring:60:us"}}]}}
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(from_="+15551230000", to=far_end.uri, swml=script)
        await asyncio.wait_for(far_end.answered.wait(), 10)
        await asyncio.sleep(0.4)
        call = far_end.calls[0]
        assert call.local_sdp is not None
        hold = bump_version(with_direction(call.local_sdp, "sendonly"))
        answer = await call.reinvite(hold)
        assert offered_direction(answer) == "recvonly"
        await asyncio.sleep(0.1)
        held_from = time.monotonic()
        await asyncio.sleep(0.6)
        resume_asked = time.monotonic()
        during_hold = [p for p in far_end.packets if held_from <= p.at < resume_asked]
        resume = bump_version(with_direction(hold, "sendrecv"))
        answer = await call.reinvite(resume)
        assert offered_direction(answer) == "sendrecv"
        await asyncio.sleep(0.6)
        after = [p for p in far_end.packets if p.at >= resume_asked]
        await client.calling.end(leg["id"])
    assert during_hold == []
    assert len(after) >= 25
    assert after[0].marker
