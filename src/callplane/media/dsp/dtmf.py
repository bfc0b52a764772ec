"""In-band DTMF: a sans-IO receiver (ITU-T Q.24 limits) and a generator (ITU-T Q.23 frequencies).

Receiver design
---------------
Each 20 ms frame is split into two 10 ms half-blocks of 80 samples. For every half-block one matrix
product against a fixed (80 x 16) cosine/sine basis gives the complex DFT at the eight Q.23
frequencies (this *is* the Goertzel output, computed as a dot product so NumPy does it in C and
many calls can share one matrix multiply, see :class:`DtmfBatchDetector`).

Decisions are taken on 20 ms windows made of two consecutive half-blocks, at a 10 ms hop (two
windows per frame: previous frame's second half + this frame's first half, then this frame's two
halves). For a window, with row r and column c the strongest of each group:

* level: each tone >= ``min_level_dbov`` (Q.24 asks for operation down to about -25 dBm0 per tone
  at the far end; the default -36 dBov leaves margin for line loss);
* twist (the Q.24 / Bellcore LSSGR figures): *normal twist* = low group (row) louder than the
  high group (column), accepted up to 8 dB, because subscriber lines attenuate the high group
  more; *reverse twist* = high group louder, accepted up to 4 dB;
* signal-to-other energy: row + column must carry at least ``min_energy_ratio`` of the window's
  energy, which rejects speech and noise whose energy is spread over the band;
* frequency deviation (Q.24: operate within +-1.5 %, must not operate beyond +-3.5 %): the
  phase advance of the tone's DFT from the first half-block to the second measures the actual
  frequency (Δφ = 2π Δf · 10 ms, unambiguous for |Δf| < 50 Hz); the limit is set midway, 2.5 %;
* stability: the louder tone's power may differ by at most 3 dB between the two halves (the
  weaker one's by 6 dB: leakage from the louder tone makes it wobble), so a window straddling a
  key-down/key-up edge is not a hit (this is what makes the duration limits hold);
* relative peak: the runner-up frequency of each group must be 8 dB below the winner (three
  tones are not a digit);
* 2nd harmonic (talk-off protection): a pure DTMF pair has no energy at 2·f; voiced speech that
  happens to put energy at a row and a column frequency has harmonics there. The check is done by a
  small least-squares fit of the window to sinusoids at the measured row, column, 2·row and 2·column
  frequencies (and the runner-ups, for the relative-peak test), because at 80 or 160 samples the
  2·row frequencies (1394..1882 Hz) lie too close to the column tones for a plain DFT bin to
  separate them. It runs only for windows that passed everything else, so it costs nothing on
  silence and speech.

Timing (Q.24: operate on ≥ 40 ms, never on < 23 ms; bridge interruptions ≤ 10 ms; pauses ≥ 40 ms
separate digits): two consecutive hit windows start a digit, so a tone needs three "clean"
half-blocks: tones of 40 ms or more always operate, tones shorter than ~24 ms never do. Four
consecutive miss windows end it: a ≤ 10 ms interruption spoils at most three windows and is
bridged, while a pause of 40 ms or more always contains three silent half-blocks, i.e. four missed
windows, and separates two digits (pauses of 15-25 ms may go either way).
Times are resolved to the 10 ms half-blocks: an edge block at least ~70 % filled counts as whole,
a less filled one not at all, so each edge is off by about -3..+12 ms (durations -25..+6 ms).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from callplane.media.sources import FRAME_SAMPLES, SAMPLE_RATE, Frame

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

ROW_FREQS: tuple[float, ...] = (697.0, 770.0, 852.0, 941.0)
COL_FREQS: tuple[float, ...] = (1209.0, 1336.0, 1477.0, 1633.0)
#: Keypad layout: digit = DIGITS[row * 4 + column].
DIGITS = "123A456B789C*0#D"
DIGIT_FREQS: dict[str, tuple[float, float]] = {
    d: (ROW_FREQS[i // 4], COL_FREQS[i % 4]) for i, d in enumerate(DIGITS)
}

_HALF = FRAME_SAMPLES // 2  # 80 samples = 10 ms
_HOP_S = _HALF / SAMPLE_RATE
_WIN_S = 2 * _HOP_S
_FREQS = np.array(ROW_FREQS + COL_FREQS)
_n = np.arange(_HALF)
# x_half @ _BASIS = [Re | -Im] of the DFT at the eight frequencies, referenced to the half-block
# start: X(f) = sum x[n] e^{-j 2π f n / fs}.
_BASIS: FloatArray = np.ascontiguousarray(
    np.hstack(
        [
            np.cos(2 * np.pi * np.outer(_n, _FREQS) / SAMPLE_RATE),
            np.sin(2 * np.pi * np.outer(_n, _FREQS) / SAMPLE_RATE),
        ]
    )
)
# For a tone exactly at f the DFT of the next half-block is this one's times e^{j 2π f · 80/fs};
# multiplying by the conjugate leaves only the phase caused by a frequency error.
_DEROTATE = np.exp(-2j * np.pi * _FREQS * _HALF / SAMPLE_RATE)
# A sine of amplitude A at exactly f gives |X| = A · 80 / 2 per half-block, so A² = P / 1600 for
# one half and (Pa + Pb) / 3200 for a window; its energy over the 160-sample window is 80 · A².
_P_TO_AMP2 = 1.0 / 3200.0
_FULL_SCALE = 32767.0
_N_WIN = 2 * _HALF
_J2PI_T = (2j * np.pi * np.arange(_N_WIN) / SAMPLE_RATE)[:, None]


def _db_to_power(db: float) -> float:
    return float(10.0 ** (db / 10.0))


@dataclass(frozen=True, slots=True)
class DtmfKeyDown:
    """A digit was recognised (reported once, about 30 ms after the tone began)."""

    digit: str
    t: float  # estimated start of the tone (caller's clock)
    level_dbov: float  # level of the weaker tone, dB relative to a full-scale sine


@dataclass(frozen=True, slots=True)
class DtmfKeyUp:
    """The digit reported by the matching :class:`DtmfKeyDown` ended."""

    digit: str
    t: float  # estimated end of the tone
    duration: float  # seconds, -25..+6 ms (see module docstring)


DtmfEvent = DtmfKeyDown | DtmfKeyUp


@dataclass(frozen=True, slots=True)
class DtmfParams:
    """Receiver limits; the defaults follow ITU-T Q.24 (see the module docstring)."""

    min_level_dbov: float = -36.0
    max_normal_twist_db: float = 8.0  # row (low group) louder than column
    max_reverse_twist_db: float = 4.0  # column (high group) louder than row
    max_freq_deviation: float = 0.025  # fraction of nominal; Q.24 operate 1.5 %, reject 3.5 %
    min_energy_ratio: float = 0.6  # (row + column energy) / window energy
    max_half_imbalance_db: float = 3.0
    # Leakage between the two tones over 80-sample blocks makes the measured twist wander by up to
    # ±0.5 dB with the tones' relative phase; the margin keeps the Q.24 limits themselves inside.
    twist_margin_db: float = 1.0
    max_harmonic_db: float = -12.0  # 2nd harmonic relative to its fundamental
    min_relative_peak_db: float = 8.0  # runner-up tone of a group below the best one
    hits_to_begin: int = 2
    misses_to_end: int = 4


class _Analyser:
    """Vectorised per-window tests for ``n`` channels; turns half-block spectra into hit digits."""

    def __init__(self, params: DtmfParams) -> None:
        self.p = params
        amp_min = _FULL_SCALE * 10.0 ** (params.min_level_dbov / 20.0)
        self.min_power = amp_min**2 / _P_TO_AMP2  # per-tone window power (Pa + Pb)
        # Cheapest possible early exit: a half-block holding both tones at the minimum level
        # (allowing the imbalance margin) has at least this much energy.
        self.min_half_energy = (
            2 * (_HALF / 2) * amp_min**2 / _db_to_power(params.max_half_imbalance_db)
        )
        self.normal_twist = _db_to_power(params.max_normal_twist_db + params.twist_margin_db)
        self.reverse_twist = _db_to_power(params.max_reverse_twist_db + params.twist_margin_db)
        self.imbalance = _db_to_power(params.max_half_imbalance_db)
        self.imbalance_weak = _db_to_power(2 * params.max_half_imbalance_db)
        self.harmonic = _db_to_power(params.max_harmonic_db)
        self.relative_peak = _db_to_power(-params.min_relative_peak_db)
        self.max_dphi = 2 * np.pi * params.max_freq_deviation * _FREQS * _HALF / SAMPLE_RATE

    def hits(
        self,
        xa: npt.NDArray[np.complex128],
        xb: npt.NDArray[np.complex128],
        ea: FloatArray,
        eb: FloatArray,
        prev_half: FloatArray,
        cur: FloatArray,
        held: IntArray,
    ) -> tuple[IntArray, FloatArray]:
        """For m channels x 2 windows: ``xa``/``xb`` (m, 2, 8) DFTs of each window's halves,
        ``ea``/``eb`` (m, 2) their energies, ``prev_half`` (m, 80) the previous frame's second
        half and ``cur`` (m, 160) this frame (window 0 = prev_half + cur[:80], window 1 = cur),
        ``held`` (m, 1) the digit each channel currently reports (-1 = none).
        Returns (digit index or -1, weaker-tone power), both (m, 2)."""
        p = self.p
        pa = xa.real**2 + xa.imag**2
        pb = xb.real**2 + xb.imag**2
        pw = pa + pb
        r = np.argmax(pw[..., :4], axis=-1)
        c = np.argmax(pw[..., 4:], axis=-1) + 4
        pr = np.take_along_axis(pw, r[..., None], -1)[..., 0]
        pc = np.take_along_axis(pw, c[..., None], -1)[..., 0]
        ok = (pr >= self.min_power) & (pc >= self.min_power)
        ok &= (pr <= pc * self.normal_twist) & (pc <= pr * self.reverse_twist)
        ok &= (pr + pc) * (_P_TO_AMP2 * _HALF) >= p.min_energy_ratio * (ea + eb)
        result = np.full(r.shape, -1, dtype=np.intp)
        if not ok.any():
            return result, pw[..., 0]
        row_louder = pr >= pc
        for k, louder in ((r, row_louder), (c, ~row_louder)):
            kk = k[..., None]
            a = np.take_along_axis(pa, kk, -1)[..., 0]
            b = np.take_along_axis(pb, kk, -1)[..., 0]
            # The weaker tone's half-block powers wobble with leakage from the louder one (up to
            # ±4 dB at 8 dB twist), so only the louder tone gets the tight limit.
            lim = np.where(louder, self.imbalance, self.imbalance_weak)
            ok &= (a <= b * lim) & (b <= a * lim)
            za = np.take_along_axis(xa, kk, -1)[..., 0]
            zb = np.take_along_axis(xb, kk, -1)[..., 0]
            dphi = np.abs(np.angle(zb * np.conj(za) * _DEROTATE[k]))
            ok &= dphi <= self.max_dphi[k]
        weaker = np.minimum(pr, pc)
        flat_ok = ok.reshape(-1)
        if not flat_ok.any():
            return result, weaker
        # Harmonic confirmation for the (rare) windows that passed everything else.
        flat_xa = xa.reshape(-1, 8)
        flat_xb = xb.reshape(-1, 8)
        flat_pw = pw.reshape(-1, 8)
        flat_r = r.reshape(-1)
        flat_c = c.reshape(-1)
        flat_res = result.reshape(-1)
        flat_held = np.broadcast_to(held, r.shape).reshape(-1)
        for i in np.flatnonzero(flat_ok):
            ri, ci = int(flat_r[i]), int(flat_c[i])
            digit = ri * 4 + (ci - 4)
            if digit == flat_held[i]:
                # The digit was confirmed at key-down; re-running the fit on every window of a
                # long key press buys nothing (the cheap tests still have to pass).
                flat_res[i] = digit
                continue
            fr = self._measured_freq(flat_xa[i, ri], flat_xb[i, ri], ri)
            fc = self._measured_freq(flat_xa[i, ci], flat_xb[i, ci], ci)
            rows = flat_pw[i, :4].copy()
            rows[ri] = -1.0
            cols = flat_pw[i, 4:].copy()
            cols[ci - 4] = -1.0
            r2 = float(_FREQS[int(np.argmax(rows))])
            c2 = float(_FREQS[int(np.argmax(cols)) + 4])
            ch, w = divmod(int(i), 2)
            x = cur[ch] if w else np.concatenate([prev_half[ch], cur[ch, :_HALF]])
            if self._confirm(x, fr, fc, r2, c2):
                flat_res[i] = digit
        return result, weaker

    @staticmethod
    def _measured_freq(za: complex, zb: complex, k: int) -> float:
        dphi = float(np.angle(zb * np.conj(za) * _DEROTATE[k]))
        return float(_FREQS[k]) + dphi * SAMPLE_RATE / (2 * np.pi * _HALF)

    def _confirm(self, x: FloatArray, fr: float, fc: float, r2: float, c2: float) -> bool:
        """Least-squares fit of the window to sinusoids at the measured row and column
        frequencies, their 2nd harmonics and the runner-up row and column: harmonics must be
        ``max_harmonic_db`` and runners-up ``min_relative_peak_db`` below their fundamental."""
        freqs = np.array([fr, fc, 2 * fr, 2 * fc, r2, c2])
        e = np.exp(_J2PI_T * freqs)  # (160, 6) complex
        model = np.concatenate([e.real, e.imag], axis=1)
        # normal equations: 12 x 12, well conditioned (all frequencies ≥ 58 Hz apart)
        coef = np.linalg.solve(model.T @ model, model.T @ x)
        amp2 = coef[:6] ** 2 + coef[6:] ** 2
        return bool(
            amp2[2] <= amp2[0] * self.harmonic
            and amp2[3] <= amp2[1] * self.harmonic
            and amp2[4] <= amp2[0] * self.relative_peak
            and amp2[5] <= amp2[1] * self.relative_peak
        )


def _power_to_dbov(power: float) -> float:
    amp2 = max(power * _P_TO_AMP2, 1e-12)
    return 10.0 * math.log10(amp2) - 20.0 * math.log10(_FULL_SCALE)


class _Tracker:
    """Per-channel key-down / key-up state machine over the 10 ms window decisions."""

    __slots__ = ("active", "active_t", "cand", "cand_n", "cand_t", "last_end", "misses", "p")

    def __init__(self, params: DtmfParams) -> None:
        self.p = params
        self.cand = -1
        self.cand_n = 0
        self.cand_t = 0.0
        self.active = -1
        self.active_t = 0.0
        self.last_end = 0.0
        self.misses = 0

    @property
    def idle(self) -> bool:
        return self.cand < 0 and self.active < 0

    def window(self, hit: int, start: float, power: float, out: list[DtmfEvent]) -> None:
        if hit >= 0 and hit == self.cand:
            self.cand_n += 1
        elif hit >= 0:
            self.cand, self.cand_n, self.cand_t = hit, 1, start
        else:
            self.cand, self.cand_n = -1, 0
        if self.active >= 0:
            if hit == self.active:
                self.last_end = start + _WIN_S
                self.misses = 0
            else:
                self.misses += 1
                if self.misses >= self.p.misses_to_end:
                    out.append(
                        DtmfKeyUp(DIGITS[self.active], self.last_end, self.last_end - self.active_t)
                    )
                    self.active = -1
        if self.active < 0 and self.cand_n >= self.p.hits_to_begin:
            self.active, self.active_t = self.cand, self.cand_t
            self.last_end, self.misses = start + _WIN_S, 0
            out.append(DtmfKeyDown(DIGITS[self.active], self.cand_t, _power_to_dbov(power)))

    def flush(self, out: list[DtmfEvent]) -> None:
        if self.active >= 0:
            out.append(DtmfKeyUp(DIGITS[self.active], self.last_end, self.last_end - self.active_t))
        self.active, self.cand, self.cand_n, self.misses = -1, -1, 0, 0


class DtmfDetector:
    """In-band DTMF receiver for one audio stream.

    ``feed(frame, t)`` takes one 160-sample int16 frame and the time of its first sample and
    returns :class:`DtmfKeyDown` (once per key press, ~30 ms after the tone starts) and
    :class:`DtmfKeyUp` (with the duration, ~30 ms after it stops) events. ``flush()`` ends a digit
    still held when the stream stops.
    """

    def __init__(self, params: DtmfParams | None = None) -> None:
        self.params = params or DtmfParams()
        self._an = _Analyser(self.params)
        self._tracker = _Tracker(self.params)
        self._prev_x = np.zeros(_HALF)
        self._prev_y = np.zeros(16)
        self._prev_e = 0.0

    def feed(self, frame: Frame, t: float) -> list[DtmfEvent]:
        x = np.asarray(frame, dtype=np.float64).reshape(2, _HALF)
        e = np.einsum("ij,ij->i", x, x)
        out: list[DtmfEvent] = []
        tr = self._tracker
        prev_e = self._prev_e
        if max(prev_e, e[0], e[1]) < self._an.min_half_energy:
            # Too quiet to hold a digit in any window: skip the spectra (the common case).
            if not tr.idle:
                tr.window(-1, t - _HOP_S, 0.0, out)
                tr.window(-1, t, 0.0, out)
            self._prev_x, self._prev_y, self._prev_e = x[1], np.zeros(16), float(e[1])
            return out
        y = x @ _BASIS  # (2, 16)
        ys = np.vstack([self._prev_y, y])  # halves: prev_b, a, b
        z = ys[:, :8] - 1j * ys[:, 8:]
        es = np.array([prev_e, e[0], e[1]])
        held = np.array([[tr.active]], dtype=np.intp)
        hits, powers = self._an.hits(
            z[None, :2],
            z[None, 1:],
            es[None, :2],
            es[None, 1:],
            self._prev_x[None, :],
            x.reshape(1, -1),
            held,
        )
        tr.window(int(hits[0, 0]), t - _HOP_S, float(powers[0, 0]), out)
        tr.window(int(hits[0, 1]), t, float(powers[0, 1]), out)
        self._prev_x, self._prev_y, self._prev_e = x[1], y[1], float(e[1])
        return out

    def flush(self) -> list[DtmfEvent]:
        out: list[DtmfEvent] = []
        self._tracker.flush(out)
        return out

    @property
    def tone_present(self) -> bool:
        """The last frame fed held a key's tone pair (a candidate not yet a key press included):
        known at once, ~30 ms before the DtmfKeyDown."""
        return not self._tracker.idle


class DtmfBatchDetector:
    """DTMF receivers for ``channels`` streams that share one media clock tick.

    ``feed(frames, t)`` takes a (channels, 160) int16 matrix (row i = stream i) and returns
    ``(channel, event)`` pairs. The spectra of all channels are one (2·channels x 80) @ (80 x 16)
    matrix product and the window tests run vectorised, so the per-channel cost is a fraction of
    :class:`DtmfDetector`'s; the Python state machine runs only for channels with a candidate.
    """

    def __init__(self, channels: int, params: DtmfParams | None = None) -> None:
        self.params = params or DtmfParams()
        self.channels = channels
        self._an = _Analyser(self.params)
        self._trackers = [_Tracker(self.params) for _ in range(channels)]
        self._busy: set[int] = set()
        self._held = np.full(channels, -1, dtype=np.intp)
        self._prev_x = np.zeros((channels, _HALF))
        self._prev_y = np.zeros((channels, 16))
        self._prev_e = np.zeros(channels)

    def reset_channel(self, channel: int) -> None:
        """Forget a channel's history (reuse the slot for a new call)."""
        self._trackers[channel] = _Tracker(self.params)
        self._busy.discard(channel)
        self._held[channel] = -1
        self._prev_x[channel] = 0.0
        self._prev_y[channel] = 0.0
        self._prev_e[channel] = 0.0

    def feed(self, frames: npt.NDArray[np.int16], t: float) -> list[tuple[int, DtmfEvent]]:
        n = self.channels
        x = np.asarray(frames, dtype=np.float64).reshape(n, 2, _HALF)
        e = np.einsum("ijk,ijk->ij", x, x)  # (n, 2)
        y = (x.reshape(2 * n, _HALF) @ _BASIS).reshape(n, 2, 16)
        ys = np.concatenate([self._prev_y[:, None, :], y], axis=1)  # (n, 3, 16)
        z = ys[..., :8] - 1j * ys[..., 8:]
        es = np.concatenate([self._prev_e[:, None], e], axis=1)  # (n, 3)
        loud = es.max(axis=1) >= self._an.min_half_energy
        hits = np.full((n, 2), -1, dtype=np.intp)
        powers = np.zeros((n, 2))
        idx = np.flatnonzero(loud)
        if idx.size:
            zi = z[idx]
            ei = es[idx]
            held = self._held[idx][:, None]
            h, pw = self._an.hits(
                zi[:, :2],
                zi[:, 1:],
                ei[:, :2],
                ei[:, 1:],
                self._prev_x[idx],
                x[idx].reshape(idx.size, _N_WIN),
                held,
            )
            hits[idx] = h
            powers[idx] = pw
        out: list[tuple[int, DtmfEvent]] = []
        active = set(np.flatnonzero((hits >= 0).any(axis=1)).tolist()) | self._busy
        events: list[DtmfEvent] = []
        for ch in sorted(active):
            tr = self._trackers[ch]
            tr.window(int(hits[ch, 0]), t - _HOP_S, float(powers[ch, 0]), events)
            tr.window(int(hits[ch, 1]), t, float(powers[ch, 1]), events)
            out.extend((ch, ev) for ev in events)
            events.clear()
            self._held[ch] = tr.active
            if tr.idle:
                self._busy.discard(ch)
            else:
                self._busy.add(ch)
        self._prev_x = x[:, 1, :].copy()
        self._prev_y = y[:, 1, :].copy()
        self._prev_e = e[:, 1].copy()
        return out


