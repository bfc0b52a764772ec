"""Recorder: one slot per media tick (TickFrames), directions, stereo layout, pause, WAV/MP3
files, crash safety, and the stop-condition timers."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile

from callplane.media.engine import TickFrames
from callplane.media.recorder import (
    Recorder,
    RecorderError,
    RecordingTimers,
    beep,
    repair_wav,
)
from callplane.media.sources import FRAME_SAMPLES, SAMPLE_RATE, tone

A_HZ = 500.0  # far end ("speak", inbound)
B_HZ = 1500.0  # our side ("listen", outbound)


def frames(freq: float, n: int) -> list[np.ndarray]:
    return list(tone(freq, n * FRAME_SAMPLES / SAMPLE_RATE))


def level_at(x: np.ndarray, freq: float) -> float:
    """Magnitude of ``freq`` in ``x`` (normalised DFT bin), in int16 units."""
    x = np.asarray(x, dtype=np.float64)
    t = np.arange(x.size) / SAMPLE_RATE
    return float(abs(np.dot(x, np.exp(-2j * np.pi * freq * t))) * 2 / max(x.size, 1))


SILENT = np.zeros(FRAME_SAMPLES, np.int16)


def tick(
    n: int,
    inbound: np.ndarray | None = None,
    outbound: np.ndarray | None = None,
    speak: np.ndarray | None = None,
) -> TickFrames:
    return TickFrames(
        tick=n,
        inbound=SILENT.copy() if inbound is None else inbound,
        outbound=SILENT.copy() if outbound is None else outbound,
        speak=speak,
        heard=inbound is not None,
    )


def run_call(rec: Recorder, n: int) -> None:
    """n ticks of a call: the far end says A_HZ, we send B_HZ."""
    a, b = frames(A_HZ, n), frames(B_HZ, n)
    for i in range(n):
        rec.feed(tick(i, a[i], b[i]))


def read(path: Path) -> tuple[np.ndarray, int]:
    data, rate = soundfile.read(str(path), dtype="int16", always_2d=True)
    return data, rate


def test_speak_records_only_the_far_end_exactly(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.wav", format="wav", direction="speak")
    run_call(rec, 50)
    res = rec.finish()
    data, rate = read(res.path)
    assert rate == SAMPLE_RATE and data.shape == (50 * FRAME_SAMPLES, 1)
    assert res.samples == 50 * FRAME_SAMPLES and res.duration == 1.0
    assert res.size == res.path.stat().st_size == 44 + 50 * FRAME_SAMPLES * 2
    # Sample-exact: the file is the inbound tone itself.
    expected = np.concatenate(frames(A_HZ, 50))
    assert np.array_equal(data[:, 0], expected)


def test_listen_records_only_what_we_send(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.wav", direction="listen")
    run_call(rec, 25)
    res = rec.finish()
    data, _ = read(res.path)
    assert np.array_equal(data[:, 0], np.concatenate(frames(B_HZ, 25)))
    assert res.duration == 0.5


def test_both_mono_mixes_sample_aligned(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.wav", direction="both")
    run_call(rec, 40)
    res = rec.finish()
    data, _ = read(res.path)
    a = np.concatenate(frames(A_HZ, 40)).astype(np.int32)
    b = np.concatenate(frames(B_HZ, 40)).astype(np.int32)
    assert np.array_equal(data[:, 0], np.clip(a + b, -32768, 32767))
    assert res.duration == 0.8


def test_stereo_separates_directions(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.wav", direction="both", stereo=True)
    run_call(rec, 50)
    res = rec.finish()
    data, _ = read(res.path)
    assert data.shape == (8000, 2) and res.channels == 2
    left, right = data[:, 0], data[:, 1]
    assert np.array_equal(left, np.concatenate(frames(A_HZ, 50)))  # left = speak = inbound
    assert np.array_equal(right, np.concatenate(frames(B_HZ, 50)))  # right = listen = outbound
    # and therefore no crosstalk at all
    assert level_at(left, B_HZ) < 1 and level_at(right, A_HZ) < 1
    assert level_at(left, A_HZ) > 1000 and level_at(right, B_HZ) > 1000
    assert res.size == 44 + 8000 * 4


def test_stereo_single_direction_keeps_layout(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.wav", direction="listen", stereo=True)
    run_call(rec, 10)
    data, _ = read(rec.finish().path)
    assert not data[:, 0].any() and data[:, 1].any()


@pytest.mark.parametrize("n", [1, 7, 50, 333])
def test_n_ticks_make_exactly_n_slots(tmp_path: Path, n: int) -> None:
    rec = Recorder(tmp_path / "r.wav", direction="both", stereo=True)
    run_call(rec, n)
    res = rec.finish()
    assert res.samples == n * FRAME_SAMPLES and res.duration == n * 0.02
    assert read(res.path)[0].shape == (n * FRAME_SAMPLES, 2)


def test_ticks_where_nothing_arrived_are_silence_in_place(tmp_path: Path) -> None:
    """The far end stops sending (its ticks are silence, heard=False): the file keeps time,
    the audio around the gap stays in its own ticks."""
    n = 30
    a = frames(A_HZ, n)
    rec = Recorder(tmp_path / "r.wav", direction="speak")
    lost = set(range(5, 11))
    for i in range(n):
        rec.feed(tick(i, None if i in lost else a[i]))
    data, _ = read(rec.finish().path)
    x = data[:, 0].reshape(n, FRAME_SAMPLES)
    for i in range(n):
        if i in lost:
            assert not x[i].any(), i
        else:
            assert np.array_equal(x[i], a[i]), i


@pytest.mark.parametrize("behavior,expected_ticks", [("skip", 30), ("silence", 50)])
def test_pause(tmp_path: Path, behavior: str, expected_ticks: int) -> None:
    rec = Recorder(tmp_path / "r.wav", direction="both")
    run_call(rec, 15)
    rec.pause(behavior)  # type: ignore[arg-type]
    assert rec.paused and rec.pause_behavior == behavior
    run_call(rec, 20)
    rec.resume()
    run_call(rec, 15)
    res = rec.finish()
    assert res.samples == expected_ticks * FRAME_SAMPLES
    assert res.duration == expected_ticks * 0.02
    data, _ = read(res.path)
    assert data.shape[0] == res.samples
    if behavior == "silence":
        x = data[:, 0].reshape(50, FRAME_SAMPLES)
        assert x[:15].any(axis=1).all() and not x[15:35].any() and x[35:].any(axis=1).all()


def test_pause_rejects_unknown_behavior(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.wav")
    with pytest.raises(ValueError):
        rec.pause("mute")  # type: ignore[arg-type]
    rec.abort()
    assert not (tmp_path / "r.wav").exists()


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Recorder(tmp_path / "x.mp4", format="mp4")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Recorder(tmp_path / "x.wav", direction="inbound")  # type: ignore[arg-type]


def test_finish_twice_and_feed_after_finish(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.wav")
    run_call(rec, 3)
    rec.finish()
    rec.feed(tick(3))  # ignored, never raises
    with pytest.raises(RecorderError):
        rec.finish()


def test_wav_is_plain_pcm16_readable_by_stdlib(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.wav", direction="both", stereo=True)
    run_call(rec, 7)
    res = rec.finish()
    with wave.open(str(res.path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        assert w.getnframes() == 7 * FRAME_SAMPLES


@pytest.mark.parametrize("stereo", [False, True])
def test_mp3_decodes_to_the_right_duration(tmp_path: Path, stereo: bool) -> None:
    rec = Recorder(tmp_path / "r.mp3", format="mp3", direction="both", stereo=stereo)
    run_call(rec, 150)  # 3 s
    res = rec.finish()
    assert res.format == "mp3" and res.duration == 3.0
    assert res.size == res.path.stat().st_size > 1000
    info = soundfile.info(str(res.path))
    assert info.format == "MP3" and info.samplerate == SAMPLE_RATE
    data, _ = read(res.path)
    # libsndfile writes and honours the LAME gapless header: exact here. Other decoders may
    # add up to one MP3 frame (576 samples at 8 kHz) of padding: that is the documented bound.
    assert abs(data.shape[0] - res.samples) <= 576
    assert data.shape[1] == (2 if stereo else 1)
    mid = data[4000:20000].astype(np.float64)
    if stereo:
        assert level_at(mid[:, 0], A_HZ) > 10 * level_at(mid[:, 0], B_HZ)
        assert level_at(mid[:, 1], B_HZ) > 10 * level_at(mid[:, 1], A_HZ)
    else:
        assert level_at(mid[:, 0], A_HZ) > 1000 and level_at(mid[:, 0], B_HZ) > 1000


def test_crash_leaves_a_readable_wav_and_repair_restores_it(tmp_path: Path) -> None:
    path = tmp_path / "crash.wav"
    rec = Recorder(path, direction="speak")
    run_call(rec, 180)  # 3.6 s: the header was last refreshed at 3.0 s
    # Simulate a crash: flush the OS-level buffer but never finish() (no final header).
    rec._writer._f.flush()  # type: ignore[union-attr]
    data, _ = read(path)
    assert data.shape[0] >= 150 * FRAME_SAMPLES  # readable as is
    n = repair_wav(path)
    assert n == 180 * FRAME_SAMPLES  # every tick fed is on disk: nothing is held back
    data, _ = read(path)
    assert data.shape[0] == n
    assert np.array_equal(data[:, 0], np.concatenate(frames(A_HZ, 180)))


def test_beep_is_a_quarter_second_1khz_tone() -> None:
    src = beep()
    assert src.duration == 0.25
    x = src.render()[:2000]
    assert level_at(x, 1000.0) > 5 * level_at(x, 500.0)


# -- timers and VAD ---------------------------------------------------------------------------


def test_timers_no_input() -> None:
    t = RecordingTimers(initial_timeout=1.0, end_silence_timeout=0.5)
    results = [t.update(False) for _ in range(50)]
    assert results[:49] == [None] * 49 and results[49] == "no_input"


def test_timers_end_silence_after_speech() -> None:
    t = RecordingTimers(initial_timeout=1.0, end_silence_timeout=0.5)
    assert all(t.update(True) is None for _ in range(100))  # 2 s of speech
    results = [t.update(False) for _ in range(25)]
    assert results[-1] == "end_silence" and results[:-1] == [None] * 24


def test_timers_max_length_and_disabled() -> None:
    t = RecordingTimers(initial_timeout=0, end_silence_timeout=0, max_length=2)
    results = [t.update(False) for _ in range(100)]
    assert results[-1] == "max_length" and results[:-1] == [None] * 99
    t = RecordingTimers(initial_timeout=0, end_silence_timeout=0, max_length=0)
    assert all(t.update(False) is None for _ in range(1000))
    with pytest.raises(ValueError):
        RecordingTimers(initial_timeout=-1)


def test_speak_side_playback_is_mixed_into_the_speak_channel(tmp_path: Path) -> None:
    n = 20
    a, b = frames(A_HZ, n), frames(B_HZ, n)
    rec = Recorder(tmp_path / "r.wav", direction="both", stereo=True)
    for i in range(n):
        # b: what a speak-direction play said this tick
        rec.feed(tick(i, a[i] // 2, speak=b[i]))
    data, _ = read(rec.finish().path)
    expected = np.concatenate(a) // 2 + np.concatenate(b)
    assert np.array_equal(data[:, 0], np.clip(expected, -32768, 32767))
    assert not data[:, 1].any()  # nothing was sent to the far end


def test_a_listen_only_recording_ignores_the_speak_side(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.wav", direction="listen")
    for i, f in enumerate(frames(B_HZ, 10)):
        rec.feed(tick(i, speak=f))
    data, _ = read(rec.finish().path)
    assert not np.asarray(data).any()
