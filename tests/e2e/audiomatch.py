"""Does a recording hold a known signal? Matching that survives a jitter buffer adapting.

A receiver's jitter buffer may grow by a frame or two under load (a late packet), which slides
the rest of the timeline by 20-40 ms: one correlation over the whole signal then scores a
faithful recording 0.5. Matched piece by piece near the global alignment, it still scores near
1, and anything else (the other party, its own voice, noise, silence) near 0.
"""

from __future__ import annotations

import numpy as np

PIECE = 2000  # 0.25 s at 8 kHz
SLACK = 480  # each piece may sit 60 ms from where the whole lines up


def global_lag(haystack: np.ndarray, needle: np.ndarray) -> int:
    """Where `needle` lines up best in `haystack`, in samples (negative: `haystack` starts
    inside `needle`)."""
    a = haystack.astype(np.float64)
    b = needle.astype(np.float64)
    n = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    corr = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)
    lag = int(np.argmax(corr))
    return lag - n if lag >= len(a) else lag


def piecewise_ncc(haystack: np.ndarray, needle: np.ndarray, lag: int) -> float:
    """The energy-weighted mean over `needle`'s 0.25 s pieces of each piece's best normalised
    cross-correlation in `haystack` within SLACK of `lag` + its offset."""
    a = haystack.astype(np.float64)
    b = needle.astype(np.float64)
    scores: list[float] = []
    weights: list[float] = []
    for start in range(0, len(b) - PIECE + 1, PIECE):
        piece = b[start : start + PIECE]
        energy = float(np.dot(piece, piece))
        window = a[max(lag + start - SLACK, 0) : max(lag + start + PIECE + SLACK, 0)]
        if energy == 0 or len(window) < PIECE:
            continue
        dots = np.correlate(window, piece, mode="valid")
        power = np.convolve(window * window, np.ones(PIECE), mode="valid")
        scores.append(float(np.max(dots / (np.sqrt(power * energy) + 1e-9))))
        weights.append(energy)
    if not scores:
        return 0.0
    return float(np.dot(scores, weights) / np.sum(weights))
