"""TEMPORARY stub of the jitter buffer interface (replaced by the real one)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from callplane.media.sources import FRAME_SAMPLES, Frame


@dataclass
class JitterStats:
    pushed: int = 0
    played: int = 0
    concealed: int = 0
    late: int = 0
    duplicates: int = 0
    overflow_dropped: int = 0
    resyncs: int = 0
    max_delay_ms: float = 0.0
    mean_delay_ms: float = 0.0


class JitterBuffer:
    def __init__(self, *, target_frames: int = 1, max_frames: int = 10) -> None:
        self._target = target_frames
        self._cap = (max_frames + 2) * FRAME_SAMPLES
        self._ring = np.zeros(self._cap, dtype=np.int16)
        self._play: int | None = None
        self._end = 0
        self.stats = JitterStats()

    def push(self, seq: int, timestamp: int, samples: Frame) -> bool:
        n = samples.size
        if self._play is None:
            self._play = timestamp - self._target * FRAME_SAMPLES
            self._end = self._play
        off = (timestamp - self._play) & 0xFFFFFFFF
        if off >= self._cap - n:
            return False
        for k in range(n):
            self._ring[(timestamp + k) % self._cap] = samples[k]
        self._end = max(self._end, timestamp + n)
        self.stats.pushed += 1
        return True

    def pop_into(self, out: Frame) -> bool:
        if self._play is None:
            out.fill(0)
            return False
        idx = np.arange(self._play, self._play + FRAME_SAMPLES) % self._cap
        out[:] = self._ring[idx]
        self._ring[idx] = 0
        had = self._play < self._end
        self._play += FRAME_SAMPLES
        return had

    def pop(self) -> Frame:
        out = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self.pop_into(out)
        return out

    def reset(self) -> None:
        self._play = None

    @property
    def delay_ms(self) -> float:
        return 0.0 if self._play is None else max(0, self._end - self._play) / 8.0
