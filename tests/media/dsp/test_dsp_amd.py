"""Answering-machine detection on flite speech: HUMAN, MACHINE + READY (beep), UNKNOWN, timings."""

from __future__ import annotations

import numpy as np
import pytest
from dsp_audio import GREETING, HELLO, concat, feed_all, flite, needs_flite, noise, silence, sine

from callplane.media.dsp.amd import AmdDetector, AmdEvent
from callplane.media.sources import SAMPLE_RATE

pytestmark = needs_flite


def names(events: list[AmdEvent]) -> list[str]:
    return [e.event for e in events]


def secs(x: np.ndarray) -> float:
    return x.size / SAMPLE_RATE


def run(x: np.ndarray, **kw: object) -> list[AmdEvent]:
    return feed_all(AmdDetector(**kw), x + noise(x.size, -65), flush=False)  # type: ignore[arg-type]


def test_human_hello() -> None:
    hello = flite(HELLO)
    ev = run(concat(silence(0.6), hello, silence(3.0)))
    assert names(ev) == ["HUMAN", "finished"]
    end = 0.6 + secs(hello)
    # end_silence_timeout (1.0 s) after the last voiced frame
    assert end + 0.85 <= ev[0].t <= end + 1.05
    assert ev[1].t == ev[0].t and not ev[0].beep


def test_machine_greeting_then_beep_ready() -> None:
    greeting = flite(GREETING)
    beep_start = 0.5 + secs(greeting) + 0.3
    x = concat(silence(0.5), greeting, silence(0.3), sine(1000, 0.4, -18), silence(3.0))
    ev = run(x)
    assert names(ev) == ["MACHINE", "READY", "finished"]
    assert 0.5 + 1.25 <= ev[0].t <= 0.5 + 1.25 + 0.1  # machine_voice_threshold into the greeting
    assert ev[1].beep is True
    assert beep_start + 0.38 <= ev[1].t <= beep_start + 0.46  # at the end of the beep


def test_machine_without_beep_ready_after_silence() -> None:
    greeting = flite(GREETING)
    end = 0.5 + secs(greeting)
    ev = run(concat(silence(0.5), greeting, silence(3.0)))
    assert names(ev) == ["MACHINE", "READY", "finished"]
    assert ev[1].beep is False
    assert end + 0.85 <= ev[1].t <= end + 1.05


def test_machine_ready_timeout_parameter() -> None:
    greeting = flite(GREETING)
    end = 0.5 + secs(greeting)
    ev = run(concat(silence(0.5), greeting, silence(3.0)), machine_ready_timeout=2.0)
    assert names(ev) == ["MACHINE", "READY", "finished"]
    assert end + 1.85 <= ev[1].t <= end + 2.05


def test_detect_message_end_false() -> None:
    ev = run(concat(silence(0.5), flite(GREETING), silence(2.0)), detect_message_end=False)
    assert names(ev) == ["MACHINE", "finished"]
    assert ev[0].t == ev[1].t


@pytest.mark.parametrize(("initial_timeout", "expect"), [(4.5, 4.5), (2.0, 2.0)])
def test_silence_is_unknown(initial_timeout: float, expect: float) -> None:
    ev = run(silence(8.0), initial_timeout=initial_timeout)
    assert names(ev) == ["UNKNOWN", "finished"]
    assert ev[0].t == pytest.approx(expect, abs=0.021)


def test_wait_for_beep_catches_a_late_beep() -> None:
    greeting = flite(GREETING)
    x = concat(silence(0.5), greeting, silence(1.6), sine(1000, 0.4, -18), silence(3.0))
    plain = run(x)
    assert names(plain) == ["MACHINE", "READY", "finished"] and plain[1].beep is False
    waited = run(x, wait_for_beep=True)
    assert names(waited) == ["MACHINE", "READY", "finished"] and waited[1].beep is True


def test_wait_for_beep_falls_back_to_silence() -> None:
    greeting = flite(GREETING)
    end = 0.5 + secs(greeting)
    ev = run(concat(silence(0.5), greeting, silence(4.0)), wait_for_beep=True, beep_timeout=3.0)
    assert names(ev) == ["MACHINE", "READY", "finished"] and ev[1].beep is False
    assert end + 2.85 <= ev[1].t <= end + 3.05


def test_detect_interruptions_not_ready_then_ready() -> None:
    greeting = flite(GREETING)
    more = flite("Or press zero for the operator.")
    x = concat(silence(0.5), greeting, silence(1.5), more, silence(8.0))
    assert secs(x) > 15.5
    ev = run(x, detect_interruptions=True, timeout=15.0)
    assert names(ev) == ["MACHINE", "READY", "NOT_READY", "READY", "finished"]
    resume = 0.5 + secs(greeting) + 1.5
    assert resume <= ev[2].t <= resume + 0.1
    assert ev[4].t == pytest.approx(15.0, abs=0.021)  # runs until the detect timeout


def test_without_interruptions_finishes_at_first_ready() -> None:
    greeting = flite(GREETING)
    more = flite("Or press zero for the operator.")
    x = concat(silence(0.5), greeting, silence(1.5), more, silence(2.0))
    assert names(run(x)) == ["MACHINE", "READY", "finished"]


def test_beep_without_greeting_is_a_machine() -> None:
    ev = run(concat(silence(1.0), sine(850, 0.5, -15), silence(2.0)))
    assert names(ev) == ["MACHINE", "READY", "finished"]
    assert ev[0].beep is False and ev[1].beep is True
    assert 1.1 <= ev[0].t <= 1.2 and 1.5 <= ev[1].t <= 1.58


def test_words_threshold() -> None:
    word = flite("Hi", level_dbov=-20)
    words = concat(*[concat(word, silence(0.25)) for _ in range(5)])
    x = concat(silence(0.5), words, silence(2.0))
    # voice threshold out of reach: only the word count can say MACHINE
    ev = run(x, machine_voice_threshold=20.0, machine_words_threshold=3)
    assert names(ev)[0] == "MACHINE"
    third = 0.5 + 2 * (secs(word) + 0.25)
    assert third <= ev[0].t <= third + 0.1
    ev = run(x, machine_voice_threshold=20.0, machine_words_threshold=6)
    assert names(ev) == ["HUMAN", "finished"]


def test_timeout_while_greeting_never_ends() -> None:
    greeting = flite(GREETING)
    x = concat(silence(0.2), greeting, greeting)
    ev = run(x, timeout=5.0)
    assert names(ev) == ["MACHINE", "finished"]
    assert ev[1].t == pytest.approx(5.0, abs=0.021)


def test_stop() -> None:
    det = AmdDetector()
    assert det.feed(np.zeros(160, dtype=np.int16), 0.0) == []
    ev = det.stop(0.5)
    assert names(ev) == ["UNKNOWN", "finished"] and det.result == "UNKNOWN"
    assert det.stop(0.6) == []
    assert det.feed(np.zeros(160, dtype=np.int16), 0.02) == []


def test_result_attributes() -> None:
    det = AmdDetector()
    greeting = flite(GREETING)
    feed_all(
        det,
        concat(silence(0.5), greeting, silence(0.3), sine(1000, 0.4, -18), silence(2)),
        flush=False,
    )
    assert det.result == "MACHINE" and det.beep and det.state == "done"
    assert det.result_t is not None and 1.75 <= det.result_t <= 1.85
    assert AmdDetector(end_silence_timeout=2.0).machine_ready_timeout == 2.0
