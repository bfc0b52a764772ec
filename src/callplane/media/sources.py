"""Audio sources for the media clock: 160-sample (20 ms at 8 kHz) int16 frames.

A :class:`Source` is an immutable description of audio (a tone, a ringtone cadence, decoded file
samples). The engine plays it through a :class:`FrameReader` obtained from :meth:`Source.reader`, so
one source can be played by many sessions at once and looped by asking for a fresh reader.
Everything is precomputed when the source is built: a reader only hands out views into a ready
(frames x 160) matrix, so the per-frame cost is one row lookup, never a per-sample Python loop.

Sources are also plain iterables of frames (``for frame in tone(1000, 1.0): ...``).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms at 8 kHz
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE

Frame = npt.NDArray[np.int16]
FloatArray = npt.NDArray[np.float64]

# A repeating buffer longer than this is not worth precomputing; sources fall back to a
# one-second cycle (tones) or render their finite length instead.
_MAX_CYCLE_SAMPLES = 60 * SAMPLE_RATE


class Reader(Protocol):
    """What a playback reads: the next 160-sample frame, or None at the end."""

    def next_frame(self) -> Frame | None: ...


class FrameReader:
    """A cursor over a source: ``next_frame()`` gives the next 160-sample frame, None at the end.

    The returned array is a read-only view shared with other readers: never write into it.
    """

    __slots__ = ("_frames", "_index", "_last", "_n_cycle", "_remaining")

    def __init__(self, frames: Frame, total_frames: int | None, last: Frame | None) -> None:
        self._frames = frames  # (n, 160) matrix, cycled
        self._n_cycle = frames.shape[0]
        self._index = 0
        self._remaining = total_frames  # None = endless
        self._last = last  # zero-padded final frame of a finite source whose end is mid-frame

    def next_frame(self) -> Frame | None:
        remaining = self._remaining
        if remaining is not None:
            if remaining <= 0:
                return None
            self._remaining = remaining - 1
            if remaining == 1 and self._last is not None:
                return self._last
        i = self._index
        self._index = i + 1 if i + 1 < self._n_cycle else 0
        frame: Frame = self._frames[i]
        return frame

    @property
    def position(self) -> int:
        """Frames handed out so far modulo the cycle (for tests and diagnostics)."""
        return self._index


class Source:
    """An immutable audio source: a (frames x 160) matrix played once or cycled.

    ``duration`` is the length in seconds, or None for an endless source (e.g. a ringtone
    without a duration).
    """

    __slots__ = ("_frames", "_last", "_total_frames", "duration", "name")

    def __init__(self, samples: Frame, total_samples: int | None, name: str = "pcm") -> None:
        """``samples`` is one cycle; ``total_samples`` the length to play (None = endless)."""
        samples = np.ascontiguousarray(samples, dtype=np.int16).reshape(-1)
        if samples.size == 0:
            samples = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        if total_samples is not None and total_samples <= samples.size:
            # Played once (or less): no need for the cycle to be frame-aligned.
            n = -(-total_samples // FRAME_SAMPLES)
            padded = np.zeros(n * FRAME_SAMPLES, dtype=np.int16)
            padded[:total_samples] = samples[:total_samples]
            frames = padded.reshape(n, FRAME_SAMPLES)
            last = None
        else:
            frames = _frame_aligned_cycle(samples).reshape(-1, FRAME_SAMPLES)
            last = None
            if total_samples is not None and total_samples % FRAME_SAMPLES:
                # The final frame of a cycled finite source ends mid-frame: zero its tail once now.
                k = (total_samples // FRAME_SAMPLES) % frames.shape[0]
                last = frames[k].copy()
                last[total_samples % FRAME_SAMPLES :] = 0
                last.flags.writeable = False
        frames.flags.writeable = False
        self._frames = frames
        self._last = last
        self._total_frames = None if total_samples is None else -(-total_samples // FRAME_SAMPLES)
        self.duration = None if total_samples is None else total_samples / SAMPLE_RATE
        self.name = name

    def reader(self) -> FrameReader:
        """A fresh cursor positioned at the start of the source."""
        return FrameReader(self._frames, self._total_frames, self._last)

    def __iter__(self) -> Iterator[Frame]:
        reader = self.reader()
        while (frame := reader.next_frame()) is not None:
            yield frame

    def render(self, seconds: float | None = None) -> Frame:
        """The source as one array (the first ``seconds`` of it; required for endless sources)."""
        if self._total_frames is None and seconds is None:
            raise ValueError("an endless source needs a length to render")
        limit = math.ceil(seconds * 50) if seconds is not None else 0
        if self._total_frames is not None:
            limit = self._total_frames if seconds is None else min(limit, self._total_frames)
        reader = self.reader()
        out = np.empty((limit, FRAME_SAMPLES), dtype=np.int16)
        for i in range(limit):
            frame = reader.next_frame()
            assert frame is not None
            out[i] = frame
        return out.reshape(-1)

    def __repr__(self) -> str:
        return f"<Source {self.name} duration={self.duration}>"


class LiveSource:
    """Audio pushed in from outside while it plays: a bridged peer, a WebSocket stream, a speech
    synthesizer. It plays silence while it runs dry instead of ending, and ends once closed and
    drained. Pushes of any length are re-cut into 160-sample frames; at most ``max_frames`` are
    queued (the oldest are dropped), so a producer running ahead cannot build up delay.
    """

    def __init__(self, name: str = "live", max_frames: int = 50) -> None:
        if max_frames < 1:
            raise ValueError("max_frames must be >= 1")
        self.name = name
        self.duration: float | None = None
        self.max_frames = max_frames
        self._frames: deque[Frame] = deque()
        self._partial = np.zeros(0, dtype=np.int16)
        self._closed = False
        self._silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self._silence.flags.writeable = False
        self.dropped_frames = 0
        self.dry_frames = 0
        # Marks (a media stream's `mark`): (sample position in everything pushed, name), fired
        # through on_mark once the frame holding that position has been handed out to play.
        self._marks: deque[tuple[int, str]] = deque()
        self._pushed = 0  # samples pushed so far
        self._played = 0  # samples handed out (or dropped) so far
        self.on_mark: Callable[[str], None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued_frames(self) -> int:
        return len(self._frames)

    def push(self, samples: npt.ArrayLike) -> None:
        """Queue 8 kHz int16 samples (any length); ignored once closed."""
        if self._closed:
            return
        x = np.asarray(samples, dtype=np.int16).reshape(-1)
        self._pushed += x.size
        if self._partial.size:
            x = np.concatenate([self._partial, x])
        whole = x.size // FRAME_SAMPLES
        for k in range(whole):
            self._frames.append(x[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES].copy())
        self._partial = x[whole * FRAME_SAMPLES :].copy()
        overflow = len(self._frames) - self.max_frames
        if overflow > 0:
            self.dropped_frames += overflow
            for _ in range(overflow):
                self._frames.popleft()
            self._played += overflow * FRAME_SAMPLES
            self._fire_marks()

    def mark(self, name: str) -> None:
        """Report ``name`` through ``on_mark`` once everything pushed so far has played (at
        once when nothing is queued)."""
        self._marks.append((self._pushed, name))
        self._fire_marks()

    @property
    def pending_marks(self) -> list[str]:
        return [name for _, name in self._marks]

    def _fire_marks(self) -> None:
        while self._marks and self._marks[0][0] <= self._played:
            _, name = self._marks.popleft()
            if self.on_mark is not None:
                self.on_mark(name)

    def close(self) -> None:
        """No more audio: the playback ends once what is queued has played."""
        self._closed = True

    def clear(self) -> list[str]:
        """Drop everything queued (an interruption: barge-in, a stream's `clear`) and return the
        names of the marks still pending, which will never fire."""
        self._frames.clear()
        self._partial = np.zeros(0, dtype=np.int16)
        self._played = self._pushed
        pending = self.pending_marks
        self._marks.clear()
        return pending

    def reader(self) -> LiveSource:
        # One queue, one consumer: a live source is read where it is played.
        return self

    def next_frame(self) -> Frame | None:
        if self._frames:
            frame = self._frames.popleft()
            self._played += FRAME_SAMPLES
            if self._marks:
                self._fire_marks()
            return frame
        # A partial frame is flushed (padded with silence) when the source ends, or when a
        # mark waits for it: nothing more may come before the producer hears the mark back.
        if self._partial.size and (self._closed or self._marks):
            last = np.zeros(FRAME_SAMPLES, dtype=np.int16)
            last[: self._partial.size] = self._partial
            self._played += self._partial.size
            self._partial = np.zeros(0, dtype=np.int16)
            self._fire_marks()
            return last
        if self._closed:
            return None
        self.dry_frames += 1
        return self._silence

    def __repr__(self) -> str:
        return f"<LiveSource {self.name} queued={len(self._frames)} closed={self._closed}>"


def _frame_aligned_cycle(cycle: Frame) -> Frame:
    """Repeat ``cycle`` until its length is a whole number of frames (so readers hand out views)."""
    n = cycle.size
    reps = math.lcm(n, FRAME_SAMPLES) // n
    if reps * n > _MAX_CYCLE_SAMPLES:
        # Pathological cycle lengths: truncate to whole frames and accept a tiny glitch per wrap.
        whole = max(FRAME_SAMPLES, (n // FRAME_SAMPLES) * FRAME_SAMPLES)
        return np.resize(cycle, whole)
    return np.tile(cycle, reps)


def _seconds_to_samples(seconds: float | None) -> int | None:
    if seconds is None:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration must be a finite number >= 0, got {seconds}")
    return round(seconds * SAMPLE_RATE)


def _to_int16(x: FloatArray) -> Frame:
    return np.clip(np.rint(x * 32767.0), -32768, 32767).astype(np.int16)


def _sines(freqs: Sequence[float], n: int, amplitude: float, start: int = 0) -> FloatArray:
    t = np.arange(start, start + n, dtype=np.float64) / SAMPLE_RATE
    out = np.zeros(n, dtype=np.float64)
    if not freqs:
        return out
    each = amplitude / len(freqs)
    for f in freqs:  # a handful of frequencies, each one vectorised over all samples
        out += each * np.sin(2 * np.pi * f * t)
    return out


def silence(seconds: float | None) -> Source:
    """Digital silence for ``seconds`` (rounded to whole samples); None = endless."""
    return Source(np.zeros(FRAME_SAMPLES, dtype=np.int16), _seconds_to_samples(seconds), "silence")


def tone(
    freqs: float | Sequence[float], seconds: float | None, level_dbfs: float = -13.0
) -> Source:
    """A steady tone: the sum of ``freqs`` (Hz) with combined peak ``level_dbfs`` dBFS.

    ``seconds`` None = endless. Integer frequencies repeat exactly every second, so one second is
    precomputed and cycled; other frequencies are rendered for the whole (finite) duration.
    """
    flist = [float(freqs)] if isinstance(freqs, int | float) else [float(f) for f in freqs]
    for f in flist:
        if not 0 < f < SAMPLE_RATE / 2:
            raise ValueError(f"tone frequency {f} Hz outside (0, 4000)")
    total = _seconds_to_samples(seconds)
    amp = 10 ** (level_dbfs / 20)
    if all(f.is_integer() for f in flist) or total is None or total > _MAX_CYCLE_SAMPLES:
        n = SAMPLE_RATE
    else:
        n = max(total, 1)
    label = "+".join(f"{f:g}" for f in flist)
    return Source(_to_int16(_sines(flist, n, amp)), total, f"tone({label})")


# ---------------------------------------------------------------------------------------------
# Ringtones


@dataclass(frozen=True, slots=True)
class ToneSpec:
    """A ringing tone's sound: a sum of frequencies, optionally amplitude-modulated.

    ``modulation`` (Hz) means ``freqs[0] * modulation`` in E.180 notation: a carrier whose
    amplitude is modulated at a low frequency (depth ``depth``).
    """

    freqs: tuple[float, ...]
    modulation: float | None = None
    depth: float = 0.9


@dataclass(frozen=True, slots=True)
class Ringtone:
    """Cadence as (milliseconds, tone or None for silence) segments, repeated."""

    segments: tuple[tuple[int, ToneSpec | None], ...]
    note: str = ""


def _ring(freqs: tuple[float, ...], *cadence_ms: int, mod: float | None = None) -> Ringtone:
    """Alternating on/off cadence with one tone: _ring((425,), 1000, 4000) = 1 s on, 4 s off."""
    spec = ToneSpec(freqs, mod)
    return Ringtone(tuple((ms, spec if i % 2 == 0 else None) for i, ms in enumerate(cadence_ms)))


# Ringing (ringback) tones per country. Source: ITU-T E.180 Supplement 2 ("Various tones used in
# national networks", the Operational Bulletin 781 tone list of 2003) and the national specs it
# cites (BT SIN 350 for uk, ACIF S002 for au, Telepermit TNA 102 for nz, IDA TS PSTN1 for sg,
# GOST 45.223 for ru). E.180 notation: "a+b" is a sum of frequencies, "a*b" an a Hz carrier
# amplitude-modulated at b Hz. Entries marked "approx." could not be checked against the
# bulletin here and follow commonly published values.
RINGTONES: dict[str, Ringtone] = {
    "at": _ring((420,), 1000, 5000),
    "au": _ring((413, 438), 400, 200, 400, 2000),
    "be": _ring((425,), 1000, 3000),
    "bg": _ring((425,), 1000, 4000),
    "br": _ring((425,), 1000, 4000),
    "ca": _ring((440, 480), 2000, 4000),
    "ch": _ring((425,), 1000, 4000),
    "cl": _ring((400,), 1000, 3000),
    "cn": _ring((450,), 1000, 4000),
    "cy": _ring((425,), 1500, 3000),
    "cz": _ring((425,), 1000, 4000),
    "de": _ring((425,), 1000, 4000),
    "dk": _ring((425,), 1000, 4000),
    "dz": _ring((425,), 1500, 3500),
    "ee": _ring((425,), 1000, 4000),
    "eg": _ring((475, 375), 2000, 1000),  # approx.
    "es": _ring((425,), 1500, 3000),
    "fi": _ring((425,), 1000, 4000),
    "fr": _ring((440,), 1500, 3500),
    "gr": _ring((425,), 1000, 4000),
    "hu": _ring((425,), 1250, 3750),
    "il": _ring((414,), 1000, 3000),
    "in": _ring((400,), 400, 200, 400, 2000, mod=25),
    "it": _ring((425,), 1000, 4000),
    "jp": _ring((400,), 1000, 2000, mod=16),
    "ko": _ring((440, 480), 1000, 2000),
    "lt": _ring((425,), 1000, 4000),
    "mx": _ring((425,), 1000, 4000),
    "my": _ring((425,), 400, 200, 400, 2000),
    "nl": _ring((425,), 1000, 4000),
    "no": _ring((425,), 1000, 4000),
    "nz": _ring((400, 450), 400, 200, 400, 2000),
    "ph": _ring((425, 480), 1000, 4000),
    "pk": _ring((400,), 1000, 2000),  # approx.
    "pl": _ring((425,), 1000, 4000),
    "pt": _ring((425,), 1000, 5000),
    "ro": _ring((450,), 1500, 4500),  # approx.
    "rs": _ring((425,), 1000, 4000),
    "ru": _ring((425,), 1000, 4000),
    "sa": _ring((425,), 1200, 4600),  # approx.
    "se": _ring((425,), 1000, 5000),
    "sg": _ring((425,), 400, 200, 400, 2000, mod=24),
    "th": _ring((420,), 1000, 5000),
    "tr": _ring((450,), 2000, 4000),  # approx.
    "tw": _ring((440, 480), 1000, 2000),
    "uk": _ring((400, 450), 400, 200, 400, 2000),
    "us": _ring((440, 480), 2000, 4000),
    "ve": _ring((425,), 1000, 4000),
    "za": _ring((400,), 400, 200, 400, 2000, mod=33),
    # Not a country: a short DTMF-pitched "bong" followed by a dial-tone-like ring, repeated.
    "bong": Ringtone(
        ((100, ToneSpec((941, 1477))), (1400, ToneSpec((350, 440))), (1000, None)),
        "chime",
    ),
    # SWML's ring list only: the pre-1960s North American ringback, 420 Hz modulated at 40 Hz.
    "us-old": _ring((420,), 2000, 4000, mod=40),
}

#: Names accepted by :func:`ringtone`: the reference's REST enum plus SWML's ``us-old``.
RINGTONE_NAMES: tuple[str, ...] = tuple(RINGTONES)

_RINGTONE_LEVEL_DBFS = -16.0
_ringtone_cache: dict[str, Frame] = {}


def _render_ringtone(spec: Ringtone) -> Frame:
    parts: list[FloatArray] = []
    amp = 10 ** (_RINGTONE_LEVEL_DBFS / 20)
    pos = 0
    for ms, tone_spec in spec.segments:
        n = ms * SAMPLE_RATE // 1000
        if tone_spec is None:
            parts.append(np.zeros(n))
        else:
            # Phase continues across segments (start=pos) so the cycle joins without clicks.
            x = _sines(tone_spec.freqs, n, amp, start=pos)
            if tone_spec.modulation is not None:
                t = np.arange(pos, pos + n) / SAMPLE_RATE
                env = 1.0 + tone_spec.depth * np.sin(2 * np.pi * tone_spec.modulation * t)
                x = x * env / (1.0 + tone_spec.depth)
            parts.append(x)
        pos += n
    return _to_int16(np.concatenate(parts))


def ringtone(country: str, seconds: float | None = None) -> Source:
    """The ringing tone of ``country`` (reference §5.1 enum plus ``us-old``) with its real cadence.

    ``seconds`` bounds the total length; None rings until stopped. Raises ValueError on an
    unknown name.
    """
    key = country.lower()
    spec = RINGTONES.get(key)
    if spec is None:
        raise ValueError(f"unknown ringtone {country!r}; known: {' '.join(RINGTONE_NAMES)}")
    cycle = _ringtone_cache.get(key)
    if cycle is None:
        cycle = _ringtone_cache[key] = _render_ringtone(spec)
    return Source(cycle, _seconds_to_samples(seconds), f"ringtone({key})")


# ---------------------------------------------------------------------------------------------
# Files and raw PCM


def _design_lowpass(up: int, down: int, zero_crossings: int = 32) -> FloatArray:
    """Kaiser-windowed sinc for rational resampling by up/down, cut below the lower Nyquist.

    The length is ``zero_crossings`` periods of the lower Nyquist rate, so the
    transition band is as sharp for 44.1 kHz -> 8 kHz as for 16 kHz -> 8 kHz.
    """
    cutoff = 0.5 / max(up, down) * 0.9  # cycles per upsampled sample: 3.6 kHz at 8 kHz out
    n = -(-zero_crossings * max(up, down) // up) * up  # a whole number of taps per phase
    m = np.arange(n) - (n - 1) / 2
    h = 2 * cutoff * np.sinc(2 * cutoff * m) * np.kaiser(n, 8.0)
    h *= up / h.sum()  # unity gain after zero-stuffing by `up`
    out: FloatArray = h.astype(np.float64)
    return out


class FrameResampler:
    """:func:`resample`'s filter for a signal that arrives in blocks (a live call's frames): the
    filter's history is kept between blocks, so block edges cost nothing. Each block's length
    times ``rate_out / rate_in`` must be whole samples on the up-sampled grid; the output lags
    the input by the filter's half length (``zero_crossings`` / 2 periods of the lower rate)."""

    def __init__(self, rate_in: int, rate_out: int, zero_crossings: int = 16) -> None:
        g = math.gcd(rate_in, rate_out)
        self.up, self.down = rate_out // g, rate_in // g
        self._h = _design_lowpass(self.up, self.down, zero_crossings)
        self._history = np.zeros(self._h.size - 1)
        self._phase = 0  # index of the next output sample on the up-sampled grid

    def process(self, x: npt.ArrayLike) -> FloatArray:
        sig = np.asarray(x, dtype=np.float64).reshape(-1)
        if self.up == 1:
            stuffed = sig
        else:
            stuffed = np.zeros(sig.size * self.up)
            stuffed[:: self.up] = sig
        buf = np.concatenate([self._history, stuffed])
        filtered = np.convolve(buf, self._h, mode="valid")
        self._history = buf[buf.size - self._history.size :]
        out: FloatArray = filtered[self._phase :: self.down]
        self._phase = (self._phase - stuffed.size) % self.down
        return out


