"""Single-tone detectors: fax CNG, fax/modem answer tone CED (and ANSam), answering-machine beeps.

All three share one spectral analysis per frame (:class:`ToneAnalyser`): a 40 ms Hann-windowed
FFT over the previous and the current frame (320 points, 25 Hz bins, 20 ms hop). From it come the
strongest peak's frequency (parabolic interpolation on the log magnitude, ~1 Hz accurate), its
level and its *purity*: the fraction of the window's energy inside the Hann main lobe (±2 bins =
±50 Hz) around the peak. A steady sine gives purity ≈ 1; voiced speech, whose harmonics are 80-250
Hz apart, spreads its energy over several lobes and stays well below the thresholds used here.

A *tonal run* is a sequence of frames whose peak is pure enough, loud enough, inside the
detector's band and within a few Hz of the run's mean frequency; one odd frame (a lost packet) is
bridged. Run start/end times are the centres of its first/last windows (±20 ms).

* CNG (ITU-T T.30): 1100 Hz ±38 Hz, 0.5 s on / 3 s off, ±15 %. Reported when a burst of
  0.5 s (with the tolerance plus our ±40 ms timing error) ends: one burst is enough, the cadence
  then just repeats.
* CED (ITU-T T.30 / V.25): 2100 Hz ±15 Hz, 2.6-4 s. Reported once 0.5 s of it has been heard.
  V.25's echo-canceller disabling variant (and V.8's ANSam, which adds 15 Hz AM) reverses the
  phase every 450 ± 25 ms; reversals are counted from the tone's phase (the bin at exactly 2100 Hz
  keeps its phase from hop to hop because a 20 ms hop holds exactly 42 cycles) and reported in
  :class:`ToneEnded`.
* Beep: any steady tone 300-2000 Hz of at least 120 ms (voicemail beeps are typically 400-1400 Hz,
  150-1000 ms). Reported at 120 ms with its frequency, and again at its end with the duration.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from callplane.media.sources import FRAME_SAMPLES, SAMPLE_RATE, Frame

FloatArray = npt.NDArray[np.float64]

_N = 2 * FRAME_SAMPLES  # 320-point analysis window
_BIN_HZ = SAMPLE_RATE / _N  # 25 Hz
_HOP_S = FRAME_SAMPLES / SAMPLE_RATE
_WINDOW = np.hanning(_N + 2)[1:-1]  # strictly positive periodic-style Hann
_FULL_SCALE2 = 32767.0**2
_CED_BIN = round(2100 / _BIN_HZ)  # 84
_LOBE = 2  # Hann main lobe half-width in bins


@dataclass(frozen=True, slots=True)
class ToneFrame:
    """Spectral summary of one 40 ms window ending with the latest frame."""

    freq: float  # Hz, interpolated peak
    level_dbov: float  # level of the peak tone relative to a full-scale sine
    purity: float  # share of the window's energy in the peak's main lobe, 0..1
    ced: complex  # DFT bin at exactly 2100 Hz (for phase-reversal tracking)


class ToneAnalyser:
    """Shared per-frame spectral analysis (keeps the previous frame)."""

    def __init__(self) -> None:
        self._prev = np.zeros(FRAME_SAMPLES)

    def analyse(self, frame: Frame) -> ToneFrame:
        cur = np.asarray(frame, dtype=np.float64)
        x = np.concatenate([self._prev, cur])
        self._prev = cur
        spec = np.fft.rfft(x * _WINDOW)
        mag2 = spec.real**2 + spec.imag**2
        total = float(mag2.sum())
        if total <= 1e-3:
            return ToneFrame(0.0, -200.0, 0.0, 0j)
        k = int(np.argmax(mag2[1:-1])) + 1
        lo, hi = max(k - _LOBE, 0), k + _LOBE + 1
        purity = float(mag2[lo:hi].sum()) / total
        a, b, c = np.log(mag2[k - 1 : k + 2] + 1e-12)
        denom = a - 2 * b + c
        delta = 0.5 * (a - c) / denom if denom < 0 else 0.0
        freq = (k + float(delta)) * _BIN_HZ
        power = float(np.dot(x, x)) / _N  # mean square of the window
        amp2 = 2.0 * purity * power  # a sine of amplitude A has mean square A²/2
        level = 10.0 * math.log10(max(amp2, 1e-12) / _FULL_SCALE2)
        return ToneFrame(freq, level, purity, complex(spec[_CED_BIN]))


@dataclass(frozen=True, slots=True)
class ToneDetected:
    """A tone was recognised: ``tone`` is ``"CNG"``, ``"CED"`` or ``"beep"``."""

    tone: str
    t: float  # estimated start of the tone
    freq: float
    level_dbov: float
    duration: float  # heard so far (the whole burst for CNG)


@dataclass(frozen=True, slots=True)
class ToneEnded:
    """The tone of the matching :class:`ToneDetected` stopped."""

    tone: str
    t: float  # estimated end
    freq: float
    duration: float
    phase_reversals: int = 0  # CED only: > 0 means ANS with phase reversals / ANSam


ToneEvent = ToneDetected | ToneEnded


@dataclass(slots=True)
class _Run:
    start: float
    last: float
    freq_sum: float
    n: int
    level: float
    misses: int = 0

    @property
    def freq(self) -> float:
        return self.freq_sum / self.n

    @property
    def duration(self) -> float:
        return self.last - self.start + _HOP_S


class _ToneTracker:
    """Groups tonal frames into runs (see module docstring)."""

    def __init__(
        self,
        fmin: float,
        fmax: float,
        *,
        min_purity: float,
        min_level_dbov: float,
        freq_tol_hz: float,
        max_gap_frames: int = 1,
    ) -> None:
        self.fmin, self.fmax = fmin, fmax
        self.min_purity = min_purity
        self.min_level = min_level_dbov
        self.freq_tol = freq_tol_hz
        self.max_gap = max_gap_frames
        self.run: _Run | None = None

    def step(self, tf: ToneFrame, t: float) -> tuple[bool, _Run | None]:
        """Advance one frame centred at ``t``; returns (frame extends the run, ended run)."""
        tonal = (
            tf.purity >= self.min_purity
            and tf.level_dbov >= self.min_level
            and self.fmin <= tf.freq <= self.fmax
        )
        run = self.run
        if run is not None:
            if tonal and abs(tf.freq - run.freq) <= self.freq_tol:
                run.last, run.misses = t, 0
                run.freq_sum += tf.freq
                run.n += 1
                run.level = max(run.level, tf.level_dbov)
                return True, None
            run.misses += 1
            if run.misses <= self.max_gap:
                return False, None
            self.run = None
            if tonal:
                self.run = _Run(t, t, tf.freq, 1, tf.level_dbov)
            return False, run
        if tonal:
            self.run = _Run(t, t, tf.freq, 1, tf.level_dbov)
            return True, None
        return False, None

    def flush(self) -> _Run | None:
        run, self.run = self.run, None
        return run


class _ToneBase:
    """Common plumbing: own analyser for ``feed``; ``feed_analysis`` to share one analysis."""

    def __init__(self) -> None:
        self._analyser = ToneAnalyser()

    def feed(self, frame: Frame, t: float) -> list[ToneEvent]:
        """``t`` = time of the frame's first sample; the analysis window is centred on it."""
        return self.feed_analysis(self._analyser.analyse(frame), t)

    def feed_analysis(self, tf: ToneFrame, t: float) -> list[ToneEvent]:  # pragma: no cover
        raise NotImplementedError

    def flush(self) -> list[ToneEvent]:  # pragma: no cover
        raise NotImplementedError


