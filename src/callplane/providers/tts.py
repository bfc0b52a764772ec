"""Text-to-speech providers: text in, 8 kHz mono int16 samples out.

The interface is one coroutine, ``synthesize(text, language, voice, gender)``. Implementations run
an offline engine as a subprocess (asyncio, so the event loop never blocks on it):

* :class:`FliteTts` - flite, English only; much easier on speech recognisers. Voices: ``slt``
  (female, the default), ``rms``/``kal``/``awb`` (male).
* :class:`EspeakTts` - espeak-ng, ~100 languages; gender picks a voice variant.
* :class:`DefaultTts` - flite for English, espeak-ng for everything else, with an in-memory
  cache keyed by (engine, voice, language, text) and bounded by total audio size.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from callplane.media.sources import SAMPLE_RATE, resample

Gender = Literal["male", "female"]
Samples = npt.NDArray[np.int16]


class TtsError(RuntimeError):
    """Synthesis failed (the engine exited with an error or produced no audio)."""


class TtsEngineMissing(TtsError):
    """The engine's binary is not installed; the message says which package provides it."""


class TtsProvider(Protocol):
    async def synthesize(
        self,
        text: str,
        language: str = "en-US",
        voice: str | None = None,
        gender: Gender = "female",
    ) -> Samples:
        """Speak ``text``; returns int16 samples at 8 kHz mono."""
        ...


