"""Bridging over real SIP: SWML `connect`, REST transfer to a SIP URI, `calling.disconnect`.

Two far ends (callplane's own SIP stack in the test process, capturing raw RTP) stand for the
two parties: callplane dials A, A's script connects to B, and each far end's captured audio is
checked for the other one's tone.
"""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile
from farend import FarEnd, peaks, rms_db, tone, ulaw_decode, ulaw_encode
from harness import SCENARIOS, Receiver, Server, Sipp, sipp_available, swml
from harness import until as wait_for

from callplane import AsyncRestClient

requires_sipp = pytest.mark.skipif(not sipp_available(), reason="sipp (Debian sip-tester) missing")


def connect_states(receiver: Receiver) -> list[str]:
    return [e["params"]["connect_state"] for e in receiver.events("/connect")]


async def test_audio_flows_both_ways_through_a_bridge_and_the_script_goes_on(
    server: Server, receiver: Receiver, far_end: FarEnd, far_b: FarEnd
) -> None:
    script = swml(
        {"connect": {"to": far_b.uri, "status_url": receiver.url("/connect")}},
        {"set": {"after": "${connect_result}"}},
        {"play": {"url": "silence:0.3"}},
        {"play": {"urls": ["ring:uk"]}},
    )
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(from_="+15551230000", to=far_end.uri, swml=script)
        await asyncio.wait_for(far_end.answered.wait(), 10)
        await asyncio.wait_for(far_b.answered.wait(), 10)
        await wait_for(lambda: "connected" in connect_states(receiver), 10, "connected")
        t0 = time.monotonic()
        await asyncio.gather(far_end.play(tone(600, 1.5)), far_b.play(tone(1400, 1.5)))
        t1 = time.monotonic()
        heard_by_a = far_end.audio(t0 + 0.3, t1)
        heard_by_b = far_b.audio(t0 + 0.3, t1)
        assert [round(f / 10) * 10 for f in peaks(heard_by_a, 1)] == [1400]
        assert [round(f / 10) * 10 for f in peaks(heard_by_b, 1)] == [600]
        assert rms_db(heard_by_a) > 70  # about -13 dBFS: the tone itself, not leakage

        # The peer is visible on the call while bridged.
        view = (await asyncio.to_thread(server.get, f"/api/calling/calls/{leg['id']}")).json()
        peer_id = view["peer"]["call_id"]
        peer = (await asyncio.to_thread(server.get, f"/api/calling/calls/{peer_id}")).json()
        assert peer["parent_id"] == leg["id"] and peer["status"] == "answered"

        # B hangs up: the bridge ends and A's script goes on (UK ringback after the connect).
        await far_b.calls[0].bye()
        await wait_for(lambda: "disconnected" in connect_states(receiver), 10, "disconnected")
        await asyncio.sleep(1.0)
        t2 = time.monotonic()
        await asyncio.sleep(0.8)
        ring = far_end.audio(t2, time.monotonic())
        assert [round(f / 10) * 10 for f in peaks(ring, 2)] == [400, 450]
        await client.calling.end(leg["id"])
    states = connect_states(receiver)
    assert states == ["connecting", "connected", "disconnected"]
    connected = receiver.events("/connect")[1]["params"]
    assert connected["peer"]["call_id"] == peer_id
    assert connected["peer"]["device"]["type"] == "sip"


async def test_the_bridge_adds_little_delay(
    server: Server, receiver: Receiver, far_end: FarEnd, far_b: FarEnd
) -> None:
    script = swml({"connect": {"to": far_b.uri, "status_url": receiver.url("/connect")}})
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(from_="+15551230000", to=far_end.uri, swml=script)
        await asyncio.wait_for(far_b.answered.wait(), 10)
        await wait_for(lambda: "connected" in connect_states(receiver), 10, "connected")
        await far_end.silence(0.4)
        click = np.zeros(8000, dtype=np.int16)
        click[:160] = tone(1000, 0.02, 0.8)
        sent_at = time.monotonic()
        await far_end.play(click)
        loud = [
            p
            for p in far_b.packets
            if p.at >= sent_at and p.pt == 0 and np.abs(ulaw_decode(p.payload)).max() > 8000
        ]
        await client.calling.end(leg["id"])
    assert loud, "the click never reached B"
    delay = loud[0].at - sent_at
    print(f"one-way delay through the bridge: {delay * 1000:.1f} ms")
    assert delay < 0.080


