"""Loopback through a real third-party RTP peer: sipp's -rtp_echo sends our packets back."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator

import numpy as np
import pytest

from callplane.media import sources
from callplane.media.engine import MediaEngine
from callplane.media.sources import Frame

SIPP_SIP_PORT = 40950
SIPP_MEDIA_PORT = 40960

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (sip-tester) not installed"),
]


@pytest.fixture
async def sipp_echo() -> AsyncIterator[int]:
    proc = await asyncio.create_subprocess_exec(
        "sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(SIPP_SIP_PORT),
        "-mi", "127.0.0.1", "-mp", str(SIPP_MEDIA_PORT), "-rtp_echo", "-nostdin",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await asyncio.sleep(0.5)  # sipp binds its sockets at startup
    try:
        if proc.returncode is not None:
            pytest.skip(f"sipp exited early with {proc.returncode}")
        yield SIPP_MEDIA_PORT
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 3)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def test_tone_echoed_by_sipp_comes_back_intact(sipp_echo: int) -> None:
    engine = MediaEngine("127.0.0.1", (40600, 40619))
    await engine.start()
    try:
        s = await engine.open_session()
        s.configure(("127.0.0.1", sipp_echo))
        heard: list[Frame] = []
        s.add_listener(lambda f: heard.append(f.inbound) if f.heard else None)
        pb = s.play(sources.tone(1000, 1.0, level_dbfs=-10))
        assert await asyncio.wait_for(pb.done, 3) == "finished"
        await asyncio.sleep(0.2)
        # The echo is our own stream: same SSRC, so the session latched onto sipp's address.
        assert s.remote == ("127.0.0.1", sipp_echo)
        audio = np.concatenate(heard)
        frames = audio.reshape(-1, 160)
        loud = frames[np.abs(frames).max(axis=1) > 0].reshape(-1)
        assert loud.size >= 7800
        spec = np.abs(np.fft.rfft(loud[:4000] * np.hanning(4000)))
        assert np.argmax(spec) * 8000 / 4000 == pytest.approx(1000, abs=3)
    finally:
        await engine.stop()
