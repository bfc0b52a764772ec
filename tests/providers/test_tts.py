"""Text-to-speech providers with the real flite / espeak-ng binaries."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from callplane.providers.tts import (
    DefaultTts,
    EspeakTts,
    FliteTts,
    TtsEngineMissing,
    _parse_wav,
)

needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="flite not installed")
needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng not installed"
)


def speech_stats(x: np.ndarray) -> tuple[float, float, float]:
    """(seconds, RMS dBFS, share of 20 ms frames that carry speech energy)."""
    frames = x[: x.size // 160 * 160].reshape(-1, 160).astype(np.float64)
    energy = np.sqrt(np.mean(frames**2, axis=1))
    rms = 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)) / 32767)
    return x.size / 8000, float(rms), float(np.mean(energy > 300))


@needs_flite
async def test_flite_hello_world() -> None:
    audio = await FliteTts().synthesize("hello world")
    assert audio.dtype == np.int16
    seconds, rms, voiced = speech_stats(audio)
    assert 0.6 < seconds < 2.5
    assert -35 < rms < -3
    assert voiced > 0.4
    # Telephone band: almost no energy above 3.8 kHz after resampling to 8 kHz.
    spec = np.abs(np.fft.rfft(audio.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(audio.size, 1 / 8000)
    assert spec[freqs > 3800].sum() / spec.sum() < 0.01


@needs_flite
async def test_flite_voices_differ() -> None:
    tts = FliteTts()
    female = await tts.synthesize("hello world", gender="female")
    male = await tts.synthesize("hello world", gender="male")
    kal = await tts.synthesize("hello world", voice="kal")
    assert not np.array_equal(female, male)
    assert not np.array_equal(male, kal)
    assert tts.resolve_voice(None, "female") == "slt"
    assert tts.resolve_voice(None, "male") == "rms"
    assert tts.resolve_voice("nonsense", "male") == "rms"


@needs_espeak
async def test_espeak_other_languages() -> None:
    tts = EspeakTts()
    fr = await tts.synthesize("bonjour tout le monde", "fr-FR")
    seconds, rms, voiced = speech_stats(fr)
    assert 0.8 < seconds < 4 and rms > -35 and voiced > 0.3
    # An unknown regional variant falls back to the base language.
    es = await tts.synthesize("hola", "es-XX", gender="male")
    assert es.size > 2000


@needs_flite
@needs_espeak
async def test_default_routes_and_caches() -> None:
    tts = DefaultTts()
    a = await tts.synthesize("hello world")
    b = await tts.synthesize("hello world")
    assert a is b and tts.hits == 1 and tts.misses == 1
    assert not a.flags.writeable
    await tts.synthesize("hallo welt", "de-DE")
    assert tts.misses == 2
    assert ("espeak-ng", "de-de+f3", "de-de", "hallo welt") in tts._cache


@needs_flite
async def test_cache_is_size_bounded() -> None:
    tts = DefaultTts(max_cache_samples=20000)
    for word in ("one", "two", "three", "four", "five", "six"):
        await tts.synthesize(word)
    assert tts._cached_samples <= 20000
    assert sum(v.size for v in tts._cache.values()) == tts._cached_samples


async def test_missing_binary_is_a_clear_error() -> None:
    with pytest.raises(TtsEngineMissing, match=r"not found on PATH.*flite"):
        await FliteTts(binary="no-such-flite-binary").synthesize("hi")
    with pytest.raises(TtsEngineMissing, match="espeak-ng"):
        await EspeakTts(binary="no-such-espeak").synthesize("hi")


async def test_empty_text_gives_no_audio() -> None:
    if shutil.which("flite"):
        assert (await FliteTts().synthesize("   ")).size == 0


def test_wav_parser_handles_espeak_placeholder_sizes() -> None:
    pcm = (np.arange(100, dtype=np.int16) * 100).tobytes()
    header = (
        b"RIFF\xff\xff\xff\x7fWAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x22\x56\x00\x00"
        b"\x44\xac\x00\x00\x02\x00\x10\x00data\xff\xff\xff\x7f"
    )
    x, rate = _parse_wav(header + pcm)
    assert rate == 22050 and x.size == 100