async def test_caller_hanging_up_hangs_up_the_callee(
    server: Server, receiver: Receiver, far_end: FarEnd, far_b: FarEnd
) -> None:
    script = swml({"connect": {"to": far_b.uri, "status_url": receiver.url("/connect")}})
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        await client.calling.dial(from_="+15551230000", to=far_end.uri, swml=script)
        await asyncio.wait_for(far_b.answered.wait(), 10)
        await wait_for(lambda: "connected" in connect_states(receiver), 10, "connected")
        await far_end.calls[0].bye()
        await wait_for(lambda: far_b.calls[0].ended, 10, "B to get a BYE")
    await wait_for(lambda: "disconnected" in connect_states(receiver), 10, "disconnected")


@requires_sipp
async def test_serial_tries_the_next_destination_when_the_first_is_busy(
    server: Server, receiver: Receiver, far_end: FarEnd, far_b: FarEnd, tmp_path: Path
) -> None:
    busy = Sipp(["-sf", str(SCENARIOS / "busy.xml"), "-m", "1"]).start(tmp_path)
    try:
        script = swml(
            {
                "connect": {
                    "serial": [{"to": f"sip:busy@{busy.uri_host}"}, {"to": far_b.uri}],
                    "status_url": receiver.url("/connect"),
                }
            }
        )
        async with AsyncRestClient(server.project, server.token, server.host) as client:
            leg = await client.calling.dial(from_="+15551230000", to=far_end.uri, swml=script)
            await asyncio.wait_for(far_b.answered.wait(), 15)
            await wait_for(lambda: "connected" in connect_states(receiver), 10, "connected")
            assert busy.wait(10) == 0
            await client.calling.end(leg["id"])
    finally:
        busy.stop()


@requires_sipp
async def test_parallel_first_answer_wins_and_the_others_are_cancelled(
    server: Server, receiver: Receiver, far_end: FarEnd, far_b: FarEnd, tmp_path: Path
) -> None:
    ringing = Sipp(["-sf", str(SCENARIOS / "ring_forever.xml"), "-m", "1"]).start(tmp_path)
    try:
        script = swml(
            {
                "connect": {
                    "parallel": [{"to": f"sip:slow@{ringing.uri_host}"}, {"to": far_b.uri}],
                    "status_url": receiver.url("/connect"),
                }
            }
        )
        async with AsyncRestClient(server.project, server.token, server.host) as client:
            leg = await client.calling.dial(from_="+15551230000", to=far_end.uri, swml=script)
            await asyncio.wait_for(far_b.answered.wait(), 15)
            await wait_for(lambda: "connected" in connect_states(receiver), 10, "connected")
            # ring_forever.xml expects a CANCEL and answers it with 487: sipp exits 0.
            assert ringing.wait(10) == 0
            await client.calling.end(leg["id"])
    finally:
        ringing.stop()


@requires_sipp
async def test_timeout_fails_with_a_reason_and_ringback_is_heard_meanwhile(
    server: Server, receiver: Receiver, far_end: FarEnd, tmp_path: Path
) -> None:
    ringing = Sipp(["-sf", str(SCENARIOS / "ring_forever.xml"), "-m", "1"]).start(tmp_path)
    try:
        script = swml(
            {
                "connect": {
                    "to": f"sip:slow@{ringing.uri_host}",
                    "timeout": 3,
                    "status_url": receiver.url("/connect"),
                }
            },
            {
                "request": {
                    "url": receiver.url("/vars"),
                    "method": "POST",
                    "body": {"result": "${connect_result}", "reason": "${connect_failed_reason}"},
                }
            },
            {"hangup": {}},
        )
        async with AsyncRestClient(server.project, server.token, server.host) as client:
            await client.calling.dial(from_="+15551230000", to=far_end.uri, swml=script)
            await asyncio.wait_for(far_end.answered.wait(), 10)
            start = time.monotonic()
            await asyncio.sleep(1.8)
            ringback = far_end.audio(start + 0.2, start + 1.8)
            await wait_for(lambda: receiver.events("/vars"), 15, "the connect result")
    finally:
        ringing.stop()
    assert [round(f / 10) * 10 for f in peaks(ringback, 2)] == [440, 480]
    assert receiver.events("/vars")[0] == {"result": "failed", "reason": "no_answer"}
    assert connect_states(receiver) == ["connecting", "failed"]