class BeepDetector(_ToneBase):
    """Answering-machine beep: a steady, narrowband tone in ``fmin..fmax`` for ≥ ``min_duration``.

    Emits ``ToneDetected("beep")`` once ``min_duration`` has been heard and ``ToneEnded("beep")``
    with the total duration when it stops.
    """

    def __init__(
        self,
        *,
        fmin: float = 300.0,
        fmax: float = 2000.0,
        min_duration: float = 0.12,
        min_purity: float = 0.85,
        min_level_dbov: float = -45.0,
        freq_tol_hz: float = 12.0,
    ) -> None:
        super().__init__()
        self.min_duration = min_duration
        self._tracker = _ToneTracker(
            fmin,
            fmax,
            min_purity=min_purity,
            min_level_dbov=min_level_dbov,
            freq_tol_hz=freq_tol_hz,
        )
        self._reported: _Run | None = None

    def feed_analysis(self, tf: ToneFrame, t: float) -> list[ToneEvent]:
        out: list[ToneEvent] = []
        _, ended = self._tracker.step(tf, t)
        if ended is not None:
            self._end(ended, out)
        run = self._tracker.run
        # duration counts whole frames: a 120 ms beep spans 6 analysis hops
        if (
            run is not None
            and run is not self._reported
            and run.misses == 0
            and run.duration >= self.min_duration - 1e-9
        ):
            self._reported = run
            out.append(ToneDetected("beep", run.start, run.freq, run.level, run.duration))
        return out

    def _end(self, run: _Run, out: list[ToneEvent]) -> None:
        if run is self._reported:
            out.append(ToneEnded("beep", run.last, run.freq, run.duration))
            self._reported = None

    def flush(self) -> list[ToneEvent]:
        out: list[ToneEvent] = []
        run = self._tracker.flush()
        if run is not None:
            self._end(run, out)
        return out


