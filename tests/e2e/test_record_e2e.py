"""`calling.record` and SWML `record` / `record_call` / `stop_record_call` against the real server.

The far end (a SIP UA in the test process) sends real PCMU RTP — a linear chirp, tones, flite
speech, RFC 4733 digits — and the test downloads the finished recording from the URL in the
`calling.call.record` webhook (Basic auth, like the API) and compares it with what was sent:
duration, content (normalised cross-correlation with the source), channel layout.
"""

from __future__ import annotations

import asyncio
import io
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile
from audiomatch import global_lag, piecewise_ncc
from farend import FarEnd, peaks, rms_db
from harness import Receiver, Server, swml
from harness import until as wait_for
from ticks import Emitted, TickSession, tick_call, tick_services

from callplane import AsyncRestClient, RestError
from callplane.engine.operations.record import (
    REST_DEFAULTS,
    RecordOperation,
    RecordSettings,
    start_record,
)

# The DSP tests' flite helper (speech at 8 kHz, trimmed and levelled).
sys.path.insert(0, str(Path(__file__).parents[1] / "media" / "dsp"))
from dsp_audio import flite, needs_flite

FROM = "+15559876543"
RECORD_EVENT = "calling.call.record"
# Timers off: only what the test does ends these recordings.
NO_TIMERS = {"initial_timeout": 0, "end_silence_timeout": 0, "terminators": ""}


def pcm(x: np.ndarray) -> np.ndarray:
    """Float samples to int16, padded to whole 20 ms frames (what FarEnd.play sends)."""
    x = np.concatenate([np.asarray(x, dtype=np.float64), np.zeros((-len(x)) % 160)])
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def chirp(seconds: float, f0: float = 300.0, f1: float = 3000.0) -> np.ndarray:
    """A linear chirp at -10 dBFS: its autocorrelation has one sharp peak, so it aligns."""
    t = np.arange(round(seconds * 8000)) / 8000
    return pcm(0.3 * 32767 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) / (2 * seconds) * t * t)))


def sine(freq: float, seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * 8000)) / 8000
    return pcm(0.2 * 32767 * np.sin(2 * np.pi * freq * t))


def align(recording: np.ndarray, source: np.ndarray) -> tuple[float, float]:
    """Where `source` sits in `recording` (seconds; negative: the recording starts inside it)
    and how faithfully the recording holds it (`audiomatch.piecewise_ncc`)."""
    lag = global_lag(recording, source)
    return lag / 8000, piecewise_ncc(recording, source, lag)


def states(receiver: Receiver, path: str) -> list[str]:
    return [e["params"]["state"] for e in receiver.events(path, RECORD_EVENT)]


async def final_event(receiver: Receiver, path: str, within: float = 15) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        return next(
            (
                e
                for e in receiver.events(path, RECORD_EVENT)
                if e["params"]["state"] in ("finished", "no_input", "error")
            ),
            None,
        )

    event: dict[str, Any] = await wait_for(final, within, f"a final record event at {path}")
    return event


async def download(server: Server, url: str) -> tuple[np.ndarray, bytes]:
    async with httpx.AsyncClient(auth=(server.project, server.token), timeout=10) as http:
        unauthenticated = await http.get(url, auth=None)
        assert unauthenticated.status_code == 401
        response = await http.get(url)
    assert response.status_code == 200, response.text
    data, rate = soundfile.read(io.BytesIO(response.content), dtype="int16", always_2d=True)
    assert rate == 8000
    return data, response.content


async def dial_far_end(client: AsyncRestClient, far_end: FarEnd, *methods: dict[str, Any]) -> str:
    leg = await client.calling.dial(
        from_=FROM, to=far_end.uri, swml=swml(*(methods or ({"sleep": -1},)))
    )
    await asyncio.wait_for(far_end.answered.wait(), 10)
    return str(leg["id"])


# ---------------------------------------------------------------------------------------------


