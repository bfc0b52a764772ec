"""In-band DTMF receiver and generator: Q.24 limits, noise, talk-off on speech, batching."""

from __future__ import annotations

import numpy as np
import pytest
from dsp_audio import (
    LONG_TEXT,
    concat,
    feed_all,
    flite,
    needs_flite,
    noise,
    silence,
    sine,
    to_frames,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callplane.media.dsp.dtmf import (
    DIGIT_FREQS,
    DIGITS,
    DtmfBatchDetector,
    DtmfDetector,
    DtmfKeyDown,
    DtmfKeyUp,
    DtmfParams,
    dtmf_digits,
    dtmf_tone,
)
from callplane.media.sources import SAMPLE_RATE


def downs(events: list[object]) -> str:
    return "".join(e.digit for e in events if isinstance(e, DtmfKeyDown))


def detect(x: np.ndarray, **params: object) -> list[object]:
    return feed_all(DtmfDetector(DtmfParams(**params)), x)  # type: ignore[arg-type]


def one_digit(digit: str, seconds: float, lead: float = 0.05, **kw: object) -> np.ndarray:
    return concat(silence(lead), dtmf_tone(digit, seconds, **kw), silence(0.1))  # type: ignore[arg-type]


def test_all_sixteen_digits_with_times() -> None:
    seq = "0123456789*#ABCD"
    x = concat(silence(0.013), dtmf_digits(seq, tone=0.07, gap=0.06).astype(float))
    ev = detect(x)
    assert downs(ev) == seq
    # strict alternation down/up, one each per digit
    assert [type(e) for e in ev] == [DtmfKeyDown, DtmfKeyUp] * len(seq)
    for i, (d, u) in enumerate(zip(ev[::2], ev[1::2], strict=True)):
        start = 0.013 + i * 0.13
        assert d.t == pytest.approx(start, abs=0.011)
        assert u.digit == d.digit
        assert u.duration == pytest.approx(0.07, abs=0.011)
        assert u.t == pytest.approx(start + 0.07, abs=0.011)
        assert -15 < d.level_dbov < -11  # generator default -13 dBov low tone


@pytest.mark.parametrize("err", [0.015, -0.015])
@pytest.mark.parametrize("group", [0, 1])
def test_frequency_deviation_within_1_5_percent_operates(err: float, group: int) -> None:
    fe = (err, 0.0) if group == 0 else (0.0, err)
    for d in DIGITS:
        assert downs(detect(one_digit(d, 0.06, freq_error=fe))) == d, d


@pytest.mark.parametrize("err", [0.035, -0.035, 0.05])
@pytest.mark.parametrize("group", [0, 1])
def test_frequency_deviation_beyond_3_5_percent_rejected(err: float, group: int) -> None:
    fe = (err, 0.0) if group == 0 else (0.0, err)
    for d in DIGITS:
        assert downs(detect(one_digit(d, 0.2, freq_error=fe))) == "", d


@pytest.mark.parametrize("twist_db", [-8.0, -4.0, 0.0, 2.0, 4.0])
def test_twist_within_limits_operates(twist_db: float) -> None:
    # twist_db = high group minus low group: -8 = normal twist 8 dB, +4 = reverse twist 4 dB
    for d in DIGITS:
        assert downs(detect(one_digit(d, 0.06, twist_db=twist_db))) == d, d


@pytest.mark.parametrize("twist_db", [-10.5, 6.5, -20.0, 15.0])
def test_excess_twist_rejected(twist_db: float) -> None:
    for d in DIGITS:
        assert downs(detect(one_digit(d, 0.2, twist_db=twist_db))) == "", d


@pytest.mark.parametrize("offset", range(0, 160, 9))
def test_40ms_tone_operates_at_any_alignment(offset: int) -> None:
    ev = detect(one_digit("5", 0.04, lead=0.05 + offset / SAMPLE_RATE))
    assert downs(ev) == "5"
    assert ev[1].duration == pytest.approx(0.04, abs=0.012)


@pytest.mark.parametrize("seconds", [0.010, 0.020, 0.023])
def test_short_tones_never_operate(seconds: float) -> None:
    for offset in range(0, 160, 5):
        assert downs(detect(one_digit("5", seconds, lead=0.05 + offset / SAMPLE_RATE))) == ""


@pytest.mark.parametrize("offset", range(0, 160, 11))
def test_40ms_pause_separates_repeated_digit(offset: int) -> None:
    x = concat(
        silence(0.05 + offset / SAMPLE_RATE),
        dtmf_tone("9", 0.05),
        silence(0.04),
        dtmf_tone("9", 0.05),
        silence(0.1),
    )
    assert downs(detect(x)) == "99"


@pytest.mark.parametrize("offset", range(0, 160, 11))
def test_10ms_interruption_is_bridged(offset: int) -> None:
    y = dtmf_tone("7", 0.13)
    a = 400 + offset // 2
    y[a : a + 80] = 0.0  # a 10 ms drop-out inside one continuous tone
    ev = detect(concat(silence(0.05 + offset / SAMPLE_RATE), y, silence(0.1)))
    assert downs(ev) == "7"
    assert ev[1].duration == pytest.approx(0.13, abs=0.012)


@pytest.mark.parametrize("level", [-5.0, -13.0, -20.0, -30.0])
@pytest.mark.parametrize("snr_db", [30.0, 15.0, 10.0])
def test_levels_and_white_noise(level: float, snr_db: float) -> None:
    seq = "147*2580369#ABCD"
    y = dtmf_digits(seq, tone=0.05, gap=0.05, level_dbov=level).astype(float)
    x = y + noise(y.size, level - snr_db, seed=int(-level * 10 + snr_db))
    assert downs(detect(x)) == seq


def test_below_minimum_level_ignored() -> None:
    y = dtmf_digits("123", level_dbov=-45.0, twist_db=0.0).astype(float)
    assert downs(detect(y)) == ""
    # ... but a lower configured floor hears it
    assert downs(detect(y, min_level_dbov=-50.0)) == "123"


def test_long_key_press_reported_once_with_duration() -> None:
    ev = detect(one_digit("#", 2.0))
    assert len(ev) == 2
    assert isinstance(ev[0], DtmfKeyDown) and ev[0].digit == "#"
    assert isinstance(ev[1], DtmfKeyUp) and ev[1].duration == pytest.approx(2.0, abs=0.012)


def test_flush_ends_a_held_digit() -> None:
    det = DtmfDetector()
    x = to_frames(concat(silence(0.02), dtmf_tone("A", 0.3)))
    ev = [e for k, f in enumerate(x) for e in det.feed(f, 10.0 + k * 0.02)]
    assert downs(ev) == "A" and len(ev) == 1 and ev[0].t == pytest.approx(10.02, abs=0.011)
    up = det.flush()
    assert len(up) == 1 and isinstance(up[0], DtmfKeyUp)
    assert up[0].duration == pytest.approx(0.3, abs=0.012)
    assert det.flush() == []


def test_single_tones_and_three_tones_rejected() -> None:
    for f in (697, 770, 852, 941, 1209, 1336, 1477, 1633):
        assert downs(detect(concat(sine(f, 0.3, -10), silence(0.1)))) == ""
    # two rows plus a column: not a valid DTMF pair
    x = dtmf_tone("1", 0.3) + sine(852, 0.3, -13)
    assert downs(detect(concat(x, silence(0.1)))) == ""


@pytest.mark.parametrize("digit", ["1", "5", "9", "D"])
def test_second_harmonic_rejects_speech_like_pairs(digit: str) -> None:
    fr, fc = DIGIT_FREQS[digit]
    base = dtmf_tone(digit, 0.3, twist_db=0.0)
    strong = base + sine(2 * fr, 0.3, -16) + sine(2 * fc, 0.3, -16)  # 3 dB below: voice-like
    weak = base + sine(2 * fr, 0.3, -40) + sine(2 * fc, 0.3, -40)  # 27 dB below: harmless
    assert downs(detect(concat(strong, silence(0.1)))) == ""
    assert downs(detect(concat(weak, silence(0.1)))) == digit


def test_dial_tone_and_ringback_do_not_operate() -> None:
    for freqs in ((350, 440), (440, 480), (480, 620), (400, 450)):
        x = sum(sine(f, 2.0, -13) for f in freqs)
        assert downs(detect(concat(x, silence(0.1)))) == ""


@needs_flite
@pytest.mark.parametrize("voice", ["kal", "slt", "awb", "rms"])
@pytest.mark.parametrize("level", [-8.0, -20.0, -32.0])
def test_no_talk_off_on_speech(voice: str, level: float) -> None:
    speech = flite(LONG_TEXT, voice=voice, level_dbov=level)
    assert speech.size >= 30 * SAMPLE_RATE  # at least 30 s of speech
    assert detect(speech) == []


@needs_flite
def test_digits_between_speech() -> None:
    s1 = flite("Please enter your PIN now.", level_dbov=-18)
    s2 = flite("Thank you. Now the extension, please.", level_dbov=-18)
    d1 = dtmf_digits("159#", tone=0.06, gap=0.06, level_dbov=-20).astype(float)
    d2 = dtmf_digits("2468", tone=0.045, gap=0.045, level_dbov=-25, twist_db=-5).astype(float)
    x = concat(s1, silence(0.2), d1, s2, d2, silence(0.3), s1)
    x = x + noise(x.size, -55)
    ev = detect(x)
    assert downs(ev) == "159#2468"
    t_first = ev[0].t
    assert t_first == pytest.approx(s1.size / SAMPLE_RATE + 0.2, abs=0.011)


def test_batch_detector_matches_single() -> None:
    rng = np.random.default_rng(7)
    streams = [
        concat(
            silence(0.03 * i),
            dtmf_digits(
                "0123456789*#ABCD"[i:] + "5", tone=0.05, gap=0.05, level_dbov=-10 - 2 * i
            ).astype(float),
        )
        for i in range(6)
    ]
    streams.append(np.zeros(1000))  # silent channel
    streams.append(rng.standard_normal(16000) * 3000)  # loud noise channel
    n = max(s.size for s in streams)
    mats = np.stack([to_frames(concat(s, np.zeros(n - s.size))) for s in streams], axis=1)
    batch = DtmfBatchDetector(len(streams))
    got: list[list[object]] = [[] for _ in streams]
    for k in range(mats.shape[0]):
        for ch, ev in batch.feed(mats[k], k * 0.02):
            got[ch].append(ev)
    for ch, s in enumerate(streams):
        single = feed_all(DtmfDetector(), concat(s, np.zeros(n - s.size)), flush=False)
        # same decisions; times may differ in the last bit (batched vs single float sums)
        assert [(type(e), e.digit) for e in got[ch]] == [(type(e), e.digit) for e in single]
        assert [e.t for e in got[ch]] == pytest.approx([e.t for e in single], abs=1e-9)
    assert downs(got[0]) == "0123456789*#ABCD5"
    assert got[6] == [] and got[7] == []
    batch.reset_channel(0)


def test_generator_frequencies_levels_and_pauses() -> None:
    y = dtmf_tone("9", 1.0, level_dbov=-6.0, twist_db=2.0)
    spec = np.abs(np.fft.rfft(y)) / (y.size / 2)
    peaks = sorted(np.argsort(spec)[-2:].tolist())
    assert peaks == [852, 1477]  # 1 Hz bins
    assert 20 * np.log10(spec[852] / 32767) == pytest.approx(-6.0, abs=0.05)
    assert 20 * np.log10(spec[1477] / spec[852]) == pytest.approx(2.0, abs=0.05)
    x = dtmf_digits("1w2W3", tone=0.1, gap=0.1)
    assert x.dtype == np.int16 and x.size % 160 == 0
    assert x.size == round((3 * 0.2 + 0.5 + 1.0) * SAMPLE_RATE)
    with pytest.raises(ValueError):
        dtmf_tone("E")
    assert dtmf_digits("").size == 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    digits=st.text(alphabet=DIGITS, min_size=1, max_size=8),
    tone_ms=st.integers(min_value=45, max_value=150),
    gap_ms=st.integers(min_value=45, max_value=150),
    level=st.floats(min_value=-27.0, max_value=-9.0),  # >= 3 dB above the floor, unclipped
    twist=st.floats(min_value=-6.0, max_value=3.0),
    lead=st.integers(min_value=0, max_value=159),
)
def test_property_random_sequences(
    digits: str, tone_ms: int, gap_ms: int, level: float, twist: float, lead: int
) -> None:
    x = dtmf_digits(
        digits, tone=tone_ms / 1000, gap=gap_ms / 1000, level_dbov=level, twist_db=twist
    ).astype(float)
    ev = detect(concat(np.zeros(lead), x))
    assert downs(ev) == digits
    for u in ev[1::2]:
        # edges are resolved to the 10 ms half-blocks: a partly filled edge block may be lost
        assert tone_ms / 1000 - 0.025 <= u.duration <= tone_ms / 1000 + 0.007