# ---------------------------------------------------------------------------------------------
# Generator


def dtmf_tone(
    digit: str,
    duration: float = 0.1,
    *,
    level_dbov: float = -13.0,
    twist_db: float = 2.0,
    freq_error: tuple[float, float] = (0.0, 0.0),
    phase: tuple[float, float] = (0.0, 0.0),
) -> FloatArray:
    """One DTMF digit as float samples (not yet clipped to int16).

    ``level_dbov`` is the level of the low-group (row) tone relative to a full-scale sine
    (-13 dBov ≈ -10 dBm0 with G.711); ``twist_db`` the high-group level minus the low-group level:
    Q.23 senders pre-emphasise the high group by about 2 dB, a positive value is *reverse* twist in
    receiver terms, a negative value *normal* twist. ``freq_error`` = relative error of (row, col).
    """
    if digit.upper() not in DIGIT_FREQS:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    fr, fc = DIGIT_FREQS[digit.upper()]
    fr *= 1.0 + freq_error[0]
    fc *= 1.0 + freq_error[1]
    n = round(duration * SAMPLE_RATE)
    tt = np.arange(n) / SAMPLE_RATE
    a_low = _FULL_SCALE * 10.0 ** (level_dbov / 20.0)
    a_high = a_low * 10.0 ** (twist_db / 20.0)
    out: FloatArray = a_low * np.sin(2 * np.pi * fr * tt + phase[0]) + a_high * np.sin(
        2 * np.pi * fc * tt + phase[1]
    )
    return out


