"""Call recording: frames in by direction, a WAV or MP3 file out (reference §4.9, §4.10, §5.2).

Directions
----------
The media engine hands listeners frames tagged ``inbound`` (decoded from the far end's RTP) or
``outbound`` (what we send, once per clock tick). The reference's record ``direction`` is seen
from the call leg's party:

* ``speak``  = what the party **speaks** = audio FROM the far end = ``inbound`` frames;
* ``listen`` = what the party **hears**  = audio TO the far end   = ``outbound`` frames;
* ``both``   = both, mixed into one channel, or one channel each with ``stereo=True``.

Stereo layout: **left = speak (inbound, the far end), right = listen (outbound, what we play)**,
the same convention as FreeSWITCH's stereo recordings (read leg left, write leg right). A stereo
recording of a single direction keeps that layout and leaves the other channel silent, so a
consumer can always rely on "left is the caller".

Time alignment
--------------
The file's timeline is the media clock: one 20 ms slot per tick. ``outbound`` frames arrive
exactly once per tick and *are* the clock. ``inbound`` frames arrive when packets do (jitter,
bursts, loss, any packet size), so they are placed into slots by arrival: a frame that arrives
after tick ``t`` belongs to slot ``t``, and consecutive packets are laid end to end from there.
Slots are written only ``jitter_frames`` ticks after they were opened, which gives late packets
that long to land in the slot they belong to; a slot whose inbound audio never arrived is
silence (a lost packet is a gap of silence, never a time shift). When inbound falls behind
the clock by more than the jitter allowance (the far end paused sending, e.g. silence
suppression, or packets were lost), it is re-anchored at "now". When inbound runs ahead of the
clock because no outbound frames are coming (the engine skips outbound frames while it sends
RFC 4733 DTMF packets, or a test feeds only inbound), inbound drives the clock and the outbound
side of those slots is silence. So mono ``both`` mixes the two directions sample-aligned by
tick and stereo keeps them in separate channels on the same timeline.

Memory stays bounded: only ``2 * jitter_frames + 4`` slots are buffered; everything older is
on disk.

Files
-----
WAV is written incrementally by hand (PCM 16-bit, 8 kHz). The RIFF header carries the sizes,
and those are rewritten every second, so a process crash leaves a file that any reader opens,
missing at most the last second in its header (:func:`repair_wav` restores that too from the
file size). MP3 goes through soundfile: the bundled libsndfile (>= 1.1) encodes MPEG layer III
incrementally with LAME and writes a LAME/Xing header at the end with the encoder delay and
padding, so libsndfile/mpg123 decode exactly the samples written. A crash before ``finish``
leaves a stream of complete MP3 frames that still decodes (decoders warn about the missing
header). Decoders that ignore the gapless header return up to one MP3 frame (576 samples =
72 ms at 8 kHz) of extra padding plus the encoder delay.

Everything here is synchronous and cheap per frame (a few NumPy row copies and a buffered
``write``), meant to be called from the media listener on the event loop.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import numpy.typing as npt

from callplane.media.sources import FRAME_SAMPLES, SAMPLE_RATE, Frame, Source, tone

RecordFormat = Literal["wav", "mp3"]
RecordDirection = Literal["speak", "listen", "both"]
PauseBehavior = Literal["skip", "silence"]
FrameDirection = Literal["inbound", "outbound", "speak"]
StopReason = Literal["no_input", "end_silence", "max_length"]

FORMATS: tuple[str, ...] = ("wav", "mp3")
DIRECTIONS: tuple[str, ...] = ("speak", "listen", "both")

#: Beep played before a recording when ``beep: true`` (reference §5.2).
BEEP_FREQUENCY = 1000.0
BEEP_SECONDS = 0.25

_MODE_RECORD = 0
_MODE_SILENCE = 1
_MODE_SKIP = 2

_REALIGN_PACKETS = 25  # inbound packets (~0.5 s) a stream must stay late before realigning
_NO_LAG = 1 << 62
_HEADER_UPDATE_TICKS = 50  # rewrite the WAV sizes once a second of audio
_MP3_BATCH_TICKS = 50  # hand LAME one second at a time: per-call overhead dominates otherwise
_WAV_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")
_WAV_HEADER_SIZE = _WAV_HEADER.size  # 44


class RecorderError(RuntimeError):
    """The recording file cannot be written (or was already finished)."""


@dataclass(frozen=True, slots=True)
class RecordingResult:
    """What the ``finished`` webhook needs: ``duration`` in seconds (exact: samples written /
    8000), ``size`` in bytes on disk."""

    path: Path
    duration: float
    size: int
    format: RecordFormat
    channels: int
    samples: int  # per channel


def beep(seconds: float = BEEP_SECONDS) -> Source:
    """The record beep: a 1000 Hz tone (``seconds`` long) played to the party before recording."""
    return tone(BEEP_FREQUENCY, seconds, level_dbfs=-10.0)


# ---------------------------------------------------------------------------------------------
# Writers


class _WavWriter:
    """Incremental 16-bit PCM WAV with periodically refreshed sizes (crash-safe header)."""

    def __init__(self, path: Path, channels: int) -> None:
        self._f: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._channels = channels
        self._frames = 0  # sample frames (one sample per channel)
        self._since_header = 0
        self._f.write(_wav_header(channels, 0))

    def write(self, block: npt.NDArray[np.int16]) -> None:
        # Little-endian int16 interleaved is exactly the WAV data layout; the buffered file
        # object coalesces the 320-640 byte writes.
        self._f.write(np.ascontiguousarray(block, dtype="<i2").tobytes())
        self._frames += block.shape[0]
        self._since_header += 1
        if self._since_header >= _HEADER_UPDATE_TICKS:
            self._since_header = 0
            self._update_header()

    def _update_header(self) -> None:
        pos = self._f.tell()
        self._f.seek(0)
        self._f.write(_wav_header(self._channels, self._frames * self._channels * 2))
        self._f.seek(pos)
        self._f.flush()

    def close(self) -> None:
        self._update_header()
        self._f.close()


class _Mp3Writer:
    """MP3 through soundfile/libsndfile (LAME), fed one second at a time."""

    def __init__(self, path: Path, channels: int) -> None:
        import soundfile  # optional dependency, needed only for MP3

        try:
            self._sf: Any = soundfile.SoundFile(
                str(path),
                "w",
                samplerate=SAMPLE_RATE,
                channels=channels,
                format="MP3",
                subtype="MPEG_LAYER_III",
            )
        except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
            raise RecorderError(f"MP3 encoding unavailable in this libsndfile: {exc}") from exc
        self._pending: list[npt.NDArray[np.int16]] = []

    def write(self, block: npt.NDArray[np.int16]) -> None:
        self._pending.append(block.copy())
        if len(self._pending) >= _MP3_BATCH_TICKS:
            self._drain()

    def _drain(self) -> None:
        if self._pending:
            # Written as float32 (int16 / 32768 is exact): this libsndfile build's MP3
            # encoder corrupts some int16 stereo writes (clipping, channel bleed), floats
            # go through a different conversion path that is correct.
            block = np.concatenate(self._pending).astype(np.float32) * np.float32(1 / 32768)
            self._sf.write(block)
            self._pending.clear()

    def close(self) -> None:
        self._drain()
        self._sf.close()


def _wav_header(channels: int, data_bytes: int) -> bytes:
    block_align = channels * 2
    return _WAV_HEADER.pack(
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        channels,
        SAMPLE_RATE,
        SAMPLE_RATE * block_align,
        block_align,
        16,
        b"data",
        data_bytes,
    )


def repair_wav(path: str | Path) -> int:
    """Fix the sizes in a WAV written by :class:`Recorder` that was not finished (crash).

    Returns the number of sample frames in the repaired file. Only for this module's fixed
    44-byte header layout.
    """
    p = Path(path)
    with open(p, "r+b") as f:
        head = f.read(_WAV_HEADER_SIZE)
        if len(head) < _WAV_HEADER_SIZE or head[:4] != b"RIFF" or head[36:40] != b"data":
            raise RecorderError(f"{p} is not a callplane WAV recording")
        channels: int = struct.unpack_from("<H", head, 22)[0]
        size = os.fstat(f.fileno()).st_size
        block_align = channels * 2
        data = (size - _WAV_HEADER_SIZE) // block_align * block_align
        f.truncate(_WAV_HEADER_SIZE + data)  # drop a torn half sample frame
        f.seek(0)
        f.write(_wav_header(channels, data))
    return data // block_align


# ---------------------------------------------------------------------------------------------
# The recorder


class Recorder:
    """Record one call leg to ``path``. Feed it every media frame: ``feed`` has the
    :data:`callplane.media.engine.FrameListener` signature, so ``session.add_listener(rec.feed)``
    works as is. Call :meth:`finish` (or :meth:`abort`) exactly once at the end.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        format: RecordFormat = "wav",
        stereo: bool = False,
        direction: RecordDirection = "speak",
        jitter_frames: int = 3,
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"unsupported recording format {format!r}; supported: wav, mp3")
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of listen, speak, both; got {direction!r}")
        if jitter_frames < 0:
            raise ValueError("jitter_frames must be >= 0")
        self.path = Path(path)
        self.format: RecordFormat = format
        self.stereo = stereo
        self.direction: RecordDirection = direction
        self.channels = 2 if stereo else 1
        self._keep_in = direction in ("speak", "both")
        self._keep_out = direction in ("listen", "both")
        self._writer: _WavWriter | _Mp3Writer = (
            _WavWriter(self.path, self.channels)
            if format == "wav"
            else _Mp3Writer(self.path, self.channels)
        )
        self._jitter = jitter_frames
        n = 2 * jitter_frames + 4  # slots [flushed, clock + jitter] always fit
        self._ring_size = n
        self._out = np.zeros((n, FRAME_SAMPLES), dtype=np.int16)
        self._in = np.zeros((n, FRAME_SAMPLES), dtype=np.int16)
        # Audio played into the leg's speak side (`play` direction speak/both), per tick slot;
        # mixed into the speak channel when the slot is written.
        self._spoken = np.zeros((n, FRAME_SAMPLES), dtype=np.int16)
        self._any_spoken = np.zeros(n, dtype=bool)
        self._modes = np.zeros(n, dtype=np.int8)
        self._mode = _MODE_RECORD
        self._clock = 0  # slots opened by the clock (ticks seen)
        self._flushed = 0  # slots written (or skipped) to the file
        self._in_pos = 0  # timeline sample index where the next inbound sample goes
        self._heard_in = False  # no inbound packet placed yet
        self._in_end = 0  # end of the furthest inbound sample placed
        self._in_since_tick = 0  # inbound frames since the last outbound frame
        self._lag_min = _NO_LAG  # smallest lateness (samples) over the current window
        self._lag_count = 0
        self._samples = 0  # sample frames written to the file
        self._stereo_block = np.zeros((FRAME_SAMPLES, 2), dtype=np.int16)
        self._closed = False
        self.paused = False
        self.pause_behavior: PauseBehavior | None = None

    # -- control ---------------------------------------------------------------------------

    def pause(self, behavior: PauseBehavior = "skip") -> None:
        """From the next tick on: ``skip`` drops the audio, ``silence`` writes silence."""
        if behavior not in ("skip", "silence"):
            raise ValueError(f"pause behavior must be skip or silence, got {behavior!r}")
        self.paused = True
        self.pause_behavior = behavior
        self._mode = _MODE_SKIP if behavior == "skip" else _MODE_SILENCE

    def resume(self) -> None:
        self.paused = False
        self.pause_behavior = None
        self._mode = _MODE_RECORD

    @property
    def duration(self) -> float:
        """Seconds written to the file so far (excludes the few slots still buffered)."""
        return self._samples / SAMPLE_RATE

    @property
    def closed(self) -> bool:
        return self._closed

    # -- media ------------------------------------------------------------------------------

    def feed(self, frame: Frame, direction: FrameDirection) -> None:
        """One frame from the media engine. ``outbound`` frames must be 160 samples (one tick);
        ``inbound`` frames may be any length (packet size)."""
        if self._closed:
            return  # a listener not yet removed after finish(): ignore, never raise
        if direction == "outbound":
            self._tick(frame)
        elif direction == "speak":
            self._speak(frame)
        else:
            self._inbound(frame)

    def _speak(self, frame: Frame) -> None:
        """Played into the speak side this tick: belongs to the slot the tick just opened."""
        if not self._keep_in or self._clock == 0:
            return
        idx = (self._clock - 1) % self._ring_size
        self._spoken[idx] = frame
        self._any_spoken[idx] = True

    def _tick(self, frame: Frame | None) -> None:
        idx = self._clock % self._ring_size
        if frame is not None and self._keep_out:
            self._out[idx] = frame
        self._modes[idx] = self._mode
        self._clock += 1
        self._in_since_tick = 0
        # Slot t stays open for late inbound audio until the clock is jitter+1 ticks past it.
        self._flush_until(self._clock - self._jitter - 1)

    def _inbound(self, frame: Frame) -> None:
        self._in_since_tick += 1
        samples = np.asarray(frame, dtype=np.int16).reshape(-1)
        n = samples.size
        if n == 0:
            return
        nominal = max(self._clock - 1, 0) * FRAME_SAMPLES
        pos = self._in_pos
        if not self._heard_in:
            # The far end's first packet belongs in the tick it arrived in, not at position 0:
            # laid at 0, a stream that started a few ticks in would look late and be realigned
            # half a second later, cutting a hole into the audio.
            self._heard_in = True
            pos = nominal
        if pos < nominal - self._jitter * FRAME_SAMPLES:
            # Further behind than any jitter explains: a gap in sending or lost packets. The
            # missing stretch stays silence and this packet starts "now".
            pos = nominal
        pos = max(pos, self._flushed * FRAME_SAMPLES)
        # Without RTP timestamps one lost packet looks like a late one, so the stream closes
        # up and runs up to jitter_frames late. A jitter-only stream has on-time packets now
        # and then; a stream that stayed late for a whole window is realigned to the clock.
        lag = nominal - pos
        self._lag_min = min(self._lag_min, lag)
        self._lag_count += 1
        if self._lag_count >= _REALIGN_PACKETS:
            if self._lag_min > 0:
                pos += self._lag_min
            self._lag_min = _NO_LAG
            self._lag_count = 0
        limit = (self._clock + self._jitter + 1) * FRAME_SAMPLES
        if pos + n > limit:
            if self._in_since_tick >= 2:
                # Inbound keeps coming but the clock does not tick (no outbound frames): let
                # inbound drive the timeline, with silence on the outbound side.
                while pos + n > (self._clock + self._jitter + 1) * FRAME_SAMPLES:
                    self._tick(None)
                    self._in_since_tick = 2
            else:
                # The far end runs ahead of our clock (clock drift, or a burst right after a
                # re-anchor): drop what does not fit rather than shift the timeline.
                n = max(0, limit - pos)
                samples = samples[:n]
        if self._keep_in and n:
            self._place(samples, pos)
        self._in_pos = pos + n
        self._in_end = max(self._in_end, self._in_pos)

    def _place(self, samples: Frame, pos: int) -> None:
        done = 0
        n = samples.size
        while done < n:
            slot, off = divmod(pos + done, FRAME_SAMPLES)
            take = min(FRAME_SAMPLES - off, n - done)
            self._in[slot % self._ring_size, off : off + take] = samples[done : done + take]
            done += take

    def _flush_until(self, end_slot: int, partial_samples: int = FRAME_SAMPLES) -> None:
        """Write slots [flushed, end_slot); the last one only ``partial_samples`` long."""
        while self._flushed < end_slot:
            t = self._flushed
            idx = t % self._ring_size
            mode = int(self._modes[idx])
            length = partial_samples if t == end_slot - 1 else FRAME_SAMPLES
            if mode != _MODE_SKIP:
                if self._any_spoken[idx]:
                    both = self._in[idx].astype(np.int32) + self._spoken[idx]
                    self._in[idx] = np.clip(both, -32768, 32767)
                self._write_slot(idx, mode == _MODE_SILENCE, length)
            self._any_spoken[idx] = False
            self._in[idx] = 0
            self._out[idx] = 0
            self._modes[idx] = _MODE_RECORD
            self._flushed = t + 1

    def _write_slot(self, idx: int, silent: bool, length: int) -> None:
        if self.stereo:
            block = self._stereo_block
            if silent:
                block[:] = 0
            else:
                block[:, 0] = self._in[idx]  # left = speak (far end)
                block[:, 1] = self._out[idx]  # right = listen (what we send)
            out = block[:length]
        elif silent:
            out = np.zeros(length, dtype=np.int16)
        elif self._keep_in and self._keep_out:
            mixed = self._in[idx].astype(np.int32) + self._out[idx]
            out = np.clip(mixed, -32768, 32767).astype(np.int16)[:length]
        elif self._keep_in:
            out = self._in[idx, :length]
        else:
            out = self._out[idx, :length]
        self._writer.write(out)
        self._samples += length

    # -- end --------------------------------------------------------------------------------

    def finish(self) -> RecordingResult:
        """Flush the buffered slots, close the file and report duration and size."""
        if self._closed:
            raise RecorderError("recording already finished")
        # Everything the clock opened, plus inbound audio placed beyond it (cut to the sample).
        end = max(self._clock * FRAME_SAMPLES, self._in_end if self._keep_in else 0)
        end_slot, rest = divmod(end, FRAME_SAMPLES)
        for t in range(self._clock, end_slot + (1 if rest else 0)):
            self._modes[t % self._ring_size] = self._mode  # slots the clock never reached
        if rest:
            self._flush_until(end_slot + 1, partial_samples=rest)
        else:
            self._flush_until(end_slot)
        self._closed = True
        self._writer.close()
        return RecordingResult(
            path=self.path,
            duration=self._samples / SAMPLE_RATE,
            size=self.path.stat().st_size,
            format=self.format,
            channels=self.channels,
            samples=self._samples,
        )

    def abort(self, delete: bool = True) -> None:
        """Stop without finishing normally (error path); ``delete`` removes the file."""
        if self._closed:
            return
        self._closed = True
        try:
            self._writer.close()
        finally:
            if delete:
                self.path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Voice activity and stop conditions


