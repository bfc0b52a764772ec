"""Call recording: one media tick in, one 20 ms slot of a WAV or MP3 file out (reference §4.9,
§4.10, §5.2).

Directions
----------
The media engine gives listeners one :class:`~callplane.media.engine.TickFrames` per 20 ms tick
(docs/architecture.md, "Media directions"). The reference's record ``direction`` is seen from
the call leg's party:

* ``speak``  = what the party **says** = the far end's audio (``inbound``) plus what
  speak-direction playbacks said on the leg (``speak``);
* ``listen`` = what the party **hears** = what the leg sent (``outbound``);
* ``both``   = both, mixed into one channel, or one channel each with ``stereo=True``.

Stereo layout: **left = speak, right = listen**, the same convention as FreeSWITCH's stereo
recordings (read leg left, write leg right). A stereo recording of a single direction keeps that
layout and leaves the other channel silent, so a consumer can always rely on "left is the caller".

Time
----
The file's timeline is the media clock: every tick writes exactly one 160-sample slot (silence
where the far end sent nothing: the engine's jitter buffer already put every received sample in
its tick), so a recording of N ticks lasts exactly N x 20 ms. A ``skip`` pause writes nothing,
a ``silence`` pause writes silent slots.

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

Everything here is synchronous and cheap per tick (a row copy and a buffered ``write``), meant
to be called from the media listener on the event loop.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from callplane.media.sinks import party_frame
from callplane.media.sources import FRAME_SAMPLES, SAMPLE_RATE, Source, tone

if TYPE_CHECKING:
    from callplane.media.engine import TickFrames

RecordFormat = Literal["wav", "mp3"]
RecordDirection = Literal["speak", "listen", "both"]
PauseBehavior = Literal["skip", "silence"]
StopReason = Literal["no_input", "end_silence", "max_length"]

FORMATS: tuple[str, ...] = ("wav", "mp3")
DIRECTIONS: tuple[str, ...] = ("speak", "listen", "both")

#: Beep played before a recording when ``beep: true`` (reference §5.2).
BEEP_FREQUENCY = 1000.0
BEEP_SECONDS = 0.25

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
    """Record one call leg to ``path``. ``feed`` has the
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
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"unsupported recording format {format!r}; supported: wav, mp3")
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of listen, speak, both; got {direction!r}")
        self.path = Path(path)
        self.format: RecordFormat = format
        self.stereo = stereo
        self.direction: RecordDirection = direction
        self.channels = 2 if stereo else 1
        self._keep_speak = direction in ("speak", "both")
        self._keep_listen = direction in ("listen", "both")
        self._writer: _WavWriter | _Mp3Writer = (
            _WavWriter(self.path, self.channels)
            if format == "wav"
            else _Mp3Writer(self.path, self.channels)
        )
        self._samples = 0  # sample frames written to the file
        self._stereo_block = np.zeros((FRAME_SAMPLES, 2), dtype=np.int16)
        self._silence = np.zeros((FRAME_SAMPLES, self.channels), dtype=np.int16)
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

    def resume(self) -> None:
        self.paused = False
        self.pause_behavior = None

    @property
    def duration(self) -> float:
        """Seconds written to the file so far."""
        return self._samples / SAMPLE_RATE

    @property
    def closed(self) -> bool:
        return self._closed

    # -- media ------------------------------------------------------------------------------

    def feed(self, frames: TickFrames) -> None:
        """One media tick: one 20 ms slot of the file (none while paused with ``skip``)."""
        if self._closed:
            return  # a listener not yet removed after finish(): ignore, never raise
        if self.paused:
            if self.pause_behavior == "silence":
                self._write(self._silence if self.stereo else self._silence[:, 0])
            return
        if not self.stereo:
            self._write(party_frame(frames, self.direction))
            return
        block = self._stereo_block
        block[:, 0] = party_frame(frames, "speak") if self._keep_speak else 0  # left: says
        block[:, 1] = frames.outbound if self._keep_listen else 0  # right: hears
        self._write(block)

    def _write(self, block: npt.NDArray[np.int16]) -> None:
        self._writer.write(block)
        self._samples += block.shape[0]

    # -- end --------------------------------------------------------------------------------

    def finish(self) -> RecordingResult:
        """Close the file and report duration and size."""
        if self._closed:
            raise RecorderError("recording already finished")
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
# Stop conditions


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
