"""Voice activity detection per 20 ms frame: webrtcvad + an energy floor + hangover smoothing.

The one VAD of callplane: AMD (:mod:`.amd`) uses the smoothed speech start/end events, record's
stop conditions (``initial_timeout``, ``end_silence_timeout``) and the speech recognizer's
endpointing (:mod:`callplane.providers.asr`) use the raw per-frame decision
(:meth:`Vad.is_voiced`), all with the same ``input_sensitivity`` mapping.

webrtcvad (the WebRTC GMM classifier) decides "speech-like spectrum"; it is level-independent, so
faint line noise or far-off talkers can pass it. An energy floor in dBov (dB relative to a
full-scale sine) removes those. A frame is *voiced* when both agree.

``input_sensitivity`` (reference §5.2 / SWML ``record``: 0-100, default 44) maps to both knobs:

* energy floor = -25 dBov - 0.35 dB x sensitivity: 0 → -25 dBov (only loud, close speech),
  44 → -40.4 dBov (normal telephone speech, about -20..-30 dBov active level, with margin for
  quiet talkers), 100 → -60 dBov (almost anything above idle-channel noise);
* webrtcvad aggressiveness = 3 for sensitivity < 25, 2 below 50, 1 below 75, else 0 (mode 3 is
  the most reluctant to call a frame speech).

Smoothing: speech starts after ``start_frames`` consecutive voiced frames (default 3 = 60 ms,
rejects clicks) and is dated from the first of them; it ends after ``hangover`` seconds without
voiced frames (default 0.3 s, bridges the pauses between words) and is dated from the end of the
last voiced frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import webrtcvad

from callplane.media.sources import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE, Frame

_FULL_SCALE2 = 32767.0**2


@dataclass(frozen=True, slots=True)
class SpeechStart:
    t: float  # start of the first voiced frame


@dataclass(frozen=True, slots=True)
class SpeechEnd:
    t: float  # end of the last voiced frame
    duration: float  # since the matching SpeechStart


VadEvent = SpeechStart | SpeechEnd


def sensitivity_to_floor_dbov(sensitivity: float) -> float:
    """Energy floor for an ``input_sensitivity`` 0-100 (see module docstring)."""
    s = min(max(sensitivity, 0.0), 100.0)
    return -25.0 - 0.35 * s


def sensitivity_to_mode(sensitivity: float) -> int:
    """webrtcvad aggressiveness for an ``input_sensitivity`` 0-100."""
    s = min(max(sensitivity, 0.0), 100.0)
    return 3 - min(3, int(s // 25))


def frame_dbov(frame: Frame) -> float:
    """RMS level of a frame relative to a full-scale sine (a full-scale sine is 0 dBov)."""
    x = np.asarray(frame, dtype=np.float64)
    ms = float(np.dot(x, x)) / max(x.size, 1)
    return 10.0 * math.log10(max(2.0 * ms, 1e-12) / _FULL_SCALE2)


class Vad:
    """Per-frame voice activity with speech-start / speech-end events.

    ``feed(frame, t)`` → list of :class:`SpeechStart` / :class:`SpeechEnd`; after each call
    ``voiced`` is the raw decision for that frame and ``in_speech`` the smoothed state.
    """

    def __init__(
        self,
        *,
        input_sensitivity: float = 44.0,
        mode: int | None = None,
        floor_dbov: float | None = None,
        start_frames: int = 3,
        hangover: float = 0.3,
    ) -> None:
        self.mode = sensitivity_to_mode(input_sensitivity) if mode is None else mode
        if not 0 <= self.mode <= 3:
            raise ValueError("webrtcvad mode must be 0..3")
        self.floor_dbov = (
            sensitivity_to_floor_dbov(input_sensitivity) if floor_dbov is None else floor_dbov
        )
        self._floor_ms = _FULL_SCALE2 * 10.0 ** (self.floor_dbov / 10.0) / 2.0  # mean square
        self.start_frames = start_frames
        self.hangover = hangover
        self._vad = webrtcvad.Vad(self.mode)
        self.voiced = False
        self.in_speech = False
        self._run = 0
        self._run_t = 0.0
        self._start_t = 0.0
        self._last_voiced_end = 0.0

    def is_voiced(self, frame: Frame) -> bool:
        """Raw decision for one frame (no state change). A frame of another length than 20 ms
        is judged by its whole 20 ms pieces (webrtcvad takes 10/20/30 ms), any voiced one wins."""
        x = np.asarray(frame, dtype=np.int16).reshape(-1)
        if x.size == 0:
            return False
        xf = x.astype(np.float64)
        if float(np.dot(xf, xf)) / x.size < self._floor_ms:
            return False  # below the floor: skip the classifier (the cheap common case)
        if x.size == FRAME_SAMPLES:
            return bool(self._vad.is_speech(x.tobytes(), SAMPLE_RATE))
        whole = x.size // FRAME_SAMPLES * FRAME_SAMPLES
        return any(
            self._vad.is_speech(x[i : i + FRAME_SAMPLES].tobytes(), SAMPLE_RATE)
            for i in range(0, whole, FRAME_SAMPLES)
        )

    def feed(self, frame: Frame, t: float) -> list[VadEvent]:
        voiced = self.voiced = self.is_voiced(frame)
        out: list[VadEvent] = []
        if voiced:
            if self._run == 0:
                self._run_t = t
            self._run += 1
            self._last_voiced_end = t + FRAME_SECONDS
            if not self.in_speech and self._run >= self.start_frames:
                self.in_speech = True
                self._start_t = self._run_t
                out.append(SpeechStart(self._run_t))
        else:
            self._run = 0
            if self.in_speech and t + FRAME_SECONDS - self._last_voiced_end >= self.hangover:
                self.in_speech = False
                end = self._last_voiced_end
                out.append(SpeechEnd(end, end - self._start_t))
        return out

    def flush(self) -> list[VadEvent]:
        if not self.in_speech:
            return []
        self.in_speech = False
        end = self._last_voiced_end
        return [SpeechEnd(end, end - self._start_t)]