def resample(x: npt.ArrayLike, rate_in: int, rate_out: int = SAMPLE_RATE) -> FloatArray:
    """Polyphase FIR resampling of a float signal by the rational factor rate_out/rate_in.

    Written with NumPy only (no SciPy dependency): each output sample n uses phase
    ``(n*down) % up`` of the prototype filter against the input samples around ``n*down // up``;
    the gathers are vectorised over blocks of output samples.
    """
    sig = np.asarray(x, dtype=np.float64).reshape(-1)
    if rate_in == rate_out or sig.size == 0:
        return sig.copy()
    g = math.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    h = _design_lowpass(up, down)
    k = h.size // up  # taps per phase
    # phases[p, j] = h[p + j*up]: the taps applied to x[base - j] for output phase p.
    phases = h.reshape(k, up).T.copy()
    delay = (h.size - 1) / 2 / up  # filter delay in input samples, removed so output aligns
    n_out = sig.size * up // down
    padded = np.concatenate([np.zeros(k), sig, np.zeros(k + 2)])
    out = np.empty(n_out, dtype=np.float64)
    shift = round(delay * up)
    block = 8192
    js = np.arange(k)
    for start in range(0, n_out, block):
        n = np.arange(start, min(start + block, n_out))
        pos = n * down + shift  # position on the upsampled grid, delay-compensated
        base = pos // up
        phase = pos % up
        idx = base[:, None] - js[None, :] + k  # +k for the leading zero pad
        out[start : start + n.size] = np.einsum("ij,ij->i", padded[idx], phases[phase])
    return out


