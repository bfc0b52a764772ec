"""LiveSource marks and clear (a media stream's `mark` / `clear`), FrameResampler, RNNoise."""

from __future__ import annotations

import numpy as np
import pytest

from callplane.media import rnnoise
from callplane.media.sources import FrameResampler, LiveSource, resample


def drain(src: LiveSource, frames: int) -> list[np.ndarray]:
    out = []
    for _ in range(frames):
        f = src.next_frame()
        assert f is not None
        out.append(f.copy())
    return out


def test_a_mark_fires_once_the_audio_before_it_has_been_handed_out() -> None:
    src = LiveSource()
    fired: list[str] = []
    src.on_mark = fired.append
    src.push(np.full(400, 1000, dtype=np.int16))  # 2.5 frames
    src.mark("a")
    src.push(np.full(160, 2000, dtype=np.int16))
    src.mark("b")
    frames = drain(src, 2)
    assert fired == []
    frames += drain(src, 1)  # the frame holding the last samples before "a"
    assert fired == ["a"]
    frames += drain(src, 1)
    assert fired == ["a", "b"]  # the partial tail is flushed: a mark waits for it
    assert frames[2][:80].tolist() == [1000] * 80 and frames[2][80:].tolist() == [2000] * 80
    assert frames[3][:80].tolist() == [2000] * 80 and not frames[3][80:].any()
    assert not drain(src, 1)[0].any()  # dry: silence, no more marks


def test_a_mark_on_an_empty_source_fires_at_once() -> None:
    src = LiveSource()
    fired: list[str] = []
    src.on_mark = fired.append
    src.mark("now")
    assert fired == ["now"]


def test_clear_drops_the_audio_and_returns_the_pending_marks() -> None:
    src = LiveSource()
    fired: list[str] = []
    src.on_mark = fired.append
    src.push(np.full(1600, 500, dtype=np.int16))
    src.mark("x")
    src.mark("y")
    drain(src, 3)
    assert src.clear() == ["x", "y"]
    assert fired == []
    assert not drain(src, 1)[0].any()
    src.push(np.full(160, 7, dtype=np.int16))
    src.mark("z")
    drain(src, 1)
    assert fired == ["z"]  # positions count from after the clear


def test_dropped_overflow_counts_as_played_for_marks() -> None:
    src = LiveSource(max_frames=2)
    fired: list[str] = []
    src.on_mark = fired.append
    src.push(np.ones(160, dtype=np.int16))
    src.mark("old")
    src.push(np.ones(480, dtype=np.int16))  # the first frame is dropped
    assert fired == ["old"]


@pytest.mark.parametrize(("rate_in", "rate_out"), [(8000, 16000), (16000, 8000), (8000, 48000)])
def test_frame_resampler_matches_the_whole_signal_resampler(rate_in: int, rate_out: int) -> None:
    t = np.arange(rate_in) / rate_in
    x = 8000 * np.sin(2 * np.pi * 440 * t)
    block = rate_in // 50
    r = FrameResampler(rate_in, rate_out)
    y = np.concatenate([r.process(x[k : k + block]) for k in range(0, x.size, block)])
    assert y.size == rate_out
    ref = resample(x, rate_in, rate_out)
    # Same tone, delayed by the filter: compare after aligning.
    lag = int(np.argmax(np.correlate(y[: rate_out // 2], ref[: rate_out // 4], mode="valid")))
    n = rate_out // 2
    err = y[lag : lag + n] - ref[:n]
    assert np.sqrt(np.mean(err**2)) < 0.01 * 8000


@pytest.mark.skipif(not rnnoise.available(), reason="the pyrnnoise wheel's librnnoise is missing")
def test_rnnoise_removes_white_noise_and_keeps_a_frame_size() -> None:
    d = rnnoise.Denoiser()
    rng = np.random.default_rng(3)
    x = np.round(rng.normal(0, 2000, 8000 * 2)).astype(np.int16)
    y = x.copy()
    for k in range(0, y.size, 160):
        d.process(y[k : k + 160])
    d.close()
    assert y[4000:].std() < x[4000:].std() / 30
