"""Sans-IO RTP jitter buffer: decoded packets in, one 160-sample frame out per media tick.

Packets are placed by RTP timestamp (32-bit wraparound-safe, via :func:`rtp.ts_delta`) into one
preallocated ring of ``max_frames * 160`` int16 samples that always starts at the playout point;
a parallel byte map says which samples hold received audio. Any packet size is re-cut into
160-sample frames simply because output is cut from the ring at frame boundaries of the playout
point, whatever the packets' boundaries were. Nothing here reads a clock: the caller's tick *is*
the clock (one :meth:`JitterBuffer.pop_into` per 20 ms), pushes happen between ticks.

Delay policy, in short:

* the first packet of a stream plays ``target_frames`` ticks after the next pop;
* a late packet while nothing is buffered ahead (an underrun) means the network delay grew: the
  buffer re-anchors so that packet plays next; any other late packet loses the part already
  played, and the playout point then holds still for as many frames as it was late (silence),
  so the delay grows to meet the jitter;
* a timestamp more than a second outside the window (a stream restart, a jump) re-anchors: the new
  timeline starts right after the audio already buffered;
* the depth never exceeds ``max_frames``: a packet beyond it is a jump (more than a second away:
  re-anchor, counted as a resync) or a burst / fast sender (the oldest audio is dropped);
* when the depth stayed more than one frame above target for a whole second, one frame is
  skipped, so bursts and fast sender clocks never leave a lasting extra delay.

A **fixed** delay (:meth:`JitterBuffer.set_fixed`, fax mode) keeps the timeline instead of the
lowest delay: the buffer holds ``target_frames`` of audio, never skips a frame to shrink and never
holds the playout point for a straggler (its late part is lost, the stream keeps its timing); an
underrun re-anchors at the target delay. Modems resynchronise on a gap but not on a timeline that
slides under them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .rtp import TS_MOD, seq_delta, ts_delta
from .sources import FRAME_SAMPLES, SAMPLE_RATE, Frame

# A timestamp further than this from the playout window is a new stream or a jump, not jitter.
JUMP_SAMPLES = SAMPLE_RATE  # 1 s
# An older sequence number within this distance of the newest one is a straggler of the same
# stream (RFC 3550 A.1's MAX_MISORDER), so a huge backward timestamp on it is not a restart.
MAX_MISORDER = 100
# The longest packet expected (120 ms): how far apart in timestamp two sequence numbers can be.
MAX_PACKET_SAMPLES = 960
# Pops over which the minimum depth is watched before shrinking the delay by one frame (1 s).
SHRINK_WINDOW = 50

_TS_MASK = TS_MOD - 1
# _write outcomes, OR-ed over the (at most two) ring segments a packet lands in.
_NEW = 1
_DUPLICATE = 2
_SAMPLES_PER_MS = SAMPLE_RATE / 1000


@dataclass(slots=True)
class JitterStats:
    """Counters since the buffer was created (``reset`` does not clear them).

    ``overflow_dropped`` is in samples; every other count is packets or frames as named.
    """

    pushed: int = 0  # push() calls with samples
    played: int = 0  # frames popped holding received audio
    concealed: int = 0  # silent frames popped after the stream started playing (loss/underrun)
    late: int = 0  # packets dropped because their audio had wholly been played already
    late_trimmed: int = 0  # packets whose head had been played; the rest was kept
    duplicates: int = 0  # packets wholly or partly already in the buffer (the copy is dropped)
    overflow_dropped: int = 0  # samples of audio dropped to keep the depth within max_frames
    shrunk: int = 0  # frames skipped because the depth stayed above target for a second
    adapted: int = 0  # re-anchors on a late packet during an underrun (delay grew)
    held: int = 0  # silent frames inserted to grow the delay after a late loss (also concealed)
    resyncs: int = 0  # re-anchors on a timestamp jump or a stream restart
    max_delay_ms: float = 0.0  # largest depth seen after a pop
    mean_delay_ms: float = 0.0  # mean depth after pops, over pops since the stream started
    delay_pops: int = 0  # pops mean_delay_ms is averaged over


class JitterBuffer:
    """Reorders, re-cuts and paces one inbound stream; see the module docstring for the policy."""

    __slots__ = (
        "_active",
        "_anchored",
        "_cap",
        "_end",
        "_filled",
        "_filled_frames",
        "_filled_np",
        "_fixed",
        "_frame",
        "_hold",
        "_max_frames",
        "_max_seq",
        "_play_ts",
        "_ring",
        "_ring_frames",
        "_shrink_above",
        "_target",
        "_win_min",
        "_win_n",
        "stats",
    )

    def __init__(self, *, target_frames: int = 1, max_frames: int = 10) -> None:
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        if not 0 <= target_frames < max_frames:
            raise ValueError(f"target_frames must be in 0..max_frames-1, got {target_frames}")
        self._target = target_frames
        self._max_frames = max_frames
        self._cap = cap = max_frames * FRAME_SAMPLES
        self._ring: Frame = np.zeros(cap, dtype=np.int16)
        # A bytearray so that "is anything / everything here filled" is a C-speed find(), with a
        # numpy view on the same memory for slice fills.
        self._filled = bytearray(cap)
        self._filled_np = filled_view = np.frombuffer(self._filled, dtype=np.uint8)
        # Per-frame views made once, so pop_into allocates nothing (not even a slice object).
        self._ring_frames = [
            self._ring[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES] for i in range(max_frames)
        ]
        self._filled_frames = [
            filled_view[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES] for i in range(max_frames)
        ]
        # Pre-pop depth must exceed this all window long before a frame is skipped.
        self._shrink_above = (target_frames + 1) * FRAME_SAMPLES
        self.stats = JitterStats()
        self._anchored = False
        self._active = False
        self._frame = 0  # ring frame index of the playout point
        self._play_ts = 0  # RTP timestamp of the playout point
        self._end = 0  # offset past the furthest received sample ahead of the playout point
        self._hold = 0  # pops left that play silence without advancing (the delay is growing)
        self._max_seq = 0
        self._win_min = cap
        self._win_n = 0
        self._fixed = False

    # -- public API ------------------------------------------------------------------------

    @property
    def delay_ms(self) -> float:
        """Audio buffered ahead of the playout point now (up to the furthest received sample)."""
        return self._end / _SAMPLES_PER_MS

    @property
    def playout_timestamp(self) -> int | None:
        """RTP timestamp of the next sample pop_into will write; None before a stream anchors."""
        return self._play_ts if self._anchored else None

    @property
    def target_frames(self) -> int:
        return self._target

    @property
    def max_frames(self) -> int:
        return self._max_frames

    @property
    def fixed(self) -> bool:
        return self._fixed

    def set_fixed(self, target_frames: int | None) -> None:
        """Fix the delay at ``target_frames`` (fax mode), or go back to the adaptive policy with
        ``None`` (the target the buffer was made with is not restored: pass it to keep it).
        Growing the delay now plays silence once, while the playout point waits."""
        if target_frames is None:
            self._fixed = False
            return
        if not 0 <= target_frames < self._max_frames:
            raise ValueError(f"target_frames must be in 0..max_frames-1, got {target_frames}")
        self._fixed = True
        self._target = target_frames
        self._shrink_above = (target_frames + 1) * FRAME_SAMPLES
        if self._anchored:
            buffered = -(-self._end // FRAME_SAMPLES)
            self._hold = max(self._hold, target_frames - buffered)

    def reset(self) -> None:
        """A new stream (SSRC change): drop what is buffered; the next push re-anchors."""
        self._clear()
        self._anchored = False
        self._active = False

    def push(self, seq: int, timestamp: int, samples: Frame) -> bool:
        """A decoded packet (RTP seq, RTP timestamp, int16 samples of any length). False when it
        was dropped (duplicate, too late, ...)."""
        n = len(samples)
        if n == 0:
            return False
        stats = self.stats
        stats.pushed += 1
        cap = self._cap
        if not self._anchored:
            offset = self._anchor(seq, timestamp)
        else:
            offset = ts_delta(timestamp, self._play_ts)
            newer = seq_delta(seq, self._max_seq)
            if offset < -JUMP_SAMPLES or offset > cap + JUMP_SAMPLES:
                if (
                    offset < 0
                    and -MAX_MISORDER <= newer <= 0
                    and -offset <= (1 - newer) * MAX_PACKET_SAMPLES + cap
                ):
                    # A straggler delayed by seconds, not a restart: its sequence number is a
                    # little behind the newest and its timestamp as far behind as that explains.
                    stats.late += 1
                    return False
                # A new timeline: it starts where the audio buffered from the old one ends (or
                # after the target delay), so a restart neither cuts nor overlaps anything.
                stats.resyncs += 1
                self._max_seq = seq
                offset = max(self._end, self._target * FRAME_SAMPLES)
                self._play_ts = (timestamp - offset) & _TS_MASK
            else:
                if newer > 0:
                    self._max_seq = seq
                if offset < 0:
                    # Late. In an underrun (nothing buffered ahead) a packet newer than all
                    # before it is the stream itself running later than before: re-anchor so it
                    # plays whole, next. Otherwise it is a straggler (or an old copy): what was
                    # already played is lost, and the delay grows so the next one is in time.
                    if self._end == 0 and newer > 0 and self._fixed:
                        # The same re-anchor, at the fixed delay rather than at none.
                        stats.adapted += 1
                        offset = self._target * FRAME_SAMPLES
                        self._play_ts = (timestamp - offset) & _TS_MASK
                    elif self._end == 0 and newer > 0:
                        if -offset > cap:
                            stats.resyncs += 1
                        else:
                            stats.adapted += 1
                        # Nothing is buffered, so the ring is empty: moving the playout point
                        # anywhere is just a new timestamp for it.
                        self._play_ts = timestamp
                        offset = 0
                    else:
                        if not self._fixed:
                            self._grow(-offset)
                        if offset + n <= 0:
                            stats.late += 1
                            return False
        stop = offset + n
        if offset < 0:
            stats.late_trimmed += 1
            samples = samples[-offset:]
            offset = 0
        if stop > cap:
            # A burst after a stall or a fast sender: make room by playing ahead.
            skip = -(-(stop - cap) // FRAME_SAMPLES)
            stats.overflow_dropped += self._skip(skip)
            offset -= skip * FRAME_SAMPLES
            stop -= skip * FRAME_SAMPLES
            if offset < 0:
                stats.overflow_dropped += -offset
                samples = samples[-offset:]
                offset = 0
        start = self._frame * FRAME_SAMPLES + offset
        if start >= cap:
            start -= cap
        m = stop - offset
        if start + m <= cap:
            kind = self._write(start, start + m, samples)
        else:
            first = cap - start
            kind = self._write(start, cap, samples[:first]) | self._write(
                0, m - first, samples[first:]
            )
        if kind != _NEW:
            stats.duplicates += 1
            if kind == _DUPLICATE:
                return False
        if stop > self._end:
            self._end = stop
        return True

    def pop_into(self, out: Frame) -> bool:
        """Write the next 160 samples into `out` (silence where nothing arrived). True when the
        frame held any received audio. Must not allocate (hot path: once per session per tick)."""
        if not self._anchored:
            out.fill(0)
            return False
        if self._hold:
            # Growing the delay: a silent frame, and the playout point stays where it is.
            self._hold -= 1
            out.fill(0)
            if self._active:
                self.stats.concealed += 1
                self.stats.held += 1
            return False
        end = self._end
        if end < self._win_min:
            self._win_min = end
        self._win_n += 1
        if self._win_n >= SHRINK_WINDOW:
            if self._win_min > self._shrink_above and not self._fixed:
                # The whole second kept more than a frame of slack: that frame is pure delay.
                self._skip(1)
                self.stats.shrunk += 1
                end = self._end
            self._win_min = self._cap
            self._win_n = 0
        i = self._frame
        start = i * FRAME_SAMPLES
        stats = self.stats
        if self._filled.find(1, start, start + FRAME_SAMPLES) >= 0:
            frame = self._ring_frames[i]
            np.copyto(out, frame)
            frame.fill(0)
            self._filled_frames[i].fill(0)
            stats.played += 1
            self._active = True
            has_audio = True
        else:
            out.fill(0)
            has_audio = False
            if self._active:
                stats.concealed += 1
        self._frame = i + 1 if i + 1 < self._max_frames else 0
        self._play_ts = (self._play_ts + FRAME_SAMPLES) & _TS_MASK
        end = end - FRAME_SAMPLES if end > FRAME_SAMPLES else 0
        self._end = end
        if self._active:
            delay = end / _SAMPLES_PER_MS
            n = stats.delay_pops + 1
            stats.delay_pops = n
            stats.mean_delay_ms += (delay - stats.mean_delay_ms) / n
            if delay > stats.max_delay_ms:
                stats.max_delay_ms = delay
        return has_audio

    def pop(self) -> Frame:
        """Like :meth:`pop_into`, into a fresh 160-sample array."""
        out: Frame = np.empty(FRAME_SAMPLES, dtype=np.int16)
        self.pop_into(out)
        return out

    # -- internals ---------------------------------------------------------------------------

    def _anchor(self, seq: int, timestamp: int) -> int:
        """Start a stream at this packet: it plays ``target_frames`` ticks after the next pop.
        Returns its offset from the new playout point."""
        self._clear()
        self._anchored = True
        self._max_seq = seq
        offset = self._target * FRAME_SAMPLES
        self._play_ts = (timestamp - offset) & _TS_MASK
        return offset

    def _clear(self) -> None:
        self._ring.fill(0)
        self._filled_np.fill(0)
        self._frame = 0
        self._end = 0
        self._hold = 0
        self._win_min = self._cap
        self._win_n = 0

    def _grow(self, lateness: int) -> None:
        """Hold the playout point for enough pops that audio this late would have been in time,
        within max_frames."""
        frames = -(-lateness // FRAME_SAMPLES)
        room = self._max_frames - 1 - -(-self._end // FRAME_SAMPLES)
        hold = min(frames, room)
        if hold > self._hold:
            self._hold = hold

    def _skip(self, frames: int) -> int:
        """Advance the playout point by ``frames`` without playing them; returns how many
        received samples that dropped."""
        dropped = 0
        nframes = self._max_frames
        i = self._frame
        for _ in range(min(frames, nframes)):
            filled = self._filled_frames[i]
            count = int(np.count_nonzero(filled))
            if count:
                dropped += count
                filled.fill(0)
                self._ring_frames[i].fill(0)
            i = i + 1 if i + 1 < nframes else 0
        self._frame = (self._frame + frames) % nframes
        self._play_ts = (self._play_ts + frames * FRAME_SAMPLES) & _TS_MASK
        self._end = max(0, self._end - frames * FRAME_SAMPLES)
        return dropped

    def _write(self, a: int, b: int, samples: Frame) -> int:
        """Copy ``samples`` into ring[a:b] where nothing was received yet. Returns _NEW,
        _DUPLICATE (all of it was there already) or, for a partial overlap, their union."""
        filled = self._filled
        if filled.find(1, a, b) < 0:
            self._ring[a:b] = samples
            self._filled_np[a:b] = 1
            return _NEW
        if filled.find(0, a, b) < 0:
            return _DUPLICATE
        view = self._filled_np[a:b]
        np.copyto(self._ring[a:b], samples, where=view == 0)
        view.fill(1)
        return _NEW | _DUPLICATE
