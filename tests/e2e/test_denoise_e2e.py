"""`calling.denoise` against the real server: the far end speaks (flite) mixed with white noise
at 5 dB SNR; a media stream of the call's inbound track carries what callplane hears, once
without and once with noise reduction, and the SNR of each is measured against the clean speech.
The denoiser sits before every consumer, so the stream sees the denoised audio.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from farend import FarEnd
from harness import LOOPBACK, Server
from test_stream_e2e import app_server, swml, wait_for
from ticks import Emitted, TickSession, tick_call, tick_services

from callplane import AsyncRestClient
from callplane.engine.facade import CommandError
from callplane.engine.operations import denoise as denoise_module
from callplane.media import rnnoise
from callplane.media.dsp.dtmf import DtmfDetector, DtmfKeyDown, dtmf_digits
from callplane.media.g711 import ulaw_decode

sys.path.insert(0, str(Path(__file__).parents[1] / "media" / "dsp"))
from dsp_audio import flite, to_frames

FROM = "+15559876543"
SENTENCE = "I would like to speak to someone about my bill"

needs_rnnoise = pytest.mark.skipif(
    not rnnoise.available(), reason="the pyrnnoise wheel's librnnoise is needed"
)
needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="flite (Debian) missing")


def snr_db(clean: np.ndarray, heard: np.ndarray) -> float:
    """SNR of ``heard``, aligned on ``clean`` by cross-correlation: the mean power of the 20 ms
    frames where the clean speech is active, less the noise, over the mean power of the frames
    where the clean signal is silent (the noise left). Robust to the time-varying gains of a
    denoiser, which a projection on the clean signal would count as noise."""
    corr = np.correlate(heard, clean[: clean.size // 2], mode="valid")
    lag = int(np.argmax(np.abs(corr)))
    y = heard[lag : lag + clean.size]
    n = y.size // 160
    power_y = (y[: n * 160].reshape(n, 160) ** 2).mean(axis=1)
    power_s = (clean[: n * 160].reshape(n, 160) ** 2).mean(axis=1)
    active = power_s > power_s.max() * 1e-3
    quiet = power_s == 0
    noise = float(power_y[quiet].mean())
    signal = float(power_y[active].mean()) - noise
    return float(10 * np.log10(max(signal, 1e-9) / noise))


@needs_rnnoise
@needs_flite
async def test_denoise_raises_the_snr_of_what_every_consumer_hears(
    server: Server, far_end: FarEnd
) -> None:
    voice = to_frames(flite(SENTENCE, "rms")).ravel().astype(np.float64)
    rng = np.random.default_rng(5)
    noise = rng.normal(0, 1, voice.size + 8000)
    # 5 dB SNR over the speech; half a second of noise alone on each side of it.
    noise *= np.sqrt(np.mean(voice**2) / np.mean(noise**2)) / 10 ** (5 / 20)
    speech = np.concatenate([np.zeros(4000), voice, np.zeros(4000)])
    noisy = np.clip(np.round(speech + noise), -32768, 32767).astype(np.int16)

    async with app_server() as (port, peers):
        document = swml(
            {"stream": {"url": f"ws://{LOOPBACK}:{port}/in", "control_id": "s"}},
            {"sleep": -1},
        )
        async with AsyncRestClient(server.project, server.token, server.host) as client:
            leg = await client.calling.dial(from_=FROM, to=far_end.uri, swml=document)
            call_id = str(leg["id"])
            await asyncio.wait_for(far_end.answered.wait(), 10)
            await wait_for(lambda: peers and peers[0].events("media"), what="the stream")
            t0 = time.monotonic()
            await far_end.play(noisy)
            await far_end.silence(0.5)
            t1 = time.monotonic()
            await client.calling.denoise(call_id)
            await far_end.silence(0.5)  # RNNoise adapts to the noise within a few frames
            await far_end.play(noisy)
            await far_end.silence(0.5)
            t2 = time.monotonic()
            await client.calling.denoise_stop(call_id)
            await client.calling.end(call_id)
            await wait_for(lambda: server.call_status(call_id) == "ended")
            events = server.get(f"/api/calling/calls/{call_id}/events").json()["data"]

    (peer,) = peers

    def heard(start: float, end: float) -> np.ndarray:
        chunks = [
            base64.b64decode(m["media"]["payload"])
            for at, m in peer.messages
            if m["event"] == "media" and start <= at < end
        ]
        return ulaw_decode(b"".join(chunks)).astype(np.float64)

    before = snr_db(speech, heard(t0, t1))
    after = snr_db(speech, heard(t1, t2))
    print(f"SNR of the heard speech: {before:.1f} dB without denoise, {after:.1f} dB with")
    assert 3 < before < 9, before  # the 5 dB mix (its active frames), through PCMU twice
    assert after - before > 10, (before, after)
    denoise = [e["params"] for e in events if e["event_type"] == "calling.call.denoise"]
    assert [d["denoised"] for d in denoise] == [True, False]


@needs_rnnoise
async def test_one_filter_per_call_its_events_and_the_cap() -> None:
    emitted = Emitted()
    services = tick_services(emitted)
    services.config.max_denoised_calls = 1  # type: ignore[misc]
    first, second = TickSession(), TickSession()
    call, other = tick_call(first), tick_call(second)
    op = denoise_module.start_denoise(services, call)
    assert denoise_module.start_denoise(services, call) is op  # at most one filter per call
    assert first.inbound_filter is not None  # type: ignore[attr-defined]
    noise = np.random.default_rng(2).normal(0, 3000, 160 * 100).astype(np.int16)
    frames = noise.reshape(-1, 160).copy()
    for frame in frames:
        first.inbound_filter(frame)  # type: ignore[attr-defined]
    assert frames[50:].std() < noise[8000:].std() / 20
    with pytest.raises(CommandError) as refused:
        denoise_module.start_denoise(services, other)
    assert refused.value.status == 422 and "1 calls are denoised" in refused.value.message
    assert await denoise_module.stop_denoise(call)
    assert first.inbound_filter is None  # type: ignore[attr-defined]
    assert not await denoise_module.stop_denoise(call)
    denoise_module.start_denoise(services, other)  # the slot is free again
    await denoise_module.stop_denoise(other)
    assert [p["denoised"] for p in emitted.params("denoise")] == [True, False, True, False]


@needs_rnnoise
async def test_in_band_dtmf_survives_denoise() -> None:
    """RNNoise alone removes a key's tone pair (no digit left to detect); the call's filter
    lets frames with a tone pair through, in noise too."""
    emitted = Emitted()
    services = tick_services(emitted)
    services.config.max_denoised_calls = 4  # type: ignore[misc]
    session = TickSession()
    call = tick_call(session)
    op = denoise_module.start_denoise(services, call)
    keys = dtmf_digits("1590*#", level_dbov=-20.0)
    noise = np.random.default_rng(4).normal(0, 300, keys.size)
    signal = np.clip(keys + noise, -32768, 32767).astype(np.int16)

    def detected(x: np.ndarray) -> str:
        detector = DtmfDetector()
        found = []
        for k in range(0, x.size - 159, 160):
            found += [
                e.digit
                for e in detector.feed(x[k : k + 160], k / 8000)
                if isinstance(e, DtmfKeyDown)
            ]
        return "".join(found)  # fmt: skip

    plain = signal.copy()
    bare = rnnoise.Denoiser()
    for k in range(0, plain.size - 159, 160):
        bare.process(plain[k : k + 160])
    bare.close()
    assert detected(plain) == ""  # why the filter needs its bypass
    filtered = signal.copy()
    for k in range(0, filtered.size - 159, 160):
        session_filter = session.inbound_filter  # type: ignore[attr-defined]
        session_filter(filtered[k : k + 160])
    assert detected(filtered) == "1590*#"
    await op.stop()
