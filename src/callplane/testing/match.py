"""How `expect_said` decides that a phrase was heard: a fuzzy, phonetic match.

Speech recognition of telephone audio gets words wrong in ways that sound right ("press mind to
repeat his menu"). Comparing words would fail those; comparing sounds does not. Both the
expected phrase and what was recognised are turned into phonemes (the recogniser's own
pronunciation dictionary; letters for words it does not know), and the expected phonemes are
aligned against the best-matching stretch of what was heard (a semi-global edit distance: what
was said before and after the phrase costs nothing). The score is ``1 - edits / len(expected)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from callplane.providers.asr import normalize_phrase

# Measured with bench/bench_expect_said.py on the project's TTS voices: matched prompts score
# 1.0 or close to it, prompts sharing a few words with the expected one stay below ~0.8.
DEFAULT_THRESHOLD = 0.85
# Match by example (below): the mean cepstral distance along the alignment and that of its worst
# 250 ms, from the same benchmark.
TEMPLATE_MAX_MEAN = 17.5
TEMPLATE_MAX_WORST = 26.0

Phonetizer = Callable[[str], Sequence[str] | None]


def to_phones(text: str, phonetize: Phonetizer | None) -> list[str]:
    """Phonemes of ``text``; a word the dictionary lacks contributes its letters."""
    out: list[str] = []
    for word in normalize_phrase(text):
        phones = phonetize(word) if phonetize is not None else None
        out.extend(phones if phones else list(word))
    return out


def best_window_distance(expected: Sequence[str], heard: Sequence[str]) -> int:
    """Edits turning ``expected`` into the closest contiguous stretch of ``heard``."""
    n = len(expected)
    prev = [0] * (len(heard) + 1)  # a match may start anywhere in heard: row 0 costs nothing
    for i in range(1, n + 1):
        cur = [i] + [0] * len(heard)
        e = expected[i - 1]
        for j in range(1, len(heard) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (e != heard[j - 1]))
        prev = cur
    return min(prev) if heard else n


@dataclass(frozen=True, slots=True)
class Match:
    """``score``: the phonetic match of recognised speech against ``threshold``. ``distance``:
    the best match by example (``voice``), ``ok`` when within TEMPLATE_MAX_MEAN /
    TEMPLATE_MAX_WORST; None when it was not tried."""

    expected: str
    heard: str
    score: float
    threshold: float
    distance: float | None = None
    worst: float | None = None
    voice: str | None = None

    @property
    def by_speech(self) -> bool:
        return self.score >= self.threshold

    @property
    def by_example(self) -> bool:
        return (
            self.distance is not None
            and self.worst is not None
            and self.distance <= TEMPLATE_MAX_MEAN
            and self.worst <= TEMPLATE_MAX_WORST
        )

    @property
    def ok(self) -> bool:
        return self.by_speech or self.by_example

    def describe(self) -> str:
        text = f"speech {self.score} (threshold {self.threshold}) in {self.heard!r}"
        if self.distance is not None:
            text += (
                f"; by example ({self.voice}) distance {self.distance:.1f} "
                f"(at most {TEMPLATE_MAX_MEAN}), worst {self.worst:.1f} "
                f"(at most {TEMPLATE_MAX_WORST})"
            )
        return text


def match(
    expected: str,
    heard: str,
    threshold: float = DEFAULT_THRESHOLD,
    phonetize: Phonetizer | None = None,
) -> Match:
    want = to_phones(expected, phonetize)
    if not want:
        raise ValueError(f"nothing to expect in {expected!r}")
    got = to_phones(heard, phonetize)
    score = 1.0 - best_window_distance(want, got) / len(want)
    return Match(expected, heard, round(max(score, 0.0), 3), threshold)


# ---------------------------------------------------------------------------------------------
# Matching by example: the expected phrase spoken by the project's own TTS voices, searched for
# in what was heard (subsequence dynamic time warping on cepstra). Speech recognition of 8 kHz
# telephone audio misses whole prompts of some voices (flite's slt); a voice's own rendering of
# the phrase is found reliably, wherever the phrase sits in a longer prompt.

_RATE = 8000
_WIN = 200  # 25 ms
_HOP = 80  # 10 ms
_NFFT = 256
_BANDS = 24
_CEPS = 13
WORST_SPAN = 25  # template frames (250 ms: about a syllable or a short word)


def _mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_filters() -> np.ndarray:
    edges_mel = np.linspace(_mel(np.array(100.0)), _mel(np.array(3800.0)), _BANDS + 2)
    edges = 700.0 * (10 ** (edges_mel / 2595.0) - 1.0)
    bins = np.fft.rfftfreq(_NFFT, 1 / _RATE)
    filters = np.zeros((_BANDS, bins.size))
    for b in range(_BANDS):
        lo, mid, hi = edges[b], edges[b + 1], edges[b + 2]
        rising = (bins - lo) / (mid - lo)
        falling = (hi - bins) / (hi - mid)
        filters[b] = np.clip(np.minimum(rising, falling), 0.0, None)
    return filters


_FILTERS = _mel_filters()
_DCT = np.cos(np.pi / _BANDS * (np.arange(_BANDS) + 0.5)[None, :] * np.arange(1, _CEPS)[:, None])
_WINDOW = np.hanning(_WIN)


def features(samples: np.ndarray, *, trim: bool = False) -> np.ndarray:
    """Mean-normalised mel cepstra (c1..c12), one row per 10 ms; ``trim`` drops leading and
    trailing silence (for a rendering of the expected phrase)."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    if x.size < _WIN:
        return np.zeros((0, _CEPS - 1))
    count = 1 + (x.size - _WIN) // _HOP
    index = np.arange(_WIN)[None, :] + _HOP * np.arange(count)[:, None]
    frames = x[index] * _WINDOW
    power = np.abs(np.fft.rfft(frames, _NFFT)) ** 2
    energy = power.sum(axis=1)
    loud = energy > max(float(energy.max()) * 1e-3, 1e-6)
    if trim and loud.any():
        first, last = np.flatnonzero(loud)[[0, -1]]
        power, loud = power[first : last + 1], loud[first : last + 1]
    logmel = np.log(power @ _FILTERS.T + 1.0)
    ceps = logmel @ _DCT.T
    # The mean of speech frames only: silence would pull it, and its share differs between a
    # rendering of the phrase and a long stretch of a call.
    result: np.ndarray = ceps - (ceps[loud].mean(axis=0) if loud.any() else 0.0)
    return result


