"""Spoken words for the agent's end-to-end tests: what a caller says (flite's `rms` voice, the
one pocketsphinx's open model recognises best) and what a recording is recognised as."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from callplane.providers.asr import PocketSphinxRecognizer

sys.path.insert(0, str(Path(__file__).parents[1] / "media" / "dsp"))
from dsp_audio import flite, to_frames

requires_speech = pytest.mark.skipif(
    shutil.which("flite") is None or importlib.util.find_spec("pocketsphinx") is None,
    reason="flite (Debian) and pocketsphinx (PyPI) are needed for the agent",
)


def say(text: str) -> np.ndarray:
    """`text` spoken at 8 kHz, int16, whole 20 ms frames."""
    return to_frames(flite(text, "rms")).ravel()


def recognise(samples: np.ndarray) -> str:
    """Every utterance in 8 kHz `samples`, each in its own session (as the agent hears them),
    joined by spaces. The final passes run in this thread: always the batch pass (no race with
    a streaming one), and no decoding processes to start (they took seconds of a test)."""
    recognizer = PocketSphinxRecognizer(decode_processes=0)
    session = recognizer.open_session("en-US", end_silence_timeout=0.6)
    texts: list[str] = []
    frames = np.concatenate([samples.astype(np.int16), np.zeros(16000, dtype=np.int16)])
    for start in range(0, len(frames) - 159, 160):
        for event in session.feed(frames[start : start + 160]):
            if event.terminal:
                if event.text:
                    texts.append(event.text)
                session.close()
                session = recognizer.open_session("en-US", end_silence_timeout=0.6)
    session.close()
    return " ".join(texts)