def _float_to_source(x: FloatArray, name: str) -> Source:
    return Source(_to_int16(x), x.size, name)


def audio_file(path: str | Path) -> Source:
    """Decode a WAV or MP3 file (via soundfile), mix to mono and resample to 8 kHz.

    Blocking (decoding): call it from a thread (``asyncio.to_thread``). Raises ValueError when
    the file cannot be decoded.
    """
    import soundfile  # imported here: decoding is optional for users of the other sources

    try:
        data, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, TypeError) as exc:
        raise ValueError(f"cannot decode audio file {path}: {exc}") from exc
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return _float_to_source(resample(mono, int(rate)), f"file({Path(path).name})")


def pcm(samples: npt.ArrayLike, sample_rate: int = SAMPLE_RATE) -> Source:
    """Wrap mono samples (int16, or float in [-1, 1]), resampled to 8 kHz when needed."""
    arr = np.asarray(samples)
    if arr.ndim != 1:
        raise ValueError(f"pcm() takes mono samples (1-D), got shape {arr.shape}")
    if arr.dtype == np.int16 and sample_rate == SAMPLE_RATE:
        return Source(arr, arr.size, "pcm")
    as_float = arr / 32768.0 if arr.dtype == np.int16 else arr.astype(np.float64)
    return _float_to_source(resample(as_float, sample_rate), "pcm")
