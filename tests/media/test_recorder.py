"""Recorder: directions, stereo layout, time alignment under jitter/loss, pause, WAV/MP3 files,
crash safety, and the stop-condition timers."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile

from callplane.media.recorder import (
    Recorder,
    RecorderError,
    RecordingTimers,
    VoiceActivityDetector,
    beep,
    repair_wav,
    webrtc_mode,
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


def run_call(rec: Recorder, n: int, inbound_first: bool = False) -> None:
    """n ticks of a well-behaved call: one outbound and one inbound frame per tick."""
    a, b = frames(A_HZ, n), frames(B_HZ, n)
    for i in range(n):
        if inbound_first:
            rec.feed(a[i], "inbound")
            rec.feed(b[i], "outbound")
        else:
            rec.feed(b[i], "outbound")
            rec.feed(a[i], "inbound")


def read(path: Path) -> tuple[np.ndarray, int]:
    data, rate = soundfile.read(str(path), dtype="int16", always_2d=True)
    return data, rate


@pytest.mark.parametrize("inbound_first", [False, True])
def test_speak_records_only_the_far_end_exactly(tmp_path: Path, inbound_first: bool) -> None:
    rec = Recorder(tmp_path / "r.wav", format="wav", direction="speak")
    run_call(rec, 50, inbound_first)
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


def test_jitter_lands_late_packets_in_their_slot(tmp_path: Path) -> None:
    """Inbound packets delayed by up to jitter_frames ticks, then burst, stay aligned.

    The first packet arrives on time: it anchors the stream in the tick it arrived in (a far end
    that starts sending a few ticks into the recording is not late, it started later)."""
    n = 60
    a, b = frames(A_HZ, n), frames(B_HZ, n)
    rec = Recorder(tmp_path / "r.wav", direction="both", stereo=True, jitter_frames=3)
    pending: list[np.ndarray] = []
    for i in range(n):
        rec.feed(b[i], "outbound")
        pending.append(a[i])
        if i == 0 or i % 3 == 2:  # then every third tick the network delivers three at once
            for f in pending:
                rec.feed(f, "inbound")
            pending.clear()
    res = rec.finish()
    data, _ = read(res.path)
    assert res.samples == n * FRAME_SAMPLES
    assert np.array_equal(data[:, 0], np.concatenate(a))
    assert np.array_equal(data[:, 1], np.concatenate(b))


def test_a_far_end_that_starts_late_is_placed_where_it_started(tmp_path: Path) -> None:
    n = 40
    a, b = frames(A_HZ, n), frames(B_HZ, n)
    rec = Recorder(tmp_path / "r.wav", direction="both", stereo=True, jitter_frames=3)
    start = 3  # the far end's first packet comes 60 ms into the recording
    for i in range(n):
        rec.feed(b[i], "outbound")
        if i >= start:
            rec.feed(a[i], "inbound")
    data, _ = read(rec.finish().path)
    assert not data[: start * FRAME_SAMPLES, 0].any()
    assert np.array_equal(data[start * FRAME_SAMPLES :, 0], np.concatenate(a[start:]))


def test_lost_packets_become_silence_without_shifting(tmp_path: Path) -> None:
    n = 30
    a = frames(A_HZ, n)
    rec = Recorder(tmp_path / "r.wav", direction="speak")
    lost = {5, 6, 7, 8, 9, 10}  # a 120 ms outage: longer than the jitter window
    for i in range(n):
        rec.feed(np.zeros(FRAME_SAMPLES, np.int16), "outbound")
        if i not in lost:
            rec.feed(a[i], "inbound")
    data, _ = read(rec.finish().path)
    x = data[:, 0].reshape(n, FRAME_SAMPLES)
    for i in range(n):
        if i in lost:
            assert not x[i].any(), i
        else:
            assert np.array_equal(x[i], a[i]), i


def test_single_loss_closes_up_then_realigns(tmp_path: Path) -> None:
    """One lost packet cannot be told from a late one without RTP timestamps: the stream
    closes up (runs one slot late, nothing dropped) and is realigned within ~0.5 s."""
    n = 100
    a = frames(A_HZ, n)
    rec = Recorder(tmp_path / "r.wav", direction="speak")
    for i in range(n):
        rec.feed(np.zeros(FRAME_SAMPLES, np.int16), "outbound")
        if i != 20:
            rec.feed(a[i], "inbound")
    res = rec.finish()
    x = read(res.path)[0][:, 0].reshape(n, FRAME_SAMPLES)
    assert res.samples == n * FRAME_SAMPLES
    assert all(np.array_equal(x[i], a[i]) for i in range(20))
    assert any(not x[i].any() for i in range(20, 50))  # the loss became silence somewhere
    assert all(np.array_equal(x[i], a[i]) for i in range(50, n))  # and alignment is back


def test_other_packet_sizes_and_inbound_only_clock(tmp_path: Path) -> None:
    """30 ms packets with no outbound frames at all (inbound drives the clock)."""
    signal = np.concatenate(frames(A_HZ, 30))  # 4800 samples = 20 packets of 240
    rec = Recorder(tmp_path / "r.wav", direction="speak")
    for i in range(0, signal.size, 240):
        rec.feed(signal[i : i + 240], "inbound")
    res = rec.finish()
    data, _ = read(res.path)
    assert np.array_equal(data[:, 0], signal)
    assert res.duration == 0.6


def test_outbound_gap_during_dtmf_is_silence_on_that_side(tmp_path: Path) -> None:
    """The engine skips outbound frames while it sends RFC 4733 packets: inbound keeps time."""
    n = 40
    a, b = frames(A_HZ, n), frames(B_HZ, n)
    rec = Recorder(tmp_path / "r.wav", direction="both", stereo=True)
    gap = range(10, 20)
    for i in range(n):
        if i not in gap:
            rec.feed(b[i], "outbound")
        rec.feed(a[i], "inbound")
    res = rec.finish()
    data, _ = read(res.path)
    # Total time is preserved (within the jitter window) and nothing from inbound is lost.
    assert abs(res.samples - n * FRAME_SAMPLES) <= 4 * FRAME_SAMPLES
    assert np.count_nonzero(data[:, 0]) >= np.count_nonzero(np.concatenate(a)) - 10


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
    rec.feed(np.zeros(FRAME_SAMPLES, np.int16), "outbound")  # ignored, never raises
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
    run_call(rec, 180)  # 3.6 s: the header was last refreshed at 3.0 s (+ buffered slots)
    # Simulate a crash: flush the OS-level buffer but never finish() (no final header).
    rec._writer._f.flush()  # type: ignore[union-attr]
    data, _ = read(path)
    assert data.shape[0] >= 150 * FRAME_SAMPLES - 4 * FRAME_SAMPLES  # readable as is
    n = repair_wav(path)
    assert n == (180 - 4) * FRAME_SAMPLES  # everything written (jitter window still buffered)
    data, _ = read(path)
    assert data.shape[0] == n
    assert np.array_equal(data[:, 0], np.concatenate(frames(A_HZ, 180))[:n])


def test_long_recording_keeps_memory_bounded(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.wav", direction="both", stereo=True)
    run_call(rec, 3000)  # one minute
    assert rec._in.shape[0] == rec._ring_size <= 10
    assert rec.finish().duration == 60.0


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


def test_vad_on_speechlike_signal_silence_and_faint_noise() -> None:
    vad = VoiceActivityDetector(44.0)
    assert not vad.is_speech(np.zeros(FRAME_SAMPLES, np.int16))
    faint = np.random.default_rng(0).normal(0, 20, FRAME_SAMPLES).astype(np.int16)  # -64 dBFS
    assert not vad.is_speech(faint)
    # A vowel-like harmonic complex (150 Hz fundamental, formant-ish weighting) at -20 dBFS.
    t = np.arange(FRAME_SAMPLES * 10) / SAMPLE_RATE
    v = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 20))
    v = (v / np.abs(v).max() * 6000).astype(np.int16)
    verdicts = [vad.is_speech(v[i : i + FRAME_SAMPLES]) for i in range(0, v.size, FRAME_SAMPLES)]
    assert sum(verdicts) >= 8
    assert vad.is_speech(v[:480]) in (True, False)  # other frame sizes are accepted


def test_sensitivity_mapping() -> None:
    assert [webrtc_mode(s) for s in (0, 24, 25, 44, 50, 74, 75, 100)] == [3, 3, 2, 2, 1, 1, 0, 0]


def test_speak_side_playback_is_mixed_into_the_speak_channel(tmp_path: Path) -> None:
    n = 20
    a, b = frames(A_HZ, n), frames(B_HZ, n)
    rec = Recorder(tmp_path / "r.wav", direction="both", stereo=True)
    for i in range(n):
        rec.feed(np.zeros(FRAME_SAMPLES, np.int16), "outbound")
        rec.feed(b[i], "speak")  # what a speak-direction play said this tick
        rec.feed(a[i] // 2, "inbound")
    data, _ = read(rec.finish().path)
    expected = np.concatenate(a) // 2 + np.concatenate(b)
    assert np.array_equal(data[:, 0], np.clip(expected, -32768, 32767))
    assert not data[:, 1].any()  # nothing was sent to the far end


def test_a_listen_only_recording_ignores_the_speak_side(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.wav", direction="listen")
    for f in frames(B_HZ, 10):
        rec.feed(np.zeros(FRAME_SAMPLES, np.int16), "outbound")
        rec.feed(f, "speak")
    data, _ = read(rec.finish().path)
    assert not np.asarray(data).any()