class CngDetector(_ToneBase):
    """Fax calling tone: 1100 Hz bursts of 0.5 s; reported when one burst of the right length
    ends."""

    FREQ = 1100.0

    def __init__(
        self,
        *,
        freq_tol_hz: float = 38.0,  # T.30
        min_burst: float = 0.38,  # 0.5 s -15 % less our ±40 ms timing error
        max_burst: float = 0.62,
        min_purity: float = 0.8,
        min_level_dbov: float = -45.0,
    ) -> None:
        super().__init__()
        self.min_burst, self.max_burst = min_burst, max_burst
        self._tracker = _ToneTracker(
            self.FREQ - freq_tol_hz,
            self.FREQ + freq_tol_hz,
            min_purity=min_purity,
            min_level_dbov=min_level_dbov,
            freq_tol_hz=10.0,
        )

    def _check(self, run: _Run | None, out: list[ToneEvent]) -> None:
        if run is not None and self.min_burst <= run.duration <= self.max_burst:
            out.append(ToneDetected("CNG", run.start, run.freq, run.level, run.duration))
            out.append(ToneEnded("CNG", run.last, run.freq, run.duration))

    def feed_analysis(self, tf: ToneFrame, t: float) -> list[ToneEvent]:
        out: list[ToneEvent] = []
        _, ended = self._tracker.step(tf, t)
        self._check(ended, out)
        return out

    def flush(self) -> list[ToneEvent]:
        out: list[ToneEvent] = []
        self._check(self._tracker.flush(), out)
        return out


