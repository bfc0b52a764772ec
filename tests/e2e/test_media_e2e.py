"""What really reaches the far end: RTP captured on a plain UDP socket behind a SIP endpoint.

The far end is a SIP user agent in the test process (callplane's own SipEndpoint, a separate
stack from the server under test) whose SDP points at a raw socket; the test reads the RTP
headers itself and looks at the decoded audio's spectrum and level.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import time
from typing import Any

import numpy as np
import pytest
import soundfile
from farend import FarEnd, peaks, rms_db
from harness import LOOPBACK, Receiver, Server, swml

from callplane import AsyncRestClient, RestError


async def test_ringback_reaches_the_far_end_as_paced_rtp(server: Server, far_end: FarEnd) -> None:
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(
            from_="+15559876543", to=far_end.uri, swml=swml({"play": {"url": "ring:us"}})
        )
        await asyncio.wait_for(far_end.answered.wait(), 10)
        answered_at = time.monotonic()
        await asyncio.sleep(3.2)
        await client.calling.end(leg["id"], reason="hangup")
    window = [p for p in far_end.packets if answered_at + 0.2 <= p.at < answered_at + 3.2]
    # 50 packets a second, every one 20 ms of audio further on.
    assert 145 <= len(window) <= 152
    for before, after in itertools.pairwise(window):
        assert (after.seq - before.seq) % 65536 == 1
        assert (after.ts - before.ts) % 2**32 == 160
    spacing = np.diff([p.at for p in window])
    assert abs(float(np.median(spacing)) - 0.020) < 0.002
    # US ringback: 440 + 480 Hz for 2 s, then 4 s of silence.
    assert [
        round(f / 10) * 10 for f in peaks(far_end.audio(answered_at + 0.3, answered_at + 1.8))
    ] == [
        440,
        480,
    ]
    assert rms_db(far_end.audio(answered_at + 2.3, answered_at + 3.1)) < 0


async def test_audio_url_play_volume_pause_and_resume(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    t = np.arange(8000 * 6) / 8000
    buf = io.BytesIO()
    soundfile.write(buf, 0.3 * np.sin(2 * np.pi * 1000 * t), 8000, format="WAV", subtype="PCM_16")
    tone_url = receiver.serve_file("/tone.wav", buf.getvalue(), "audio/wav")
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(
            from_="+15559876543", to=far_end.uri, swml=swml({"sleep": -1})
        )
        await asyncio.wait_for(far_end.answered.wait(), 10)
        call_id = leg["id"]
        await client.calling.play(
            call_id,
            control_id="p1",
            play=[{"type": "audio", "url": tone_url}],  # the flat item of the client docs
            status_url=receiver.url("/play"),
        )
        await asyncio.to_thread(
            lambda: _wait(
                lambda: any(e["params"]["state"] == "playing" for e in receiver.events("/play"))
            )
        )
        t0 = time.monotonic()
        await asyncio.sleep(1.0)
        await client.calling.play_volume(call_id, control_id="p1", volume=-6.0)
        t1 = time.monotonic()
        await asyncio.sleep(1.0)
        await client.calling.play_pause(call_id, control_id="p1")
        t2 = time.monotonic()
        await asyncio.sleep(0.8)
        await client.calling.play_resume(call_id, control_id="p1")
        t3 = time.monotonic()
        await asyncio.sleep(0.8)
        await client.calling.play_stop(call_id, control_id="p1")
        await asyncio.to_thread(
            lambda: _wait(
                lambda: any(e["params"]["state"] == "finished" for e in receiver.events("/play"))
            )
        )
        await client.calling.end(call_id)
    before = far_end.audio(t0 + 0.2, t0 + 0.9)
    after = far_end.audio(t1 + 0.2, t1 + 0.9)
    paused = far_end.audio(t2 + 0.2, t2 + 0.7)
    resumed = far_end.audio(t3 + 0.2, t3 + 0.7)
    assert round(peaks(before, 1)[0]) == 1000
    assert abs((rms_db(before) - rms_db(after)) - 6.0) <= 1.0
    assert rms_db(paused) < rms_db(after) - 40
    assert round(peaks(resumed, 1)[0]) == 1000
    states = [e["params"]["state"] for e in receiver.events("/play")]
    assert states == ["playing", "paused", "playing", "finished"]
    assert all(e["event_type"] == "calling.call.play" for e in receiver.events("/play"))
    assert all(e["params"]["control_id"] == "p1" for e in receiver.events("/play"))


async def test_unreachable_audio_url_is_an_error_event_not_a_dead_call(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(
            from_="+15559876543", to=far_end.uri, swml=swml({"sleep": -1})
        )
        await asyncio.wait_for(far_end.answered.wait(), 10)
        await client.calling.play(
            leg["id"],
            control_id="bad",
            play=[
                {"type": "audio", "params": {"url": receiver.url("/garbage.wav")}},
                {"type": "audio", "params": {"url": f"http://{LOOPBACK}:1/refused.wav"}},
            ],
            status_url=receiver.url("/play"),
        )
        await asyncio.to_thread(lambda: _wait(lambda: receiver.events("/play")))
        event = receiver.events("/play")[0]
        assert event["params"]["state"] == "error"
        assert "cannot decode" in event["params"]["reason"]
        await client.calling.play(
            leg["id"],
            control_id="refused",
            play=[{"type": "audio", "params": {"url": f"http://{LOOPBACK}:1/refused.wav"}}],
            status_url=receiver.url("/play"),
        )
        await asyncio.to_thread(lambda: _wait(lambda: len(receiver.events("/play")) == 2))
        event = receiver.events("/play")[1]
        assert event["params"]["state"] == "error"
        assert "cannot fetch" in event["params"]["reason"]
        # The call itself is untouched by a failed play.
        assert server.call_status(leg["id"]) == "answered"
        with pytest.raises(RestError) as unknown:
            await client.calling.play_stop(leg["id"], control_id="refused")
        assert unknown.value.status_code == 422
        await client.calling.end(leg["id"])


def _wait(predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")
