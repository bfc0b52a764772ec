"""CNG / CED (ANSam) / beep detectors on generated tones, speech and noise."""

from __future__ import annotations

import numpy as np
import pytest
from dsp_audio import (
    GREETING,
    LONG_TEXT,
    concat,
    feed_all,
    flite,
    needs_flite,
    noise,
    silence,
    sine,
)

from callplane.media.dsp.tones import (
    BeepDetector,
    CedDetector,
    CngDetector,
    FaxToneDetector,
    ToneAnalyser,
    ToneDetected,
    ToneEnded,
)
from callplane.media.sources import SAMPLE_RATE


def detected(events: list[object]) -> list[ToneDetected]:
    return [e for e in events if isinstance(e, ToneDetected)]


def ended(events: list[object]) -> list[ToneEnded]:
    return [e for e in events if isinstance(e, ToneEnded)]


def cng(bursts: int, freq: float = 1100.0, on: float = 0.5, off: float = 3.0) -> np.ndarray:
    return concat(*[concat(sine(freq, on, -20), silence(off)) for _ in range(bursts)])


def ansam(
    seconds: float, freq: float = 2100.0, reversals: bool = True, am: bool = True
) -> np.ndarray:
    """V.25 answer tone; with ``reversals`` the phase flips every 450 ms, with ``am`` the V.8
    ANSam 15 Hz amplitude modulation (20 %) is added."""
    n = round(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    phase = 2 * np.pi * freq * t
    if reversals:
        phase = phase + np.pi * np.floor(t / 0.45)
    env = 1.0 + (0.2 * np.sin(2 * np.pi * 15 * t) if am else 0.0)
    return 32767 * 10 ** (-15 / 20) * env / 1.2 * np.sin(phase)


def test_analyser_frequency_purity_and_level() -> None:
    an = ToneAnalyser()
    x = sine(1234.5, 0.1, -12.0)
    tf = None
    for k in range(4):
        tf = an.analyse(np.round(x[k * 160 : (k + 1) * 160]).astype(np.int16))
    assert tf is not None
    assert tf.freq == pytest.approx(1234.5, abs=1.0)
    assert tf.purity > 0.99
    assert tf.level_dbov == pytest.approx(-12.0, abs=0.3)
    assert ToneAnalyser().analyse(np.zeros(160, dtype=np.int16)).level_dbov < -100


def test_cng_reported_after_first_burst() -> None:
    x = concat(silence(0.7), cng(3))
    ev = feed_all(CngDetector(), x)
    det = detected(ev)
    assert len(det) == 3  # one per burst
    assert det[0].t == pytest.approx(0.7, abs=0.03)
    assert det[0].duration == pytest.approx(0.5, abs=0.04)
    assert det[0].freq == pytest.approx(1100, abs=2)
    assert len(ended(ev)) == 3


def test_cng_event_time_is_end_of_first_burst() -> None:
    det = CngDetector()
    x = concat(silence(0.7), cng(1))
    frames = np.round(x[: x.size // 160 * 160]).astype(np.int16).reshape(-1, 160)
    for k, f in enumerate(frames):
        ev = det.feed(f, k * 0.02)
        if ev:
            assert 1.2 <= k * 0.02 <= 1.3  # burst 0.7..1.2 s; reported at its end
            assert isinstance(ev[0], ToneDetected) and ev[0].tone == "CNG"
            break
    else:
        pytest.fail("no CNG")


@pytest.mark.parametrize("freq", [1070.0, 1130.0])
def test_cng_frequency_tolerance(freq: float) -> None:
    assert len(detected(feed_all(CngDetector(), cng(1, freq)))) == 1


@pytest.mark.parametrize(
    ("freq", "on"), [(1200.0, 0.5), (1000.0, 0.5), (1100.0, 0.25), (1100.0, 1.0), (1100.0, 3.0)]
)
def test_cng_wrong_frequency_or_cadence_rejected(freq: float, on: float) -> None:
    assert detected(feed_all(CngDetector(), cng(2, freq, on))) == []


def test_ced_plain() -> None:
    x = concat(silence(0.4), sine(2100, 3.0, -15), silence(0.5))
    ev = feed_all(CedDetector(), x)
    assert [type(e) for e in ev] == [ToneDetected, ToneEnded]
    assert ev[0].tone == "CED" and ev[0].t == pytest.approx(0.4, abs=0.03)
    assert ev[0].duration == pytest.approx(0.5, abs=0.021)
    assert ev[1].duration == pytest.approx(3.0, abs=0.04)
    assert ev[1].phase_reversals == 0


def test_ced_reported_after_half_a_second() -> None:
    det = CedDetector()
    x = np.round(concat(silence(0.4), sine(2100, 3.0, -15))).astype(np.int16).reshape(-1, 160)
    times = [k * 0.02 for k, f in enumerate(x) if det.feed(f, k * 0.02)]
    assert len(times) == 1 and 0.88 <= times[0] <= 0.94


@pytest.mark.parametrize("offset_hz", [0.0, -12.0, 12.0])
@pytest.mark.parametrize("am", [False, True])
def test_ansam_phase_reversals_counted(offset_hz: float, am: bool) -> None:
    x = concat(silence(0.3), ansam(3.3, 2100 + offset_hz, am=am), silence(0.5))
    ev = feed_all(CedDetector(), x)
    end = ended(ev)
    assert len(end) == 1
    assert end[0].phase_reversals == 7  # at 0.45, 0.9, ..., 3.15 s
    assert end[0].freq == pytest.approx(2100 + offset_hz, abs=2)


@pytest.mark.parametrize("freq", [2000.0, 2130.0, 1100.0])
def test_ced_wrong_frequency_rejected(freq: float) -> None:
    assert feed_all(CedDetector(), sine(freq, 3.0, -15)) == []


def test_ced_too_short_rejected() -> None:
    assert feed_all(CedDetector(), concat(sine(2100, 0.4, -15), silence(0.5))) == []


def test_fax_detector_selects_tone() -> None:
    x = concat(cng(1), sine(2100, 1.0, -15), silence(0.3))
    assert [e.tone for e in detected(feed_all(FaxToneDetector(), x))] == ["CNG", "CED"]
    assert [e.tone for e in detected(feed_all(FaxToneDetector("ced"), x))] == ["CED"]
    assert [e.tone for e in detected(feed_all(FaxToneDetector("CNG"), x))] == ["CNG"]
    with pytest.raises(ValueError):
        FaxToneDetector("V21")


@needs_flite
@pytest.mark.parametrize("freq", [440.0, 850.0, 1000.0, 1400.0, 1900.0])
def test_beep_after_speech(freq: float) -> None:
    speech = flite(GREETING, level_dbov=-18)
    beep_at = speech.size / SAMPLE_RATE + 0.2
    x = concat(speech, silence(0.2), sine(freq, 0.4, -18), silence(0.5))
    ev = feed_all(BeepDetector(), x + noise(x.size, -60))
    assert [type(e) for e in ev] == [ToneDetected, ToneEnded]
    assert ev[0].tone == "beep"
    assert ev[0].freq == pytest.approx(freq, abs=3)
    assert ev[0].t == pytest.approx(beep_at, abs=0.03)
    assert ev[1].t == pytest.approx(beep_at + 0.4, abs=0.03)
    assert ev[1].duration == pytest.approx(0.4, abs=0.04)


def test_beep_right_after_speech_without_gap() -> None:
    speech = flite("Please leave a message.", level_dbov=-18)
    x = concat(speech, sine(1000, 0.25, -18), silence(0.3))
    det = detected(feed_all(BeepDetector(), x))
    assert len(det) == 1 and det[0].freq == pytest.approx(1000, abs=3)


def test_beep_in_noise() -> None:
    x = concat(silence(0.3), sine(700, 0.3, -25), silence(0.3))
    x = x + noise(x.size, -45)
    assert len(detected(feed_all(BeepDetector(), x))) == 1


@pytest.mark.parametrize(
    "x",
    [
        sine(1000, 0.08, -15),  # too short
        sine(2500, 0.5, -15),  # above the band
        sine(200, 0.5, -15),  # below the band
        sine(440, 1.0, -15) + sine(480, 1.0, -15),  # US ringback: two tones
        sine(1000, 0.5, -55),  # too quiet
    ],
    ids=["short", "high", "low", "ringback", "quiet"],
)
def test_not_a_beep(x: np.ndarray) -> None:
    assert feed_all(BeepDetector(), concat(silence(0.2), x, silence(0.3))) == []


def test_beep_reported_at_120ms_once() -> None:
    det = BeepDetector()
    x = np.round(concat(silence(0.2), sine(900, 1.5, -15), silence(0.2))).astype(np.int16)
    hits = []
    for k, f in enumerate(x.reshape(-1, 160)):
        for e in det.feed(f, k * 0.02):
            hits.append((k * 0.02, e))
    assert len(hits) == 2
    (t_det, first), (_, last) = hits
    assert isinstance(first, ToneDetected) and 0.3 <= t_det <= 0.34
    assert isinstance(last, ToneEnded) and last.duration == pytest.approx(1.5, abs=0.04)


def test_flush_reports_tone_in_progress() -> None:
    det = BeepDetector()
    ev = feed_all(det, sine(800, 0.5, -15), flush=False)
    assert len(ev) == 1
    end = det.flush()
    assert len(end) == 1 and isinstance(end[0], ToneEnded)
    ced = CedDetector()
    ev = feed_all(ced, sine(2100, 1.0, -15), flush=False)
    assert len(ev) == 1 and len(ced.flush()) == 1


@needs_flite
@pytest.mark.parametrize("voice", ["kal", "slt", "awb", "rms"])
def test_no_tones_in_speech(voice: str) -> None:
    speech = flite(LONG_TEXT, voice=voice, level_dbov=-18)
    assert feed_all(BeepDetector(), speech) == []
    assert feed_all(FaxToneDetector(), speech) == []


@pytest.mark.parametrize("offset_hz", [-14.0, -7.0, 5.0, 14.0])
def test_ced_without_reversals_counts_none(offset_hz: float) -> None:
    x = concat(silence(0.3), ansam(3.0, 2100 + offset_hz, reversals=False), silence(0.3))
    end = ended(feed_all(CedDetector(), x + noise(x.size, -50)))
    assert len(end) == 1 and end[0].phase_reversals == 0
