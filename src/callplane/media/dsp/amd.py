"""Answering-machine detection: reference §5.4 (``calling.detect`` type ``machine``) and SWML
``detect_machine``, as a sans-IO state machine over 20 ms frames.

Events (:class:`AmdEvent`, the reference's names): outcomes ``HUMAN``, ``MACHINE``, ``UNKNOWN``;
with ``detect_message_end`` the lifecycle markers ``READY`` (``beep`` true when a beep was heard)
and ``NOT_READY``; always a final lowercase ``finished``. Possible sequences::

    UNKNOWN, finished                       nothing said for initial_timeout (or timeout)
    HUMAN, finished                         short greeting then end_silence_timeout of silence
    MACHINE, finished                       detect_message_end false
    MACHINE, READY, finished                greeting over (machine_ready_timeout silence or beep)
    MACHINE, READY, NOT_READY, READY, ...,  finished    detect_interruptions: speech resumed
    MACHINE, finished                       detect_message_end but timeout before the greeting ended

Classification (the classic greeting-length rule used by telephony AMDs):

* no speech within ``initial_timeout`` → UNKNOWN (no greeting at all is not evidence either way);
* the greeting (from its first voiced frame to its last, pauses shorter than
  ``end_silence_timeout`` included) reaches ``machine_voice_threshold`` → MACHINE at once;
  people answer with a word or two, recorded greetings are sentences;
* ``machine_words_threshold`` words → MACHINE (a word = a burst of speech after a pause of at least
  ``word_gap``; catches choppy greetings whose bursts are each short);
* ``end_silence_timeout`` of silence after a greeting shorter than that → HUMAN;
* a beep (see :mod:`.tones`) before a decision → MACHINE (a beep without greeting is a mailbox).

After MACHINE, with ``detect_message_end``: READY once ``machine_ready_timeout`` of silence follows
the last speech, or at the end of a beep (``beep: true``; at its end, not its start, so a message
played on READY does not overlap the beep). ``wait_for_beep`` makes the silence rule wait
``beep_timeout`` instead, so a beep that comes a little after the greeting is not missed. With
``detect_interruptions`` the detector keeps listening after READY: speech (or a beep) → NOT_READY,
then READY again by the same rules, until ``timeout`` or :meth:`stop`.

Voice activity is :class:`.vad.Vad`'s raw per-frame decision (``input_sensitivity``), counted only
in runs of at least two frames (40 ms) so clicks and single noisy frames do not start a greeting.
Event times are the end of the frame on which the decision was taken (the caller's clock).
"""

from __future__ import annotations

from dataclasses import dataclass

from callplane.media.dsp.tones import BeepDetector, ToneDetected, ToneEnded
from callplane.media.dsp.vad import Vad
from callplane.media.sources import FRAME_SECONDS, Frame

HUMAN = "HUMAN"
MACHINE = "MACHINE"
UNKNOWN = "UNKNOWN"
READY = "READY"
NOT_READY = "NOT_READY"
FINISHED = "finished"

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class AmdEvent:
    """One ``calling.call.detect`` machine event: ``params.detect.params = {event, beep?}``."""

    event: str
    t: float
    beep: bool = False