def webrtc_mode(sensitivity: float) -> int:
    """Map the reference's ``input_sensitivity`` (0-100, default 44; higher = hears quieter
    speech) to webrtcvad's aggressiveness (0 = flags the most as speech .. 3 = the least)."""
    s = min(max(float(sensitivity), 0.0), 100.0)
    return 3 - min(int(s // 25), 3)


class VoiceActivityDetector:
    """Per-frame speech / non-speech for 8 kHz int16 frames: webrtcvad behind an energy gate.

    webrtcvad alone calls faint line noise speech at its permissive modes, so frames quieter
    than a sensitivity-dependent floor (-30 dBFS at sensitivity 0 down to -60 dBFS at 100;
    -43 dBFS at the default 44) are never speech.
    """

    def __init__(self, sensitivity: float = 44.0) -> None:
        import webrtcvad  # optional dependency; ~2 µs a frame

        s = min(max(float(sensitivity), 0.0), 100.0)
        self._vad = webrtcvad.Vad(webrtc_mode(s))
        floor_dbfs = -30.0 - 0.3 * s
        # Compare mean squares (no sqrt per frame): (10^(dB/20) * 32768)^2.
        self._floor_ms = (10 ** (floor_dbfs / 20) * 32768.0) ** 2

    def is_speech(self, frame: Frame) -> bool:
        x = np.asarray(frame, dtype=np.int16).reshape(-1)
        if x.size == 0:
            return False
        f = x.astype(np.float64)
        if float(np.dot(f, f)) / x.size < self._floor_ms:
            return False
        if x.size != FRAME_SAMPLES:
            # webrtcvad takes 10/20/30 ms only: judge whole 20 ms pieces, any speech wins.
            whole = x.size // FRAME_SAMPLES * FRAME_SAMPLES
            return any(
                self._vad.is_speech(x[i : i + FRAME_SAMPLES].tobytes(), SAMPLE_RATE)
                for i in range(0, whole, FRAME_SAMPLES)
            )
        return bool(self._vad.is_speech(x.tobytes(), SAMPLE_RATE))


class RecordingTimers:
    """The record stop conditions of reference §5.2 as pure logic over 20 ms frames.

    Call :meth:`update` once per recorded tick with that tick's "is speech" verdict; it
    returns why the recording must stop, or None. Counting frames (not wall time) keeps it
    deterministic. A timeout of 0 disables that condition, as the reference's ranges allow:

    * ``initial_timeout``: no speech within that long -> ``no_input``;
    * ``end_silence_timeout``: after some speech, that much continuous silence ->
      ``end_silence``;
    * ``max_length``: total length reached -> ``max_length``.
    """

    def __init__(
        self,
        initial_timeout: float = 4.0,
        end_silence_timeout: float = 0.5,
        max_length: float = 0.0,
        frame_seconds: float = FRAME_SAMPLES / SAMPLE_RATE,
    ) -> None:
        for name, value in (
            ("initial_timeout", initial_timeout),
            ("end_silence_timeout", end_silence_timeout),
            ("max_length", max_length),
        ):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self._initial = _frames(initial_timeout, frame_seconds)
        self._end_silence = _frames(end_silence_timeout, frame_seconds)
        self._max = _frames(max_length, frame_seconds)
        self.frames = 0
        self.heard_speech = False
        self._silent_run = 0

    def update(self, is_speech: bool) -> StopReason | None:
        self.frames += 1
        if is_speech:
            self.heard_speech = True
            self._silent_run = 0
        else:
            self._silent_run += 1
        if self._max and self.frames >= self._max:
            return "max_length"
        if not self.heard_speech:
            if self._initial and self.frames >= self._initial:
                return "no_input"
        elif self._end_silence and self._silent_run >= self._end_silence:
            return "end_silence"
        return None


def _frames(seconds: float, frame_seconds: float) -> int:
    return round(seconds / frame_seconds) if seconds > 0 else 0
