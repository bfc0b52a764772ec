"""Synthetic test audio for the DSP detector tests: flite speech, tones, noise, frame feeding."""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from callplane.media.sources import FRAME_SAMPLES, SAMPLE_RATE, resample

HELLO = "Hello?"
GREETING = (
    "Hi, you have reached the voicemail of John Smith. I am not available right now, "
    "please leave a message after the tone."
)
# About 30 s of running speech for talk-off tests (several sentences, digits spoken as words).
LONG_TEXT = (
    "Thank you for calling the service desk. Your call is important to us. "
    "Please say or enter your account number, followed by the pound key. "
    "For billing questions press one. For technical support press two. "
    "Our opening hours are Monday to Friday, nine in the morning until six in the evening. "
    "If you know the extension of the person you are trying to reach, you may dial it at any "
    "time. Seven, eight, nine, zero, four, five, six, one, two, three. "
    "The quick brown fox jumps over the lazy dog while the early bird catches the worm. "
    "She sells sea shells by the sea shore, and the shells she sells are surely sea shells. "
    "Peter Piper picked a peck of pickled peppers; how many pickled peppers did he pick? "
    "Please hold while we transfer your call to the next available agent."
)

needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="flite not installed")


@functools.cache
def _flite_cached(text: str, voice: str) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "x.wav"
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(out)], check=True)
        data, rate = soundfile.read(out, dtype="float64")
    if data.ndim > 1:
        data = data.mean(axis=1)
    x = resample(data * 32767.0, rate, SAMPLE_RATE) if rate != SAMPLE_RATE else data * 32767.0
    return np.asarray(x, dtype=np.float64).tobytes()


def flite(text: str, voice: str = "kal", level_dbov: float | None = -20.0) -> np.ndarray:
    """Speech from flite at 8 kHz as float samples, leading/trailing silence trimmed, and
    normalised to an active level of ``level_dbov`` (RMS over frames above -50 dBov)."""
    x = np.frombuffer(_flite_cached(text, voice), dtype=np.float64).copy()
    loud = np.flatnonzero(np.abs(x) > 200)
    x = x[loud[0] : loud[-1] + 1]
    if level_dbov is not None:
        frames = x[: x.size // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
        ms = (frames**2).mean(axis=1)
        active = ms[ms > 2 * 10 ** (-50 / 10) * 32767**2 / 2]
        rms = np.sqrt(active.mean())
        x *= 32767 / np.sqrt(2) * 10 ** (level_dbov / 20) / rms
    return x


def sine(freq: float, seconds: float, level_dbov: float = -15.0, phase: float = 0.0) -> np.ndarray:
    n = round(seconds * SAMPLE_RATE)
    return (
        32767
        * 10 ** (level_dbov / 20)
        * np.sin(2 * np.pi * freq * np.arange(n) / SAMPLE_RATE + phase)
    )


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SAMPLE_RATE))


def noise(n: int, level_dbov: float, seed: int = 1) -> np.ndarray:
    """White Gaussian noise whose RMS equals a sine of ``level_dbov``."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(n) * 32767 / np.sqrt(2) * 10 ** (level_dbov / 20)


def concat(*parts: np.ndarray) -> np.ndarray:
    return np.concatenate(parts)


def to_frames(x: np.ndarray) -> np.ndarray:
    """Pad to whole frames, round and clip to int16, shape (frames, 160)."""
    x = np.asarray(x, dtype=np.float64)
    x = np.concatenate([x, np.zeros((-x.size) % FRAME_SAMPLES)])
    return np.clip(np.round(x), -32768, 32767).astype(np.int16).reshape(-1, FRAME_SAMPLES)


def feed_all(detector: Any, x: np.ndarray, t0: float = 0.0, flush: bool = True) -> list[Any]:
    """Feed ``x`` frame by frame (t = t0 + k·20 ms) and collect all events (plus flush())."""
    out: list[Any] = []
    feed: Callable[[np.ndarray, float], Sequence[Any]] = detector.feed
    for k, frame in enumerate(to_frames(x)):
        out.extend(feed(frame, t0 + k * FRAME_SAMPLES / SAMPLE_RATE))
    if flush and hasattr(detector, "flush"):
        out.extend(detector.flush())
    return out