async def test_max_length_recording_is_what_the_far_end_sent(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    source = chirp(5.0)
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await dial_far_end(client, far_end)
        # The API refuses what callplane cannot do, and control ids it does not know.
        with pytest.raises(RestError) as mp4:
            await client.calling.record(call_id, record={"audio": {"format": "mp4"}})
        assert mp4.value.status_code == 501
        with pytest.raises(RestError) as unknown:
            await client.calling.record_pause(call_id, control_id="nope")
        assert unknown.value.status_code == 422
        player = asyncio.create_task(far_end.play(source))
        await asyncio.sleep(0.6)
        await client.calling.record(
            call_id,
            control_id="r1",
            record={"audio": {"format": "wav", "max_length": 3, **NO_TIMERS}},
            status_url=receiver.url("/rec"),
        )
        event = await final_event(receiver, "/rec")
        await player
        await client.calling.end(call_id)
    p = event["params"]
    assert states(receiver, "/rec") == ["recording", "finished"]
    first = receiver.events("/rec", RECORD_EVENT)[0]["params"]
    assert first["control_id"] == "r1" and first["recording_id"] == p["recording_id"]
    assert first["record"]["audio"] == {"format": "wav", "direction": "speak", "stereo": False}
    assert p["call_id"] == call_id and p["control_id"] == "r1"
    assert p["url"].endswith(f"/api/calling/recordings/{p['recording_id']}")
    assert p["record"]["audio"] == {"format": "wav", "direction": "speak", "stereo": False}
    assert p["record"]["url"] == p["url"] and p["record"]["format"] == "wav"
    assert p["record"]["duration"] == p["duration"] and p["record"]["size"] == p["size"]
    assert abs(p["duration"] - 3.0) <= 0.1
    assert 2.9 <= p["end_time"] - p["start_time"] <= 3.3
    data, raw = await download(server, p["url"])
    assert len(raw) == p["size"]
    assert data.shape[1] == 1 and abs(len(data) / 8000 - p["duration"]) < 0.001
    offset, ncc = align(data[:, 0], source)
    assert -2.5 < offset < 0  # the recording starts ~0.6 s into the chirp
    assert ncc > 0.9


async def test_terminator_digit_stops_and_content_lines_up(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    source = chirp(3.0)
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await dial_far_end(client, far_end)
        await client.calling.record(
            call_id,
            control_id="t1",
            # REST defaults otherwise: initial_timeout 4 s, terminators "#", mp3.
            record={"audio": {"format": "wav", "end_silence_timeout": 0}},
            status_url=receiver.url("/rec"),
        )
        # Start talking 2-3 ticks into the recording: the far end's first packet must land in
        # the slot it arrived in, not be moved up and cause a realignment hole later.
        await asyncio.sleep(0.05)
        await far_end.play(source)
        await far_end.send_digits("1", duration_ms=40, gap_ms=0)  # not a terminator
        await far_end.send_digits("#", duration_ms=40, gap_ms=0)
        event = await final_event(receiver, "/rec")
        await client.calling.end(call_id)
    p = event["params"]
    assert p["state"] == "finished"
    data, _ = await download(server, p["url"])
    offset, ncc = align(data[:, 0], source)
    assert ncc > 0.9
    assert 0.02 <= offset < 0.3
    # Chirp, then two 40 ms digit events: the file ends when the "#" arrived.
    expected = offset + 3.0 + 0.1
    assert abs(p["duration"] - expected) <= 0.1, (p["duration"], expected)


async def test_stereo_keeps_directions_apart_and_call_end_finalises(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    buf = io.BytesIO()
    soundfile.write(buf, sine(1000, 6.0), 8000, format="WAV", subtype="PCM_16")
    tone_url = receiver.serve_file("/tone.wav", buf.getvalue(), "audio/wav")
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await dial_far_end(client, far_end)
        await client.calling.play(
            call_id, control_id="p1", play=[{"type": "audio", "params": {"url": tone_url}}]
        )
        player = asyncio.create_task(far_end.play(sine(440, 3.0)))
        await asyncio.sleep(0.3)
        await client.calling.record(
            call_id,
            control_id="s1",
            record={"audio": {"format": "wav", "stereo": True, "direction": "both", **NO_TIMERS}},
            status_url=receiver.url("/rec"),
        )
        await asyncio.sleep(2.0)
        # Ending the call ends the recording: it is finalised and reported, not lost.
        await client.calling.end(call_id)
        event = await final_event(receiver, "/rec")
        player.cancel()
    p = event["params"]
    assert p["state"] == "finished"
    # The call's event log: the recording's last event comes before the call's `ended`.
    await wait_for(lambda: server.call_status(call_id) == "ended", 10, "the call to end")
    log = [
        (e["event_type"], e["params"].get("state") or e["params"].get("call_state"))
        for e in server.get(f"/api/calling/calls/{call_id}/events").json()["data"]
    ]
    assert log.index((RECORD_EVENT, "finished")) < log.index(("calling.call.state", "ended"))
    assert log.index((RECORD_EVENT, "recording")) < log.index((RECORD_EVENT, "finished"))
    assert p["record"]["audio"] == {"format": "wav", "direction": "both", "stereo": True}
    assert 1.8 <= p["duration"] <= 2.4
    data, _ = await download(server, p["url"])
    assert data.shape[1] == 2
    left = data[400:-400, 0].astype(np.float64)
    right = data[400:-400, 1].astype(np.float64)
    # Left = what the party says (the far end's 440 Hz), right = what it hears (our 1 kHz).
    assert [round(f / 10) * 10 for f in peaks(left, 1)] == [440]
    assert [round(f / 10) * 10 for f in peaks(right, 1)] == [1000]
    for channel, other in ((left, 1000.0), (right, 440.0)):
        spectrum = np.abs(np.fft.rfft(channel * np.hanning(len(channel))))
        freqs = np.fft.rfftfreq(len(channel), 1 / 8000)
        leak = spectrum[np.abs(freqs - other) < 15].max() / spectrum.max()
        assert leak < 0.01  # > 40 dB apart


async def test_pause_skip_drops_and_pause_silence_keeps_time(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await dial_far_end(client, far_end)
        player = asyncio.create_task(far_end.play(sine(440, 7.5)))
        await asyncio.sleep(0.3)
        marks: list[float] = []

        async def at(command: Any) -> None:
            before = time.monotonic()
            await command
            marks.append((before + time.monotonic()) / 2)

        kw: dict[str, Any] = {"control_id": "pz"}
        await at(
            client.calling.record(
                call_id,
                **kw,
                record={"audio": {"format": "wav", **NO_TIMERS}},
                status_url=receiver.url("/rec"),
            )
        )
        await asyncio.sleep(1.0)
        await at(client.calling.record_pause(call_id, **kw, behavior="skip"))
        await asyncio.sleep(1.0)
        with pytest.raises(RestError) as twice:  # already paused
            await client.calling.record_pause(call_id, **kw)
        assert twice.value.status_code == 422
        await at(client.calling.record_resume(call_id, **kw))
        await asyncio.sleep(1.0)
        await at(client.calling.record_pause(call_id, **kw, behavior="silence"))
        await asyncio.sleep(1.0)
        await at(client.calling.record_resume(call_id, **kw))
        await asyncio.sleep(1.0)
        await at(client.calling.record_stop(call_id, **kw))
        event = await final_event(receiver, "/rec")
        player.cancel()
        await client.calling.end(call_id)
    start, skip, resume1, silence, resume2, stop = marks
    assert states(receiver, "/rec") == [
        "recording",
        "paused",
        "recording",
        "paused",
        "recording",
        "finished",
    ]
    behaviors = [
        e["params"].get("pause_behavior")
        for e in receiver.events("/rec", RECORD_EVENT)
        if e["params"]["state"] == "paused"
    ]
    assert behaviors == ["skip", "silence"]
    p = event["params"]
    expected = (stop - start) - (resume1 - skip)
    assert abs(p["duration"] - expected) <= 0.1, (p["duration"], expected)
    data, _ = await download(server, p["url"])
    x = data[:, 0].astype(np.float64)

    def at_s(a: float, b: float) -> np.ndarray:
        return x[round(a * 8000) : round(b * 8000)]

    first = skip - start
    gap_start = first + (silence - resume1)
    gap_end = gap_start + (resume2 - silence)
    assert rms_db(at_s(0.2, first - 0.2)) > 70  # the tone (int16 scale)
    assert rms_db(at_s(first + 0.2, gap_start - 0.2)) > 70  # skip left no hole
    assert rms_db(at_s(gap_start + 0.2, gap_end - 0.2)) < 1  # digital silence
    assert rms_db(at_s(gap_end + 0.2, gap_end + 0.7)) > 70


@needs_flite
async def test_end_silence_stops_an_mp3_recording_of_speech(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    speech = pcm(flite("Please leave your message after the tone, and have a nice day."))
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await dial_far_end(client, far_end)
        # All REST defaults: mp3, speak, initial 4 s, end_silence 0.5 s, "#".
        await client.calling.record(
            call_id, control_id="m1", record={"audio": {}}, status_url=receiver.url("/rec")
        )
        await far_end.play(np.concatenate([speech, np.zeros(3 * 8000, dtype=np.int16)]))
        event = await final_event(receiver, "/rec")
        await client.calling.end(call_id)
    p = event["params"]
    assert p["state"] == "finished"
    assert p["record"]["audio"] == {"format": "mp3", "direction": "speak", "stereo": False}
    data, raw = await download(server, p["url"])
    assert raw[:3] == b"ID3" or raw[0] == 0xFF  # an MPEG stream
    # Decoders honour the LAME gapless header: the samples are the ones written.
    assert abs(len(data) / 8000 - p["duration"]) < 0.08
    offset, ncc = align(data[:, 0], speech)
    assert 0 <= offset < 0.3 and ncc > 0.8
    # Stopped 0.5 s after the speech ended (the voice detector's tail ends within ~0.3 s).
    expected = offset + len(speech) / 8000 + 0.5
    assert -0.3 <= p["duration"] - expected <= 0.15, (p["duration"], expected)


async def test_initial_timeout_without_speech_is_no_input(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await dial_far_end(client, far_end)
        await client.calling.record(
            call_id,
            control_id="n1",
            record={"audio": {"format": "wav", "initial_timeout": 1.0}},
            status_url=receiver.url("/rec"),
        )
        await far_end.silence(1.5)
        event = await final_event(receiver, "/rec")
        await client.calling.end(call_id)
    p = event["params"]
    assert states(receiver, "/rec") == ["recording", "no_input"]
    assert abs(p["duration"] - 1.0) <= 0.1 and p["size"] > 0
    data, _ = await download(server, p["url"])
    assert abs(len(data) / 8000 - 1.0) <= 0.1


async def test_swml_record_call_and_stop_record_call(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    report = receiver.url("/vars")
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await dial_far_end(
            client,
            far_end,
            {"record_call": {"control_id": "bg", "status_url": receiver.url("/rec")}},
            {"sleep": 2000},
            {"stop_record_call": {}},
            {
                "request": {
                    "url": report,
                    "method": "POST",
                    "body": {
                        "url": "${record_call_url}",
                        "result": "${record_call_result}",
                        "control_id": "${record_control_id}",
                        "stopped": "${stop_record_call_result}",
                    },
                }
            },
            {"stop_record_call": {}},  # nothing left to stop
            {
                "request": {
                    "url": report,
                    "method": "POST",
                    "body": {"again": "${stop_record_call_result}"},
                }
            },
            {"sleep": -1},
        )
        player = asyncio.create_task(far_end.play(sine(440, 3.5)))
        event = await final_event(receiver, "/rec")
        await wait_for(
            lambda: len([h for h in receiver.hits if h.path == "/vars"]) == 2, 10, "the requests"
        )
        player.cancel()
        await client.calling.end(call_id)
    bodies = [h.body for h in receiver.hits if h.path == "/vars"]
    p = event["params"]
    assert p["state"] == "finished" and p["control_id"] == "bg"
    # SWML record_call defaults: wav, both directions, no stereo.
    assert p["record"]["audio"] == {"format": "wav", "direction": "both", "stereo": False}
    assert p["record"]["url"] == p["url"] and p["record"]["format"] == "wav"
    assert bodies[0] == {
        "url": p["url"],
        "result": "success",
        "control_id": "bg",
        "stopped": "success",
    }
    assert bodies[1] == {"again": "failed"}
    assert 1.8 <= p["duration"] <= 2.3
    data, _ = await download(server, p["url"])
    assert [round(f / 10) * 10 for f in peaks(data[4000:-800, 0].astype(np.float64), 1)] == [440]


async def test_swml_record_waits_and_sets_record_url(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    report = receiver.url("/vars")
    source = chirp(1.5)
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await dial_far_end(
            client,
            far_end,
            # SWML record defaults: wav, speak, "#" ends it; a beep first.
            {"record": {"beep": True, "status_url": receiver.url("/rec")}},
            {
                "request": {
                    "url": report,
                    "method": "POST",
                    "body": {"url": "${record_url}", "result": "${record_result}"},
                }
            },
            {"hangup": {}},
        )
        await wait_for(lambda: states(receiver, "/rec"), 10, "recording")
        await far_end.play(source)
        await far_end.send_digits("#", duration_ms=40, gap_ms=0)
        event = await final_event(receiver, "/rec")
        hit = await wait_for(
            lambda: next((h for h in receiver.hits if h.path == "/vars"), None), 10, "request"
        )
        # The script hangs up after its request: the call ends by itself.
        await wait_for(lambda: server.call_status(call_id) == "ended", 10, "the hangup")
    p = event["params"]
    assert p["state"] == "finished"
    assert hit.body == {"url": p["url"], "result": "success"}
    # The beep went to the party (1 kHz at the far end) but is not in the recording.
    data, _ = await download(server, p["url"])
    offset, ncc = align(data[:, 0], source)
    assert ncc > 0.9 and 0 <= offset < 0.4
    assert abs(p["duration"] - (offset + 1.5 + 0.05)) <= 0.1
    heard = [pk for pk in far_end.packets if pk.pt == 0]
    assert heard
    from callplane.media.g711 import ulaw_decode

    audio = ulaw_decode(b"".join(pk.payload for pk in heard)).astype(np.float64)
    loud = np.flatnonzero(np.abs(audio) > 1000)
    assert 0.2 <= (loud[-1] - loud[0]) / 8000 <= 0.3  # the 0.25 s beep, nothing else loud
    assert [round(f / 10) * 10 for f in peaks(audio[loud[0] : loud[-1]], 1)] == [1000]


async def test_server_shutdown_finalises_the_recording(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    source = chirp(4.0)
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await dial_far_end(client, far_end)
        player = asyncio.create_task(far_end.play(source))
        await client.calling.record(
            call_id,
            control_id="sd",
            record={"audio": {"format": "wav", **NO_TIMERS}},
            status_url=receiver.url("/rec"),
        )
        await asyncio.sleep(1.5)
    # SIGTERM: callplane ends the call with a BYE (the far end answers it on this loop, so the
    # stop runs in a thread), finalises the recording and flushes its webhook before exiting.
    assert await asyncio.to_thread(server.stop) == 0
    player.cancel()
    event = await final_event(receiver, "/rec", within=5)
    p = event["params"]
    assert p["state"] == "finished" and 1.3 <= p["duration"] <= 1.9
    # The row was updated too: a new server on the same data serves the file.
    again = Server(data_dir=server.data_dir, http_port=server.http_port).start()
    try:
        data, raw = await download(again, p["url"])
    finally:
        again.kill()
    assert len(raw) == p["size"] and abs(len(data) / 8000 - p["duration"]) < 0.001
    offset, ncc = align(data[:, 0], source)
    assert ncc > 0.9 and -0.3 < offset < 0.3


async def test_a_recording_keeps_wall_time_while_digits_are_sent(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    """Bug: while SWML `send_digits` sent RFC 4733 events, listeners got no outbound frames,
    so a `listen` recording of "1234" came out about 0.6 s short. Its duration now matches
    the wall time between its start and its end (the event's start_time / end_time)."""
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await dial_far_end(
            client,
            far_end,
            {
                "record_call": {
                    "control_id": "dtmf",
                    "direction": "listen",
                    "status_url": receiver.url("/rec"),
                }
            },
            {"sleep": 300},
            {"send_digits": {"digits": "1234"}},
            {"sleep": 300},
            {"stop_record_call": {}},
            {"sleep": -1},
        )
        event = await final_event(receiver, "/rec")
        await client.calling.end(call_id)
    assert far_end.digits() == "1234"
    p = event["params"]
    assert p["state"] == "finished"
    wall = p["end_time"] - p["start_time"]
    assert wall > 1.2, wall  # 0.3 s + the digits (~0.8 s) + 0.3 s
    assert abs(p["duration"] - wall) <= 0.06, (p["duration"], wall)


# -- in process, driven by TickFrames alone --------------------------------------------------


def settings(**overrides: Any) -> RecordSettings:
    values = {**REST_DEFAULTS, "format": "wav", **NO_TIMERS, **overrides}
    return RecordSettings(**values)


def ticking_record(tmp_path: Path, **overrides: Any) -> tuple[TickSession, RecordOperation]:
    session = TickSession()
    call = tick_call(session)
    emitted = Emitted()
    services = tick_services(emitted, recordings=tmp_path)
    op = start_record(
        services, call, control_id="r", settings=settings(**overrides), status_url=None
    )
    assert op.state == "recording"
    return session, op


async def test_n_ticks_record_n_slots_with_each_channel_in_place(tmp_path: Path) -> None:
    """Stereo `both`: left = inbound + speak, right = outbound, one 20 ms slot per tick, and
    the ticks where nothing arrived (heard False) are silence in their own place."""
    session, op = ticking_record(tmp_path, direction="both", stereo=True)
    far, ours, said = sine(500, 2.0), sine(1500, 2.0), sine(2500, 2.0)
    for i in range(100):
        part = slice(i * 160, (i + 1) * 160)
        gap = 40 <= i < 60  # the far end stopped sending
        session.tick(
            None if gap else far[part] // 2, ours[part], said[part] // 2 if i >= 80 else None
        )
    await op.stop()
    assert op.state == "finished" and op.result is not None
    assert op.result.samples == 100 * 160 and op.result.duration == 2.0
    data, _ = soundfile.read(str(op.path), dtype="int16", always_2d=True)
    left, right = data[:, 0].reshape(100, 160), data[:, 1].reshape(100, 160)
    assert np.array_equal(right.ravel(), ours)
    half = (far // 2).reshape(100, 160)
    assert np.array_equal(left[:40], half[:40]) and not left[40:60].any()
    assert np.array_equal(left[60:80], half[60:80])
    assert np.array_equal(left[80:], half[80:] + (said // 2).reshape(100, 160)[80:])


async def test_max_length_and_initial_timeout_count_ticks(tmp_path: Path) -> None:
    session, op = ticking_record(tmp_path, max_length=1.0)
    for _ in range(49):
        session.tick(sine(440, 0.02))
    assert op.state == "recording"
    session.tick(sine(440, 0.02))  # the 50th tick: 1.0 s
    assert op.state == "recording" and session.listeners == []  # detached at once
    await asyncio.sleep(0)  # finalised outside the tick
    assert op.state == "finished" and op.result is not None and op.result.duration == 1.0

    session, op = ticking_record(tmp_path, initial_timeout=0.5, end_silence_timeout=1.0)
    session.silence(0.48)
    await asyncio.sleep(0)
    assert op.state == "recording"
    session.tick()
    await asyncio.sleep(0)
    assert op.state == "no_input" and op.result is not None and op.result.duration == 0.5