def _parse_wav(data: bytes) -> tuple[npt.NDArray[np.float64], int]:
    """Decode 16-bit PCM WAV bytes to float samples in [-1, 1] (mono mixdown) and the rate.

    Parsed by hand because espeak-ng's ``--stdout`` writes placeholder sizes (0x7fffffff) that
    stricter readers reject: we walk the chunks and take everything after ``data``.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise TtsError("engine output is not a WAV file")
    pos = 12
    rate = channels = bits = 0
    while pos + 8 <= len(data):
        cid = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = pos + 8
        if cid == b"fmt ":
            fmt, channels, rate = struct.unpack_from("<HHI", data, body)
            (bits,) = struct.unpack_from("<H", data, body + 14)
            if fmt != 1 or bits != 16:
                raise TtsError(f"unsupported WAV format {fmt}/{bits} bits from the engine")
        elif cid == b"data":
            if not rate or not channels:
                raise TtsError("WAV data before its fmt chunk")
            raw = data[body : min(len(data), body + size)]
            raw = raw[: len(raw) // (2 * channels) * 2 * channels]
            pcm = np.frombuffer(raw, dtype="<i2").reshape(-1, channels).mean(axis=1)
            return pcm / 32768.0, rate
        pos = body + size + (size & 1)
    raise TtsError("WAV without a data chunk")


def _to_8k(x: npt.NDArray[np.float64], rate: int) -> Samples:
    y = resample(x, rate, SAMPLE_RATE)
    return np.clip(np.rint(y * 32767), -32768, 32767).astype(np.int16)


async def _run(argv: list[str], stdin: bytes | None = None, limit_s: float = 30.0) -> bytes:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError as exc:
        raise TtsEngineMissing(f"{argv[0]} is not installed") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), limit_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise TtsError(f"{argv[0]} took longer than {limit_s} s") from None
    if proc.returncode != 0:
        msg = err.decode(errors="replace").strip()[:300]
        raise TtsError(f"{argv[0]} exited with {proc.returncode}: {msg}")
    return out


def _require(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise TtsEngineMissing(
            f"text-to-speech engine {binary!r} not found on PATH; install the Debian package "
            f"{package!r} (apt-get install {package})"
        )
    return path


class FliteTts:
    """flite (English). ``voice`` is a flite voice name; without one, gender picks slt or rms."""

    name = "flite"
    VOICES: frozenset[str] = frozenset({"slt", "rms", "kal", "kal16", "awb", "awb_time"})

    def __init__(self, binary: str = "flite") -> None:
        self.binary = binary

    def resolve_voice(self, voice: str | None, gender: Gender) -> str:
        if voice and voice in self.VOICES:
            return voice
        return "rms" if gender == "male" else "slt"

    async def synthesize(
        self,
        text: str,
        language: str = "en-US",
        voice: str | None = None,
        gender: Gender = "female",
    ) -> Samples:
        path = _require(self.binary, "flite")
        if not text.strip():
            return np.zeros(0, dtype=np.int16)
        # flite writes WAV only to a file; a private temp file keeps concurrent calls apart.
        fd, wav = tempfile.mkstemp(suffix=".wav", prefix="callplane-tts-")
        os.close(fd)
        try:
            await _run([path, "-voice", self.resolve_voice(voice, gender), "-t", text, "-o", wav])
            data = await asyncio.to_thread(Path(wav).read_bytes)
        finally:
            os.unlink(wav)
        x, rate = _parse_wav(data)
        return _to_8k(x, rate)


class EspeakTts:
    """espeak-ng (many languages). ``voice`` overrides the language-derived espeak voice."""

    name = "espeak-ng"

    def __init__(self, binary: str = "espeak-ng") -> None:
        self.binary = binary

    @staticmethod
    def resolve_voice(language: str, voice: str | None, gender: Gender) -> str:
        base = voice or (language or "en-US").lower()
        # espeak-ng variants: +f3 is a clear female voice, +m3 a male one.
        return f"{base}+{'f3' if gender == 'female' else 'm3'}"

    async def synthesize(
        self,
        text: str,
        language: str = "en-US",
        voice: str | None = None,
        gender: Gender = "female",
    ) -> Samples:
        path = _require(self.binary, "espeak-ng")
        if not text.strip():
            return np.zeros(0, dtype=np.int16)
        v = self.resolve_voice(language, voice, gender)
        # Text goes through stdin so it can never be taken for an option.
        try:
            data = await _run([path, "-v", v, "--stdout"], stdin=text.encode())
        except TtsError:
            if "-" not in v.split("+")[0]:
                raise
            # "fr-ca" unknown? fall back to the primary language subtag ("fr").
            data = await _run(
                [path, "-v", self.resolve_voice(language.split("-")[0], None, gender), "--stdout"],
                stdin=text.encode(),
            )
        x, rate = _parse_wav(data)
        return _to_8k(x, rate)


class DefaultTts:
    """flite for English, espeak-ng otherwise, with a size-bounded LRU cache.

    The cache key is (engine, voice, language, text); ``max_cache_samples`` bounds the total
    cached audio (default 30 min at 8 kHz = 28.8 MB).
    """

    def __init__(
        self,
        flite: FliteTts | None = None,
        espeak: EspeakTts | None = None,
        max_cache_samples: int = 30 * 60 * SAMPLE_RATE,
    ) -> None:
        self.flite = flite or FliteTts()
        self.espeak = espeak or EspeakTts()
        self.max_cache_samples = max_cache_samples
        self._cache: OrderedDict[tuple[str, str, str, str], Samples] = OrderedDict()
        self._cached_samples = 0
        self.hits = 0
        self.misses = 0

    def _route(self, language: str) -> FliteTts | EspeakTts:
        english = (language or "en").lower().split("-")[0] == "en"
        if english and shutil.which(self.flite.binary):
            return self.flite
        return self.espeak

    async def synthesize(
        self,
        text: str,
        language: str = "en-US",
        voice: str | None = None,
        gender: Gender = "female",
    ) -> Samples:
        engine = self._route(language)
        vkey = (
            engine.resolve_voice(voice, gender)
            if isinstance(engine, FliteTts)
            else engine.resolve_voice(language, voice, gender)
        )
        key = (engine.name, vkey, language.lower(), text)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            self.hits += 1
            return cached
        self.misses += 1
        audio = await engine.synthesize(text, language, voice, gender)
        audio.flags.writeable = False  # shared between callers through the cache
        if audio.size <= self.max_cache_samples:
            self._cache[key] = audio
            self._cached_samples += audio.size
            while self._cached_samples > self.max_cache_samples:
                _, old = self._cache.popitem(last=False)
                self._cached_samples -= old.size
        return audio


__all__ = [
    "DefaultTts",
    "EspeakTts",
    "FliteTts",
    "Gender",
    "TtsEngineMissing",
    "TtsError",
    "TtsProvider",
]
