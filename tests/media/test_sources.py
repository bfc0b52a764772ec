"""Audio sources: frame shape, tone frequencies (FFT), ringtone cadences, files, resampling."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from callplane.media import sources
from callplane.media.sources import FRAME_SAMPLES, RINGTONE_NAMES, RINGTONES

REST_ENUM = (  # noqa: SIM905 - pasted from the reference as one string
    "at au be bg br ca ch cl cn cy cz de dk dz ee eg es fi fr gr hu il in it jp ko lt mx my nl no "
    "nz ph pk pl pt ro rs ru sa se sg th tr tw uk us ve za bong"
).split()


def peak_freqs(x: np.ndarray, count: int) -> list[float]:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(x.size)))
    freqs = np.fft.rfftfreq(x.size, 1 / 8000)
    peaks = []
    guard = max(2, int(10 * x.size / 8000))  # blank +-10 Hz around each found peak
    for _ in range(count):
        i = int(np.argmax(spec))
        peaks.append(float(freqs[i]))
        spec[max(0, i - guard) : i + guard + 1] = 0
    return sorted(peaks)


def on_off_runs(x: np.ndarray) -> list[tuple[bool, int]]:
    """Cadence as (tone on?, milliseconds) runs, judged per 20 ms frame."""
    on = np.abs(x.reshape(-1, FRAME_SAMPLES)).max(axis=1) > 100
    runs: list[tuple[bool, int]] = []
    for v in on:
        if runs and runs[-1][0] == bool(v):
            runs[-1] = (bool(v), runs[-1][1] + 20)
        else:
            runs.append((bool(v), 20))
    return runs


def test_frames_are_160_int16_samples() -> None:
    for src in (sources.tone(440, 1.0), sources.silence(0.5), sources.ringtone("us", 3)):
        frames = list(src)
        assert frames and all(f.shape == (160,) and f.dtype == np.int16 for f in frames)


@pytest.mark.parametrize("freq", [350, 1000, 1633, 3000])
def test_tone_frequency_by_fft(freq: int) -> None:
    x = sources.tone(freq, 1.0).render()
    assert x.size == 8000
    assert peak_freqs(x, 1) == [pytest.approx(freq, abs=2)]


def test_dual_tone_and_level() -> None:
    x = sources.tone([697, 1209], 2.0, level_dbfs=-6).render()
    assert peak_freqs(x, 2) == [pytest.approx(697, abs=2), pytest.approx(1209, abs=2)]
    assert np.abs(x).max() == pytest.approx(32767 * 10 ** (-6 / 20), rel=0.02)
    single = sources.tone(1000, 1.0, level_dbfs=-20).render()
    rms_db = 20 * np.log10(np.sqrt(np.mean(single.astype(float) ** 2)) / 32767)
    assert rms_db == pytest.approx(-23.0, abs=0.1)  # sine RMS is 3 dB under its peak


def test_tone_duration_rounding_and_endless() -> None:
    src = sources.tone(1000, 0.05)
    frames = list(src)
    assert len(frames) == 3  # 50 ms = 2.5 frames, last one zero-padded
    assert not frames[2][80:].any() and frames[2][:80].any()
    endless = sources.tone(1000, None)
    assert endless.duration is None
    reader = endless.reader()
    for _ in range(1000):
        assert reader.next_frame() is not None


def test_tone_is_phase_continuous_across_cycles() -> None:
    x = sources.tone(1000, 3.0).render().astype(float)
    # A 1 kHz sine at 8 kHz repeats every 8 samples exactly; the seam at 1 s must not click.
    assert np.allclose(x[7990:8010], x[7990 - 8 : 8010 - 8], atol=1)


def test_non_integer_frequency() -> None:
    x = sources.tone(440.5, 2.0).render()
    assert peak_freqs(x, 1) == [pytest.approx(440.5, abs=1)]


def test_silence() -> None:
    src = sources.silence(1.0)
    frames = list(src)
    assert len(frames) == 50 and not any(f.any() for f in frames)
    assert src.duration == 1.0


def test_ringtone_table_covers_rest_enum_and_us_old() -> None:
    assert set(REST_ENUM) <= set(RINGTONE_NAMES)
    assert "us-old" in RINGTONE_NAMES
    assert set(RINGTONE_NAMES) == set(REST_ENUM) | {"us-old"}
    for name in RINGTONE_NAMES:
        src = sources.ringtone(name, 1.0)
        assert src.duration == 1.0


@pytest.mark.parametrize(
    ("country", "cadence", "freqs"),
    [
        ("us", [(True, 2000), (False, 4000)], [440, 480]),
        ("uk", [(True, 400), (False, 200), (True, 400), (False, 2000)], [400, 450]),
        ("de", [(True, 1000), (False, 4000)], [425]),
        ("fr", [(True, 1500), (False, 3500)], [440]),
        ("jp", [(True, 1000), (False, 2000)], [400]),
        ("au", [(True, 400), (False, 200), (True, 400), (False, 2000)], [413, 438]),
        ("es", [(True, 1500), (False, 3000)], [425]),
    ],
)
def test_ringtone_cadence_and_frequencies(
    country: str, cadence: list[tuple[bool, int]], freqs: list[int]
) -> None:
    cycle_ms = sum(ms for _, ms in cadence)
    x = sources.ringtone(country, 2 * cycle_ms / 1000).render()
    assert on_off_runs(x) == cadence + cadence
    on = x[: cadence[0][1] * 8]
    assert peak_freqs(on, len(freqs)) == [pytest.approx(f, abs=3) for f in freqs]


def test_modulated_ringtone_has_sidebands() -> None:
    # India: 400 Hz modulated at 25 Hz -> energy at 375 / 400 / 425 Hz.
    x = sources.ringtone("in", 0.4).render()[:3200]
    assert peak_freqs(x, 3) == [
        pytest.approx(375, abs=3),
        pytest.approx(400, abs=3),
        pytest.approx(425, abs=3),
    ]


def test_ringtone_endless_and_unknown() -> None:
    src = sources.ringtone("US")
    assert src.duration is None
    with pytest.raises(ValueError, match="unknown ringtone"):
        sources.ringtone("xx")


def test_table_entries_are_well_formed() -> None:
    for name, spec in RINGTONES.items():
        assert spec.segments, name
        assert any(t is not None for _, t in spec.segments), name
        for ms, t in spec.segments:
            assert ms > 0
            if t is not None:
                assert all(0 < f < 4000 for f in t.freqs)


def test_sources_are_cheap_per_frame() -> None:
    reader = sources.ringtone("uk").reader()
    t0 = time.perf_counter()
    for _ in range(50_000):
        reader.next_frame()
    per_frame = (time.perf_counter() - t0) / 50_000
    assert per_frame < 20e-6  # a slice, not a synthesis


def test_pcm_int16_and_float_with_resampling() -> None:
    x = (np.sin(np.arange(16000) * 2 * np.pi * 500 / 16000) * 0.5).astype(np.float64)
    src = sources.pcm(x, sample_rate=16000)
    y = src.render()
    assert y.size == 8000
    assert peak_freqs(y, 1) == [pytest.approx(500, abs=2)]
    raw = np.arange(320, dtype=np.int16)
    assert np.array_equal(sources.pcm(raw).render(), raw)
    with pytest.raises(ValueError):
        sources.pcm(np.zeros((2, 10)))


def test_resampler_rejects_aliases_and_keeps_passband() -> None:
    t = np.arange(44100) / 44100
    for f, lo, hi in ((1000, -0.2, 0.2), (3000, -0.5, 0.2), (5000, -200, -60), (9000, -200, -60)):
        y = sources.resample(0.5 * np.sin(2 * np.pi * f * t), 44100)
        gain = 20 * np.log10(np.sqrt(np.mean(y[200:-200] ** 2)) / (0.5 / np.sqrt(2)))
        assert lo <= gain <= hi, (f, gain)


def test_resampler_preserves_timing() -> None:
    x = np.zeros(48000)
    x[24000] = 1.0
    y = sources.resample(x, 48000)
    assert int(np.argmax(y)) == 4000


@pytest.mark.parametrize("fmt", ["WAV", "MP3"])
def test_audio_file_decodes_and_resamples(tmp_path: Path, fmt: str) -> None:
    rate = 44100
    t = np.arange(rate * 2) / rate
    left = 0.4 * np.sin(2 * np.pi * 800 * t)
    stereo = np.stack([left, left], axis=1)
    path = tmp_path / f"tone.{fmt.lower()}"
    try:
        soundfile.write(path, stereo, rate, format=fmt)
    except (soundfile.LibsndfileError, TypeError, ValueError) as exc:  # pragma: no cover
        pytest.skip(f"libsndfile cannot write {fmt}: {exc}")
    src = sources.audio_file(path)
    y = src.render()
    assert src.duration == pytest.approx(2.0, abs=0.1)
    assert peak_freqs(y[800:-800], 1) == [pytest.approx(800, abs=3)]
    rms = np.sqrt(np.mean(y[800:-800].astype(float) ** 2)) / 32767
    assert rms == pytest.approx(0.4 / np.sqrt(2), rel=0.1)


def test_audio_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    with pytest.raises(ValueError, match="cannot decode"):
        sources.audio_file(bad)
    with pytest.raises(ValueError):
        sources.audio_file(tmp_path / "missing.wav")