class AmdDetector:
    """Answering-machine detector; defaults are the REST ones (``detect_message_end`` true —
    SWML's ``detect_machine`` defaults it to false, the engine passes that explicitly)."""

    def __init__(
        self,
        *,
        initial_timeout: float = 4.5,
        end_silence_timeout: float = 1.0,
        machine_ready_timeout: float | None = None,
        machine_voice_threshold: float = 1.25,
        machine_words_threshold: int = 6,
        detect_interruptions: bool = False,
        detect_message_end: bool = True,
        wait_for_beep: bool = False,
        beep_timeout: float = 5.0,
        timeout: float = 30.0,
        input_sensitivity: float = 44.0,
        word_gap: float = 0.1,
    ) -> None:
        self.initial_timeout = initial_timeout
        self.end_silence_timeout = end_silence_timeout
        self.machine_ready_timeout = (
            end_silence_timeout if machine_ready_timeout is None else machine_ready_timeout
        )
        self.machine_voice_threshold = machine_voice_threshold
        self.machine_words_threshold = machine_words_threshold
        self.detect_interruptions = detect_interruptions
        self.detect_message_end = detect_message_end
        self.wait_for_beep = wait_for_beep
        self.beep_timeout = beep_timeout
        self.timeout = timeout
        self.word_gap = word_gap
        self._vad = Vad(input_sensitivity=input_sensitivity)
        self._beep = BeepDetector()
        self.state = "wait"  # wait | greeting | machine | ready | done
        self.result: str | None = None  # HUMAN / MACHINE / UNKNOWN
        self.beep = False
        self.result_t: float | None = None
        self._t0: float | None = None
        self._run = 0
        self._greeting_start = 0.0
        self._last_voiced_end = 0.0
        self._words = 0
        self._in_beep = False

    # -- helpers -----------------------------------------------------------------------------

    def _finish(self, t: float, out: list[AmdEvent]) -> None:
        out.append(AmdEvent(FINISHED, t))
        self.state = "done"

    def _decide(self, result: str, t: float, out: list[AmdEvent]) -> None:
        self.result, self.result_t = result, t
        out.append(AmdEvent(result, t))
        if result != MACHINE or not self.detect_message_end:
            self._finish(t, out)
        else:
            self.state = "machine"

    def _ready(self, t: float, beep: bool, out: list[AmdEvent]) -> None:
        out.append(AmdEvent(READY, t, beep=beep))
        if self.detect_interruptions:
            self.state = "ready"
        else:
            self._finish(t, out)

    # -- API ---------------------------------------------------------------------------------

    def feed(self, frame: Frame, t: float) -> list[AmdEvent]:
        """Feed one 20 ms frame starting at ``t``; returns the events decided on it."""
        out: list[AmdEvent] = []
        if self.state == "done":
            return out
        if self._t0 is None:
            self._t0 = t
        end = t + FRAME_SECONDS
        elapsed = end - self._t0

        beep_started = beep_ended = False
        for ev in self._beep.feed(frame, t):
            if isinstance(ev, ToneDetected):
                beep_started, self._in_beep = True, True
            elif isinstance(ev, ToneEnded):
                beep_ended, self._in_beep = True, False

        voiced = self._vad.is_voiced(frame)
        self._run = self._run + 1 if voiced else 0
        speech = self._run >= 2 and not self._in_beep and not beep_ended
        speech_onset = self._run == 2 and speech
        if speech:
            if speech_onset and self.state == "greeting":
                gap = (t - FRAME_SECONDS) - self._last_voiced_end
                if gap >= self.word_gap - _EPS:
                    self._words += 1
            self._last_voiced_end = end
        silence = end - self._last_voiced_end

        if self.state == "wait":
            if beep_started:
                self.beep = True
                self._decide(MACHINE, end, out)
            elif speech:
                self.state = "greeting"
                self._greeting_start = t - FRAME_SECONDS  # the run's first frame
                self._words = 1
            elif elapsed >= self.initial_timeout - _EPS:
                self._decide(UNKNOWN, end, out)
        elif self.state == "greeting":
            if beep_started:
                self.beep = True
                self._decide(MACHINE, end, out)
            elif speech and (
                self._last_voiced_end - self._greeting_start >= self.machine_voice_threshold - _EPS
                or self._words >= self.machine_words_threshold
            ):
                self._decide(MACHINE, end, out)
            elif not speech and silence >= self.end_silence_timeout - _EPS:
                self._decide(HUMAN, end, out)
        elif self.state == "machine":
            if beep_started:
                self.beep = True
            if beep_ended:
                self._ready(end, True, out)
            elif not self._in_beep:
                wait = self.machine_ready_timeout
                if self.wait_for_beep:
                    wait = max(wait, self.beep_timeout)
                if not speech and silence >= wait - _EPS:
                    self._ready(end, False, out)
        elif self.state == "ready" and (speech_onset or beep_started):
            if beep_started:
                self.beep = True
            out.append(AmdEvent(NOT_READY, end))
            self.state = "machine"

        if self.state != "done" and elapsed >= self.timeout - _EPS:
            if self.result is None:
                self._decide(UNKNOWN, end, out)
            else:
                self._finish(end, out)
        return out

    def stop(self, t: float) -> list[AmdEvent]:
        """``calling.detect.stop``: ``finished`` (UNKNOWN first if nothing was decided)."""
        out: list[AmdEvent] = []
        if self.state == "done":
            return out
        if self.result is None:
            self.result, self.result_t = UNKNOWN, t
            out.append(AmdEvent(UNKNOWN, t))
        self._finish(t, out)
        return out