def subsequence_distance(template: np.ndarray, heard: np.ndarray) -> tuple[float, float, int]:
    """The best alignment of all of ``template`` with a stretch of ``heard`` (each template
    frame takes 0-2 heard frames: 0.5x-2x speed): its mean per-frame distance, its worst
    stretch (the highest mean over WORST_SPAN consecutive template frames: one wrong word in a
    right sentence shows there) and the heard frame where it ends. (inf, inf, 0) when heard is
    shorter than half the template."""
    n, m = len(template), len(heard)
    if n == 0 or m < n // 2:
        return math.inf, math.inf, 0
    cost = np.sqrt(((template[:, None, :] - heard[None, :, :]) ** 2).sum(axis=2))
    moves = np.zeros((n, m), dtype=np.int8)  # how many heard frames row i advanced from i-1
    acc = cost[0].copy()  # the match may start anywhere in heard
    for i in range(1, n):
        prev = acc
        best = prev.copy()  # the same heard frame again (the template is slower here)
        step = np.zeros(m, dtype=np.int8)
        one = np.full(m, np.inf)
        one[1:] = prev[:-1]
        two = np.full(m, np.inf)
        two[2:] = prev[:-2]
        better = one < best
        best[better], step[better] = one[better], 1
        better = two < best
        best[better], step[better] = two[better], 2
        moves[i] = step
        acc = cost[i] + best
    end = int(np.argmin(acc))
    path = np.empty(n)
    j = end
    for i in range(n - 1, -1, -1):
        path[i] = cost[i, j]
        j -= int(moves[i, j])
    span = min(WORST_SPAN, n)
    windows = np.convolve(path, np.ones(span) / span, mode="valid")
    return float(acc[end]) / n, float(windows.max()), end
