"""Voice activity: webrtcvad + energy floor + hangover, and the input_sensitivity mapping."""

from __future__ import annotations

import numpy as np
import pytest
from dsp_audio import HELLO, concat, feed_all, flite, needs_flite, noise, silence, sine

from callplane.media.dsp.vad import (
    SpeechEnd,
    SpeechStart,
    Vad,
    frame_dbov,
    sensitivity_to_floor_dbov,
    sensitivity_to_mode,
)
from callplane.media.sources import SAMPLE_RATE

pytestmark = needs_flite


def test_sensitivity_mapping() -> None:
    assert sensitivity_to_floor_dbov(0) == -25.0
    assert sensitivity_to_floor_dbov(44) == pytest.approx(-40.4)
    assert sensitivity_to_floor_dbov(100) == -60.0
    assert sensitivity_to_floor_dbov(150) == -60.0
    modes = [sensitivity_to_mode(s) for s in (0, 24, 25, 44, 50, 74, 75, 100)]
    assert modes == [3, 3, 2, 2, 1, 1, 0, 0]
    v = Vad()
    assert v.mode == 2 and v.floor_dbov == pytest.approx(-40.4)
    assert Vad(mode=0, floor_dbov=-50).mode == 0
    with pytest.raises(ValueError):
        Vad(mode=4)


def test_frame_dbov() -> None:
    x = np.round(sine(1000, 0.02, -20)).astype(np.int16)
    assert frame_dbov(x) == pytest.approx(-20, abs=0.1)


def test_silence_and_low_noise_are_not_speech() -> None:
    assert feed_all(Vad(), silence(3)) == []
    assert feed_all(Vad(), noise(3 * SAMPLE_RATE, -50)) == []


def test_hello_start_and_end_times() -> None:
    hello = flite(HELLO, level_dbov=-20)
    dur = hello.size / SAMPLE_RATE
    ev = feed_all(Vad(), concat(silence(0.5), hello, silence(1.0)))
    assert [type(e) for e in ev] == [SpeechStart, SpeechEnd]
    assert ev[0].t == pytest.approx(0.5, abs=0.05)
    assert ev[1].t == pytest.approx(0.5 + dur, abs=0.08)
    assert ev[1].duration == pytest.approx(dur, abs=0.1)


def test_end_is_reported_after_the_hangover() -> None:
    vad = Vad(hangover=0.5)
    x = concat(silence(0.2), flite(HELLO), silence(1.0))
    frames = np.round(x[: x.size // 160 * 160]).astype(np.int16).reshape(-1, 160)
    t_end_reported = None
    end = None
    for k, f in enumerate(frames):
        for e in vad.feed(f, k * 0.02):
            if isinstance(e, SpeechEnd):
                t_end_reported, end = (k + 1) * 0.02, e
    assert end is not None and t_end_reported is not None
    assert t_end_reported - end.t == pytest.approx(0.5, abs=0.021)


def test_hangover_bridges_short_pauses_only() -> None:
    w = flite("Yes", level_dbov=-20)
    short = feed_all(Vad(hangover=0.3), concat(w, silence(0.2), w, silence(1)))
    long = feed_all(Vad(hangover=0.3), concat(w, silence(0.6), w, silence(1)))
    assert [type(e) for e in short] == [SpeechStart, SpeechEnd]
    assert [type(e) for e in long] == [SpeechStart, SpeechEnd, SpeechStart, SpeechEnd]


def test_sensitivity_decides_quiet_speech() -> None:
    quiet = concat(flite(HELLO, level_dbov=-48), silence(1))
    assert feed_all(Vad(input_sensitivity=44), quiet) == []
    assert len(feed_all(Vad(input_sensitivity=100), quiet)) == 2
    loud = concat(flite(HELLO, level_dbov=-20), silence(1))
    assert len(feed_all(Vad(input_sensitivity=0), loud)) == 2


def test_click_does_not_start_speech() -> None:
    click = concat(silence(0.2), noise(160, -10), silence(0.5))
    assert feed_all(Vad(), click) == []


def test_flush_ends_open_speech() -> None:
    vad = Vad()
    ev = feed_all(vad, flite(HELLO), flush=False)
    assert [type(e) for e in ev] == [SpeechStart]
    assert [type(e) for e in vad.flush()] == [SpeechEnd]
    assert vad.flush() == []


def test_raw_decision_for_record_and_asr() -> None:
    """The per-frame verdict record's timers and the ASR endpointer use: silence and faint
    noise are not speech, a vowel-like sound is, whatever the frame length."""
    vad = Vad(input_sensitivity=44)
    assert not vad.is_voiced(np.zeros(160, np.int16))
    assert not vad.is_voiced(np.zeros(0, np.int16))
    faint = np.random.default_rng(0).normal(0, 20, 160).astype(np.int16)  # about -64 dBov
    assert not vad.is_voiced(faint)
    # A vowel-like harmonic complex (150 Hz fundamental) at about -20 dBov.
    t = np.arange(160 * 10) / SAMPLE_RATE
    v = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 20))
    v = (v / np.abs(v).max() * 6000).astype(np.int16)
    assert sum(vad.is_voiced(v[i : i + 160]) for i in range(0, v.size, 160)) >= 8
    assert vad.is_voiced(v[:480])  # three 20 ms pieces, judged piece by piece
    assert not vad.in_speech  # the raw decision changes no state
