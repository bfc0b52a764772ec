"""Benchmark the sans-IO DSP detectors: µs per 20 ms frame, alone and as 500 concurrent calls.

    .venv/bin/python bench/bench_dsp.py            # default: 500 calls, 5 s of audio each
    .venv/bin/python bench/bench_dsp.py -n 200 -d 10

Audio per call: a mix of speech-like noise bursts, silence and DTMF, so the detectors' early exits
(silence) and full paths (loud audio, digit candidates) are both exercised. Figures:

* single: one detector fed frame by frame — µs per frame (budget: 20 000 µs per frame per call);
* N calls, one instance each: total µs per 20 ms tick for N instances, and per call;
* N calls, DtmfBatchDetector: the same DTMF work as one (2N x 80) @ (80 x 16) product per tick.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from callplane.media.dsp import (
    AmdDetector,
    BeepDetector,
    DtmfBatchDetector,
    DtmfDetector,
    FaxToneDetector,
    Vad,
    dtmf_digits,
)

FRAME = 160


def make_audio(seconds: float, seed: int) -> np.ndarray:
    """(frames, 160) int16: alternating 'speech' (band-limited noise with a 120 Hz buzz), silence
    and a few DTMF digits."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 8000)
    t = np.arange(n) / 8000
    buzz = np.sign(np.sin(2 * np.pi * (110 + 20 * rng.random()) * t)) * 0.3
    noise = np.convolve(rng.standard_normal(n), np.ones(4) / 4, mode="same")
    speech = (buzz + noise) * 3000 * (np.sin(2 * np.pi * 3 * t) > -0.2)
    gate = (np.floor(t / 1.5) % 3) != 2  # 1 s talk, .5 s silence pattern-ish
    x = speech * gate
    digits = dtmf_digits("12#", level_dbov=-15).astype(np.float64)
    pos = int(rng.integers(0, max(1, n - digits.size)))
    x[pos : pos + digits.size] = digits[: n - pos]
    x = np.concatenate([x, np.zeros((-x.size) % FRAME)])
    return np.clip(x, -32768, 32767).astype(np.int16).reshape(-1, FRAME)


def bench_single(name: str, make: Callable[[], Any], frames: np.ndarray) -> float:
    det = make()
    t0 = time.perf_counter()
    for k, f in enumerate(frames):
        det.feed(f, k * 0.02)
    us = (time.perf_counter() - t0) / len(frames) * 1e6
    print(f"  {name:<22} {us:8.1f} µs/frame")
    return us


def bench_many(name: str, make: Callable[[], Any], audio: list[np.ndarray]) -> float:
    dets = [make() for _ in audio]
    n_frames = min(a.shape[0] for a in audio)
    t0 = time.perf_counter()
    for k in range(n_frames):
        tk = k * 0.02
        for d, a in zip(dets, audio, strict=True):
            d.feed(a[k], tk)
    per_tick = (time.perf_counter() - t0) / n_frames * 1e6
    n = len(audio)
    print(
        f"  {name:<22} {per_tick / 1000:8.2f} ms/tick for {n} calls"
        f"  ({per_tick / n:6.1f} µs/call-frame, {per_tick / 200:5.1f} % of one core)"
    )
    return per_tick


def bench_batch(audio: list[np.ndarray]) -> float:
    n = len(audio)
    n_frames = min(a.shape[0] for a in audio)
    stacked = np.stack([a[:n_frames] for a in audio], axis=1)  # (frames, n, 160)
    det = DtmfBatchDetector(n)
    t0 = time.perf_counter()
    for k in range(n_frames):
        det.feed(stacked[k], k * 0.02)
    per_tick = (time.perf_counter() - t0) / n_frames * 1e6
    print(
        f"  {'DtmfBatchDetector':<22} {per_tick / 1000:8.2f} ms/tick for {n} calls"
        f"  ({per_tick / n:6.1f} µs/call-frame, {per_tick / 200:5.1f} % of one core)"
    )
    return per_tick


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=500, help="concurrent calls")
    ap.add_argument("-d", type=float, default=5.0, help="seconds of audio per call")
    args = ap.parse_args()

    makers: dict[str, Callable[[], Any]] = {
        "DtmfDetector": DtmfDetector,
        "BeepDetector": BeepDetector,
        "FaxToneDetector": FaxToneDetector,
        "Vad": Vad,
        # never decides, so every frame takes the full path (VAD + beep analysis)
        "AmdDetector": lambda: AmdDetector(
            timeout=1e9, initial_timeout=1e9, end_silence_timeout=1e9
        ),
    }
    print("single detector (busy audio: speech-like, silence, DTMF):")
    one = make_audio(max(args.d, 20.0), 0)
    for name, make in makers.items():
        bench_single(name, make, one)
    silent = np.zeros((1000, FRAME), dtype=np.int16)
    print("single detector, silence:")
    for name, make in makers.items():
        bench_single(name, make, silent)

    audio = [make_audio(args.d, seed) for seed in range(args.n)]
    print(f"{args.n} concurrent calls, one instance each (20 ms tick = 20 000 µs):")
    for name, make in makers.items():
        bench_many(name, make, audio)
    print(f"{args.n} concurrent calls, batched DTMF:")
    bench_batch(audio)


if __name__ == "__main__":
    main()
