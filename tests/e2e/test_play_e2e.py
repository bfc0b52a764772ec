"""What `calling.play` items sound like at the far end: speech recognised back to its words, a
ringtone's frequencies and cadence."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from farend import FarEnd, peaks, rms_db
from harness import Receiver, Server

from callplane import AsyncRestClient
from callplane.providers.asr import PocketSphinxRecognizer

HANG_ON = {"version": "1.0.0", "sections": {"main": [{"sleep": -1}]}}


async def _play_and_capture(
    server: Server, far_end: FarEnd, receiver: Receiver, item: dict[str, object], seconds: float
) -> tuple[float, float]:
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(from_="+15559876543", to=far_end.uri, swml=HANG_ON)
        await asyncio.wait_for(far_end.answered.wait(), 10)
        await client.calling.play(
            leg["id"], control_id="p", play=[item], status_url=receiver.url("/play")
        )
        for _ in range(500):
            if receiver.events("/play"):
                break
            await asyncio.sleep(0.02)
        started = time.monotonic()
        await asyncio.sleep(seconds)
        await client.calling.end(leg["id"])
    return started, started + seconds


def _recognise(samples: np.ndarray, hints: list[str]) -> str:
    session = PocketSphinxRecognizer().open_session(
        "en-US", hints, end_silence_timeout=0.8, speech_timeout=10
    )
    texts: list[str] = []
    frames = samples.astype(np.int16)
    for start in range(0, len(frames) - 159, 160):
        for event in session.feed(frames[start : start + 160]):
            if event.type == "final" and event.text:
                texts.append(event.text)
    for _ in range(100):  # trailing silence lets the end-of-speech timer fire
        for event in session.feed(np.zeros(160, dtype=np.int16)):
            if event.type == "final" and event.text:
                texts.append(event.text)
    session.close()
    return " ".join(texts)


async def test_tts_reaches_the_far_end_as_recognisable_speech(
    server: Server, far_end: FarEnd, receiver: Receiver
) -> None:
    start, end = await _play_and_capture(
        server, far_end, receiver, {"type": "tts", "text": "support"}, 2.5
    )
    heard = far_end.audio(start - 0.5, end)
    assert rms_db(heard) > 40  # speech, not silence
    assert _recognise(heard, ["sales", "support", "billing"]) == "support"
    assert receiver.events("/play")[0]["params"]["state"] == "playing"


async def test_uk_ringtone_frequencies_and_cadence(
    server: Server, far_end: FarEnd, receiver: Receiver
) -> None:
    start, end = await _play_and_capture(
        server, far_end, receiver, {"type": "ringtone", "params": {"name": "uk"}}, 3.2
    )
    audio = far_end.audio(start, end)
    # 20 ms frames: on (energy) or off (silence)
    frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
    on = [bool(rms_db(f) > 40) for f in frames]
    runs: list[tuple[bool, int]] = []
    for value in on:
        if runs and runs[-1][0] == value:
            runs[-1] = (value, runs[-1][1] + 1)
        else:
            runs.append((value, 1))
    inner = [(v, n * 20) for v, n in runs[1:-1]]  # the first and last runs are cut by the window
    # UK ringing: 0.4 s on, 0.2 s off, 0.4 s on, 2.0 s off
    expected = {(True, 400), (False, 200), (False, 2000)}
    assert len(inner) >= 3, inner
    assert {(v, round(ms / 100) * 100) for v, ms in inner} <= expected, inner
    loud = np.concatenate([f for f, o in zip(frames, on, strict=True) if o])
    assert [round(f / 10) * 10 for f in peaks(loud)] == [400, 450]


def _tone_file(freq: float, seconds: float, fmt: str) -> bytes:
    import io

    import soundfile

    t = np.arange(int(16000 * seconds)) / 16000  # 16 kHz source: callplane resamples to 8 kHz
    buf = io.BytesIO()
    soundfile.write(buf, 0.3 * np.sin(2 * np.pi * freq * t), 16000, format=fmt.upper())
    return buf.getvalue()


async def test_playlist_order_loop_and_mp3(
    server: Server, far_end: FarEnd, receiver: Receiver
) -> None:
    wav = receiver.serve_file("/a.wav", _tone_file(1000, 0.6, "wav"), "audio/wav")
    mp3 = receiver.serve_file("/b.mp3", _tone_file(2000, 0.6, "mp3"), "audio/mpeg")
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(from_="+15559876543", to=far_end.uri, swml=HANG_ON)
        await asyncio.wait_for(far_end.answered.wait(), 10)
        await client.calling.play(
            leg["id"],
            control_id="list",
            play=[
                {"type": "audio", "params": {"url": wav}},
                {"type": "silence", "params": {"duration": 0.4}},
                {"type": "audio", "params": {"url": mp3}},
            ],
            loop=2,
            status_url=receiver.url("/play"),
        )
        for _ in range(500):
            if any(e["params"]["state"] == "finished" for e in receiver.events("/play")):
                break
            await asyncio.sleep(0.02)
        await client.calling.end(leg["id"])
    assert [e["params"]["state"] for e in receiver.events("/play")] == ["playing", "finished"]
    # The far end heard: 1 kHz, silence, 2 kHz, then the same again; 20 ms frames classified.
    packets = [p for p in far_end.packets if p.pt == 0]
    frames = [far_end_audio_frame(p.payload) for p in packets]
    labels = "".join(_label(f) for f in frames)
    squeezed = "".join(c for i, c in enumerate(labels) if i == 0 or c != labels[i - 1])
    assert squeezed.strip("_") == "a_ba_b", squeezed
    assert labels.count("a") in range(55, 66)  # 2 x 0.6 s = 60 frames
    assert labels.count("b") in range(55, 67)  # mp3 decoders may pad a frame


def far_end_audio_frame(payload: bytes) -> np.ndarray:
    from callplane.media.g711 import ulaw_decode

    return ulaw_decode(payload).astype(np.float64)


def _label(frame: np.ndarray) -> str:
    if rms_db(frame) < 40:
        return "_"
    peak = peaks(frame, 1)[0]
    return "a" if abs(peak - 1000) < 100 else "b" if abs(peak - 2000) < 100 else "?"


async def test_speak_direction_is_recorded_but_not_sent(
    server: Server, far_end: FarEnd, receiver: Receiver
) -> None:
    import io

    import httpx
    import soundfile

    async with AsyncRestClient(server.project, server.token, server.host) as client:
        leg = await client.calling.dial(from_="+15559876543", to=far_end.uri, swml=HANG_ON)
        await asyncio.wait_for(far_end.answered.wait(), 10)
        await client.calling.record(
            leg["id"],
            control_id="rec",
            record={"audio": {"format": "wav", "stereo": True, "direction": "both"}},
            status_url=receiver.url("/rec"),
        )
        await client.calling.play(
            leg["id"],
            control_id="said",
            play=[{"type": "ringtone", "params": {"name": "de", "duration": 0.8}}],  # 425 Hz
            direction="speak",
            status_url=receiver.url("/play"),
        )
        for _ in range(300):
            if any(e["params"]["state"] == "finished" for e in receiver.events("/play")):
                break
            await asyncio.sleep(0.02)
        heard_until = time.monotonic()
        await client.calling.record_stop(leg["id"], control_id="rec")
        for _ in range(300):
            if any(e["params"]["state"] == "finished" for e in receiver.events("/rec")):
                break
            await asyncio.sleep(0.02)
        await client.calling.end(leg["id"])
    # The far end heard nothing of it ...
    assert rms_db(far_end.audio(heard_until - 1.0, heard_until)) < 20
    # ... but the leg's speak side (left channel) has the 425 Hz tone.
    finished = next(e for e in receiver.events("/rec") if e["params"]["state"] == "finished")
    async with httpx.AsyncClient() as http:
        wav = await http.get(finished["params"]["url"], auth=(server.project, server.token))
    data, _ = soundfile.read(io.BytesIO(wav.content), dtype="int16")
    speak, listen = data[:, 0].astype(np.float64), data[:, 1].astype(np.float64)
    assert rms_db(speak) > 50
    assert abs(peaks(speak[np.abs(speak) > 0], 1)[0] - 425) < 10
    assert rms_db(listen) < 20