async def test_disconnect_unbridges_and_both_legs_stay_up(
    server: Server, receiver: Receiver, far_end: FarEnd, far_b: FarEnd
) -> None:
    script = swml(
        {"connect": {"to": far_b.uri, "status_url": receiver.url("/connect")}},
        {"play": {"url": "ring:uk"}},
    )
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(from_="+15551230000", to=far_end.uri, swml=script)
        await wait_for(lambda: "connected" in connect_states(receiver), 10, "connected")
        await client.calling.disconnect(leg["id"])
        await wait_for(lambda: "disconnected" in connect_states(receiver), 10, "disconnected")
        t = time.monotonic()
        await asyncio.sleep(1.0)  # UK ringback: 0.4 s on, 0.2 off, 0.4 on, 2 s off
        assert [round(f / 10) * 10 for f in peaks(far_end.audio(t, t + 1.0), 2)] == [
            400,
            450,
        ]
        assert not far_b.calls[0].ended
        assert server.call_status(leg["id"]) == "answered"
        with pytest.raises(Exception, match="not bridged"):
            await client.calling.disconnect(leg["id"])
        await client.calling.end(leg["id"])


async def test_rest_transfer_to_a_sip_uri_bridges_the_call(
    server: Server, far_end: FarEnd, far_b: FarEnd
) -> None:
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(
            from_="+15551230000", to=far_end.uri, swml=swml({"sleep": -1})
        )
        await asyncio.wait_for(far_end.answered.wait(), 10)
        await client.calling.transfer(leg["id"], dest=far_b.uri)
        await asyncio.wait_for(far_b.answered.wait(), 10)
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        await far_b.play(tone(1700, 1.0))
        assert [
            round(f / 10) * 10 for f in peaks(far_end.audio(t0 + 0.2, time.monotonic()), 1)
        ] == [1700]
        # The callee hangs up: the transferred call ends with it.
        await far_b.calls[0].bye()
        await asyncio.to_thread(server.wait_status, leg["id"], "ended")


async def test_answer_on_bridge_answers_the_caller_only_when_the_callee_answers(
    make_server: object, receiver: Receiver, far_b: FarEnd
) -> None:
    far_b.answer_delay = 2.0
    route = receiver.serve_swml(
        "/agent",
        swml({"connect": {"to": far_b.uri, "answer_on_bridge": True}}),
    )
    server: Server = make_server(routes={"agent": route})  # type: ignore[operator]
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        # callplane calls its own route: the outbound leg is the caller of the connect.
        leg = await client.calling.dial(
            from_="+15551230000",
            to="agent",
            swml=swml({"sleep": -1}),
            status_url=receiver.url("/status"),
            status_events=["ringing", "answered"],
        )
        await asyncio.to_thread(server.wait_status, leg["id"], "answered", timeout=15)
        answered_seen = time.monotonic()
        assert far_b.answered_at is not None
        await client.calling.end(leg["id"])
    states = receiver.call_states("/status", leg["id"])
    assert states[:2] == ["ringing", "answered"]
    # No 200 reached the caller before the callee answered (the callee took 2 s to).
    answered_hit = next(
        h for h in receiver.hits if h.path == "/status" and "answered" in str(h.body)
    )
    answered_hit_mono = answered_hit.at - (time.time() - time.monotonic())  # Hit.at is wall time
    assert answered_hit_mono >= far_b.answered_at - 0.05
    assert answered_seen - far_b.answered_at < 2.0


async def test_record_both_of_a_bridged_call_holds_both_parties(
    server: Server, receiver: Receiver, far_end: FarEnd, far_b: FarEnd
) -> None:
    script = swml({"connect": {"to": far_b.uri, "status_url": receiver.url("/connect")}})
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(from_="+15551230000", to=far_end.uri, swml=script)
        await wait_for(lambda: "connected" in connect_states(receiver), 10, "connected")
        await client.calling.record(
            leg["id"],
            control_id="both",
            record={"audio": {"format": "wav", "stereo": True, "direction": "both"}},
            status_url=receiver.url("/rec"),
        )
        await asyncio.gather(far_end.play(tone(600, 1.5)), far_b.play(tone(1400, 1.5)))
        await client.calling.record_stop(leg["id"], control_id="both")
        await wait_for(
            lambda: [e for e in receiver.events("/rec") if e["params"]["state"] == "finished"],
            10,
            "the recording",
        )
        url = next(
            e["params"]["url"]
            for e in receiver.events("/rec")
            if e["params"]["state"] == "finished"
        )
        async with httpx.AsyncClient(auth=(server.project, server.token), timeout=10) as http:
            response = await http.get(url)
        await client.calling.end(leg["id"])
    assert response.status_code == 200
    audio, rate = soundfile.read(io.BytesIO(response.content), dtype="float64")
    assert rate == 8000 and audio.shape[1] == 2
    speak, listen = audio[8000:, 0] * 32767, audio[8000:, 1] * 32767  # skip the first second
    # The leg's far end (A) on the speak side, what A hears from the bridge (B) on listen.
    assert [round(f / 10) * 10 for f in peaks(speak[:4000], 1)] == [600]
    assert [round(f / 10) * 10 for f in peaks(listen[:4000], 1)] == [1400]