class CedDetector(_ToneBase):
    """Answer tone 2100 Hz: reported after ``min_duration`` continuous; counts phase reversals."""

    FREQ = 2100.0

    def __init__(
        self,
        *,
        freq_tol_hz: float = 15.0,  # V.25
        min_duration: float = 0.5,
        min_purity: float = 0.8,
        min_level_dbov: float = -45.0,
    ) -> None:
        super().__init__()
        self.min_duration = min_duration
        self._tracker = _ToneTracker(
            self.FREQ - freq_tol_hz,
            self.FREQ + freq_tol_hz,
            min_purity=min_purity,
            min_level_dbov=min_level_dbov,
            freq_tol_hz=8.0,
        )
        self._reported: _Run | None = None
        self._phases: deque[complex] = deque(maxlen=4)
        self._tonal: deque[bool] = deque(maxlen=4)
        self._steps: deque[float] = deque(maxlen=9)
        self._reversals = 0
        self._refractory = 0

    def _track_phase(self, z: complex, tonal: bool) -> None:
        # Reversal test over three hops (60 ms): of the windows 60 ms apart, one pair always
        # straddles the reversal with neither window touching it. The tone's own drift
        # (|Δf| ≤ 15 Hz → ≤ 1.9 rad per hop) is estimated as the median one-hop phase step, which
        # ignores the few steps disturbed by a reversal.
        # Both ends of the comparison must be clean tone frames (not a bridged gap or the noise
        # after the tone's end, whose phase is random).
        ph = self._phases
        if ph and abs(z) > 0 and abs(ph[-1]) > 0:
            self._steps.append(math.remainder(np.angle(z) - np.angle(ph[-1]), 2 * math.pi))
        ph.append(z)
        self._tonal.append(tonal)
        if self._refractory > 0:
            self._refractory -= 1
            return
        if len(ph) == 4 and len(self._steps) >= 5 and self._tonal[0] and self._tonal[-1]:
            drift = float(np.median(self._steps))
            d3 = math.remainder(np.angle(ph[-1]) - np.angle(ph[0]) - 3 * drift, 2 * math.pi)
            if abs(d3) > 2 * math.pi / 3:
                self._reversals += 1
                self._refractory = 10  # reversals are 450 ms apart; do not count one twice

    def _reset_phase(self) -> None:
        self._phases.clear()
        self._tonal.clear()
        self._steps.clear()
        self._reversals = 0
        self._refractory = 0

    def feed_analysis(self, tf: ToneFrame, t: float) -> list[ToneEvent]:
        out: list[ToneEvent] = []
        extended, ended = self._tracker.step(tf, t)
        if ended is not None:
            self._end(ended, out)
            self._reset_phase()
        if self._tracker.run is not None:
            # every hop of the run, bridged frames included (the frame straddling a reversal is
            # often one), so the three-hop comparison really spans three hops
            self._track_phase(tf.ced, extended)
        run = self._tracker.run
        if (
            run is not None
            and run is not self._reported
            and run.duration >= self.min_duration - 1e-9
        ):
            self._reported = run
            out.append(ToneDetected("CED", run.start, run.freq, run.level, run.duration))
        return out

    def _end(self, run: _Run, out: list[ToneEvent]) -> None:
        if run is self._reported:
            out.append(ToneEnded("CED", run.last, run.freq, run.duration, self._reversals))
            self._reported = None

    def flush(self) -> list[ToneEvent]:
        out: list[ToneEvent] = []
        run = self._tracker.flush()
        if run is not None:
            self._end(run, out)
        self._reset_phase()
        return out


class FaxToneDetector:
    """CNG and/or CED on one analysis, for ``calling.detect`` type ``fax`` (reference §5.4).

    ``tone`` = ``"CNG"``, ``"CED"`` (any case) or None for either.
    """

    def __init__(self, tone: str | None = None) -> None:
        want = tone.upper() if tone else None
        if want not in (None, "CNG", "CED"):
            raise ValueError(f"tone must be CNG or CED, not {tone!r}")
        self._analyser = ToneAnalyser()
        self._detectors: list[_ToneBase] = []
        if want in (None, "CNG"):
            self._detectors.append(CngDetector())
        if want in (None, "CED"):
            self._detectors.append(CedDetector())

    def feed(self, frame: Frame, t: float) -> list[ToneEvent]:
        tf = self._analyser.analyse(frame)
        out: list[ToneEvent] = []
        for det in self._detectors:
            out.extend(det.feed_analysis(tf, t))
        return out

    def flush(self) -> list[ToneEvent]:
        out: list[ToneEvent] = []
        for det in self._detectors:
            out.extend(det.flush())
        return out
