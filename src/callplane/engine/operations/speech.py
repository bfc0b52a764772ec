"""What the operations that talk to the caller share: one model completion as text, and one
sentence synthesised in a voice (the default voice when that one cannot speak).

Used by the AI agent (`ai`: its spoken sentences and its post-prompt) and by live
translation (`live`: the translations it speaks and the summaries it asks for).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from callplane.providers.llm import LanguageModel, Reply

if TYPE_CHECKING:
    from callplane.engine.audio import AudioResolver

__all__ = ["complete", "synthesise"]

log = logging.getLogger("callplane.engine.speech")

# RMS of a 10 ms window, about -57 dBFS: above flite's ~0.2 s of breath noise (RMS <= 40,
# single samples past 60), below a soft first consonant (f, h: RMS 80-110).
_ONSET_LEVEL = 45
_ONSET_KEEP = 240  # 30 ms before the first sound


async def complete(
    llm: LanguageModel, messages: Sequence[dict[str, Any]], *, model: str | None = None
) -> str:
    """The text of one model reply to `messages` (no tools), stripped. Raises LlmError."""
    reply: Reply | None = None
    async for event in llm.stream(messages, model=model):
        if isinstance(event, Reply):
            reply = event
    return (reply.text if reply is not None else "").strip()


async def synthesise(
    audio: AudioResolver,
    text: str,
    *,
    language: str,
    voice: str | None,
    gender: str = "female",
) -> np.ndarray[Any, Any]:
    """`text` spoken by the play path's TTS in `voice`, or in the default voice of `language`
    when that voice cannot speak (an engine or voice this server lacks); the leading silence
    TTS engines open with is cut (the caller would wait for it). Raises what the default
    voice raises."""
    item = {"type": "tts", "params": {"text": text}}
    try:
        source = await audio.resolve(item, language=language, voice=voice, gender=gender)
    except Exception as exc:
        if voice is None:
            raise
        log.info("voice %r cannot speak (%s); the default voice does", voice, exc)
        source = await audio.resolve(item, language=language, voice=None, gender=gender)
    return _without_leading_silence(source.render())


def _without_leading_silence(samples: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    n = samples.size // 80 * 80
    rms = np.sqrt(np.mean(samples[:n].astype(np.float64).reshape(-1, 80) ** 2, axis=1))
    loud = np.flatnonzero(rms > _ONSET_LEVEL)
    if loud.size == 0:
        return samples
    return samples[max(0, int(loud[0]) * 80 - _ONSET_KEEP) :]