EARLY_MEDIA_UAS = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="early media, then answer">
  <recv request="INVITE" />
  <send><![CDATA[
SIP/2.0 183 Session Progress
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=sipp 1 1 IN IP4 [local_ip]
s=-
c=IN IP4 [media_ip]
t=0 0
m=audio [rtpstream_audio_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000

]]></send>
  <nop><action><exec rtp_stream="ULAW_FILE,1,0" /></action></nop>
  <pause milliseconds="2500" />
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
o=sipp 1 1 IN IP4 [local_ip]
s=-
c=IN IP4 [media_ip]
t=0 0
m=audio [rtpstream_audio_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000

]]></send>
  <recv request="ACK" />
  <recv request="BYE" />
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
</scenario>
"""


@requires_sipp
async def test_early_media_from_the_callee_is_heard_instead_of_ringback(
    server: Server, receiver: Receiver, far_end: FarEnd, tmp_path: Path
) -> None:
    ulaw = tmp_path / "early.ulaw"
    ulaw.write_bytes(ulaw_encode(tone(1000, 3.0)).tobytes())
    scenario = tmp_path / "early_media.xml"
    scenario.write_text(EARLY_MEDIA_UAS.replace("ULAW_FILE", str(ulaw)))
    callee = Sipp(["-sf", str(scenario), "-m", "1"]).start(tmp_path)
    try:
        script = swml(
            {
                "connect": {
                    "to": f"sip:early@{callee.uri_host}",
                    "status_url": receiver.url("/connect"),
                }
            }
        )
        async with AsyncRestClient(server.project, server.token, server.host) as client:
            leg = await client.calling.dial(from_="+15551230000", to=far_end.uri, swml=script)
            await asyncio.wait_for(far_end.answered.wait(), 10)
            start = time.monotonic()
            await wait_for(lambda: "connected" in connect_states(receiver), 10, "connected")
            connected_at = time.monotonic()
            early = far_end.audio(start + 0.5, connected_at - 0.2)
            await client.calling.end(leg["id"])
        assert callee.wait(10) == 0
    finally:
        callee.stop()
    assert connected_at - start > 1.5  # it rang (with early media) before the 200
    assert [round(f / 10) * 10 for f in peaks(early, 1)] == [1000]  # not 440 + 480


async def test_confirm_runs_on_the_callee_and_decides_the_bridge(
    server: Server, receiver: Receiver, far_end: FarEnd, far_b: FarEnd
) -> None:
    # B's confirm script plays a whisper and hangs up: B never joins, connect fails.
    refusing = swml(
        {
            "connect": {
                "to": far_b.uri,
                "confirm": [{"play": {"url": "ring:0.6:uk"}}, {"hangup": {}}],
                "status_url": receiver.url("/connect"),
            }
        },
        {
            "request": {
                "url": receiver.url("/vars"),
                "method": "POST",
                "body": {"result": "${connect_result}", "reason": "${connect_failed_reason}"},
            }
        },
        {"hangup": {}},
    )
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        await client.calling.dial(from_="+15551230000", to=far_end.uri, swml=refusing)
        await asyncio.wait_for(far_b.answered.wait(), 10)
        t0 = time.monotonic()
        await wait_for(lambda: receiver.events("/vars"), 15, "the connect result")
        whisper = far_b.audio(t0, t0 + 0.5)
    assert receiver.events("/vars")[0] == {"result": "failed", "reason": "declined"}
    assert [round(f / 10) * 10 for f in peaks(whisper, 2)] == [400, 450]  # B heard the whisper
    assert far_b.calls[0].ended


async def test_a_confirm_that_finishes_lets_the_bridge_form(
    server: Server, receiver: Receiver, far_end: FarEnd, far_b: FarEnd
) -> None:
    script = swml(
        {
            "connect": {
                "to": far_b.uri,
                "confirm": [{"play": {"url": "silence:0.3"}}],
                "status_url": receiver.url("/connect"),
            }
        }
    )
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(from_="+15551230000", to=far_end.uri, swml=script)
        await wait_for(lambda: "connected" in connect_states(receiver), 15, "connected")
        t0 = time.monotonic()
        await far_b.play(tone(1500, 0.8))
        heard = far_end.audio(t0 + 0.2, time.monotonic())
        await client.calling.end(leg["id"])
    assert [round(f / 10) * 10 for f in peaks(heard, 1)] == [1500]