#: send_digits pause characters (SWML: ``w`` = 0.5 s, ``W`` = 1 s; ``,`` dialler convention 1 s).
PAUSES: dict[str, float] = {"w": 0.5, "W": 1.0, ",": 1.0}


def dtmf_digits(
    digits: str | Sequence[str],
    *,
    tone: float = 0.1,
    gap: float = 0.1,
    level_dbov: float = -13.0,
    twist_db: float = 2.0,
) -> Frame:
    """int16 samples for a send_digits string (``0-9 A-D * #`` plus ``w``/``W``/``,`` pauses).

    Defaults follow common practice for in-band sending: 100 ms tones with 100 ms gaps (Q.24 needs
    ≥ 40 ms each). The result is zero-padded to whole 20 ms frames.
    """
    parts: list[FloatArray] = []
    gap_samples = np.zeros(round(gap * SAMPLE_RATE))
    for ch in digits:
        if ch in PAUSES:
            parts.append(np.zeros(round(PAUSES[ch] * SAMPLE_RATE)))
            continue
        parts.append(dtmf_tone(ch, tone, level_dbov=level_dbov, twist_db=twist_db))
        parts.append(gap_samples)
    x = np.concatenate(parts) if parts else np.zeros(0)
    pad = (-x.size) % FRAME_SAMPLES
    x = np.concatenate([x, np.zeros(pad)])
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)
