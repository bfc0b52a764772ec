"""Speech recognition providers: 8 kHz call audio in, collect results out (reference §4.11, §5.3).

Interface
---------
A :class:`SpeechRecognizer` opens a :class:`RecognitionSession` per collect. The session is
synchronous and stateful: ``feed(frame)`` / ``feed_many(frames)`` take 160-sample 8 kHz int16
frames and return the :class:`RecognitionEvent` s they produced (``start_of_input``,
``partial``, then exactly one terminal event: ``final``, ``no_input``, ``no_match`` or
``error``). Timers count audio frames, not wall time: the media clock delivers one frame per
20 ms, so "N seconds" means "N seconds of call audio", which is deterministic and testable.

Threading
---------
Decoding is CPU work (a real-time factor around 0.01 with a grammar, 0.2 with the open
language model), so it must not run on the event loop (and the open model's final pass runs in
another process: see "Decoding processes"). :class:`AsyncRecognition` is the
engine-facing wrapper: ``push(frame)`` is a non-blocking list append meant for the media
listener on the loop; a single worker task hands everything queued so far to
``asyncio.to_thread(session.feed_many, batch)`` and publishes the events on an asyncio queue.
One batch per thread hop (not one per frame) keeps the hop overhead negligible, and one worker
per session keeps a session's decoder used by one thread at a time. Sessions never share a
decoder; :class:`PocketSphinxRecognizer` keeps a pool of loaded decoders (loading one takes
~0.25 s) and lends one to each open session.

PocketSphinx
------------
The wheel's English model is 16 kHz, so audio is upsampled 2x by a streaming polyphase FIR
(state carried across frames, so no edge clicks every 20 ms). Endpointing is done here, on
the 8 kHz frames, by :class:`Endpointer` (shared with the whisper recognizer; it reports the
onset, each frame of trailing non-speech, resumed speech and the end, and the session
reacts): webrtcvad (through :class:`callplane.media.dsp.vad.Vad`, raw per-frame decision)
with a 3-of-5-frames onset rule, a 300 ms pre-roll so the first phoneme is not clipped, and
``end_silence_timeout`` of trailing non-speech to end the utterance. Only the utterance is
decoded, so silence costs no decoding at all. The final result comes from one batch pass over
the buffered utterance (``full_utt=True``: the cepstral mean is estimated from this utterance,
not inherited from the pooled decoder's previous call); partial hypotheses come from a
streaming pass (see "Partial hypotheses").

Decoding processes
------------------
pocketsphinx holds the GIL for the whole of ``process_raw``: a batch pass of 3.5 s of speech
in a thread stopped the event loop for 0.6 s (the media clock, every call's RTP, HTTP). With
the open language model the batch pass therefore runs in a decoding process
(:class:`~concurrent.futures.ProcessPoolExecutor`, spawned, one per core up to two, each with
its own decoder, started when a session first hears speech); grammar passes (~10 ms) stay in
the feeding thread. Should the pool break, the session decodes in-process as before. A
decoding process exits by itself within a second when the server that started it is gone
(killed, crashed): nothing else would end it.

The pass is also **speculative**: it starts as soon as the trailing non-speech begins (after
``_SPECULATE_AFTER`` frames; later with a long ``end_silence_timeout``, just early enough to
finish by the timeout at the processes' recent speed), over the utterance so far, while the
end-of-speech timer still runs. If the timer expires, that pass is the final result (the
frames after it are non-speech); the final event still comes exactly at the timeout frame,
only without the decoding wait after it. If the caller speaks again the pass is dropped
(cancelled if still queued, else left to finish unused) and the next pause starts a new one
over the longer utterance. ``speculations`` / ``speculations_discarded`` count them.

Streaming fallback
------------------
Under load the speculative pass is often not ready at the timeout (it takes ~550 ms for a
2-3 s utterance at RTF ~0.24 and starts only 120 ms into the silence). So the open model also
runs a **streaming** pass while the caller speaks, in a third, single *streaming process*
(:class:`~concurrent.futures.ProcessPoolExecutor` with one worker, so a stream's jobs run in
order on the decoder it holds there; a decoder per open stream, pooled): ``start_utt`` at the
onset, the audio sent every ``_STREAM_CHUNK`` frames and decoded with ``full_utt=False``,
``end_utt`` at the end. Its decoders run without pocketsphinx's second (``fwdflat``) pass,
whose ``end_utt`` costs 100-265 ms over the whole utterance: the hypothesis is ready a few ms
after the timeout. It starts from the cepstral mean of the latest batch pass
(``recent_cmn``, an 8 kHz telephony default before the first), not from whatever its decoder
last heard. At the timeout the final event takes the batch pass if it is ready, else the
first of the two to finish (``final_source``: ``speculative`` / ``stream`` / ``batch``).
In the feeding thread instead, the same pass held the GIL for its ``end_utt`` (100-265 ms
with ``fwdflat``) and 10-35 ms per frame under load: media stalls. ``final_pass="batch"``
turns it off, ``"stream"`` takes only the streaming result (bench_asr measures it).

Partial hypotheses
------------------
Where the streaming pass runs, each of its chunks can return the best hypothesis so far
(``decoder.hyp()`` after the chunk: ~35 us against ~15 ms for decoding the chunk, in the
streaming process). The session collects the returned ones without waiting (a finished job is
picked up at the next frame fed), so a word is in a partial 20-140 ms after its audio on an
idle machine: the rest of its chunk, then its decoding, and often before the word has ended
(the tick tests measured the voice agent's barge-in -60..+40 ms from the end of the caller's
3rd word; with both cores busy, -20..+680 ms over six runs). Sessions opened with
``stream_partials`` (the voice agent's ``barge_min_words``) report each change at once;
``partial_results`` (collect, live transcription's ``live_events``) the latest one every
``_PARTIAL_EVERY`` frames (300 ms) when it changed. Neither costs the feeding thread any
decoding (its CPU per second of audio, four flite sentences: 2.3 ms, the endpointing; the live
pass below adds 134 ms, all of it holding the GIL). Where there is no streaming pass (a
grammar, ``decode_processes=0``, ``final_pass="batch"``, the first utterance before the
streaming process is up, or it broke), ``partial_results`` run a live pass on the session's
decoder in the feeding thread (about twice the CPU, holding the GIL 10-35 ms a frame under
load); ``stream_partials`` then give no partials at all, and whisper gives none either way.

With ``hints`` the session decodes against a JSGF grammar whose alternatives are the hint
phrases (normalised to dictionary words; phrases with a word missing from the dictionary are
dropped, because pocketsphinx cannot build a grammar over unknown words; if none survive the
open language model is used). The grammar is written to a file and the file is checked to
exist before it is loaded: a missing grammar file crashes pocketsphinx (segfault). The final
text of a grammar match is the caller's original hint string.

Confidence (in [0, 1]):

* open language model: the geometric mean of the word posteriors pocketsphinx computes on
  its lattice (``bestpath``), i.e. ``Segment.prob`` of each non-filler word;
* grammar: a grammar always matches *something* (its lattice posteriors are ~1 for any
  input), so confidence is the fraction of the utterance's speech the matched phrase
  accounts for: ``min(1, word_frames / speech_frames / 0.8)``. Out-of-grammar sentences
  map a short hint onto part of a long utterance and score low. This is a heuristic.

The VAD alone takes loud hiss or static for speech, so a frame counts as speech only within
200 ms of a voiced frame (pitch periodicity at 60-400 Hz): steady noise then ends as
``no_input``. Utterances with voicing in under 20 % of their speech frames end as
``no_match``, as do results below the confidence threshold and empty hypotheses.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import math
import multiprocessing
import os
import re
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from callplane.media.dsp.vad import Vad
from callplane.media.sources import FRAME_SAMPLES, SAMPLE_RATE

log = logging.getLogger(__name__)

Frame = npt.NDArray[np.int16]
EventType = Literal["start_of_input", "partial", "final", "no_input", "no_match", "error"]
TERMINAL_EVENTS: frozenset[str] = frozenset({"final", "no_input", "no_match", "error"})

DECODER_RATE = 16000
FRAMES_PER_SECOND = SAMPLE_RATE // FRAME_SAMPLES  # 50

DEFAULT_END_SILENCE = 1.0
DEFAULT_NO_INPUT = 5.0
MAX_UTTERANCE_SECONDS = 30.0  # bounds memory and decoding time of a never-ending "utterance"
GRAMMAR_MIN_CONFIDENCE = 0.5
LM_MIN_CONFIDENCE = 0.3

_ONSET_WINDOW = 5  # frames considered for the speech-onset decision
_ONSET_SPEECH = 3  # ... of which this many must be speech (60 ms)
_PREROLL_FRAMES = 15  # 300 ms kept before the onset
_PARTIAL_EVERY = 15  # frames between partial-result checks (300 ms)
_MIN_VOICED_RATIO = 0.2
_VOICING_HANGOVER = 10  # frames (200 ms) after a voiced frame that still count as speech
_VOICED_CORRELATION = 0.45
_FULL_COVERAGE = 0.8  # word/speech frame ratio treated as "the phrase is all that was said"
# Trailing non-speech frames after which the final pass starts speculatively, at the earliest
# (see "Decoding processes"). Stop closures between words give runs of 1-5 frames (flite);
# each run that reaches this costs a decode of the utterance so far that the next word makes
# stale. With a long end-of-speech timeout the pass starts later: just early enough to be
# done at the timeout, by the decoding processes' recent speed, plus this margin.
_SPECULATE_AFTER = 6
_SPECULATE_MARGIN = 10  # frames
_INITIAL_RTF = 0.3  # decoding wall time / audio time assumed before the first pass is timed
_STREAM_CHUNK = 5  # frames (100 ms) of audio sent to the streaming process at a time
_DECODE_WAIT = 60.0  # s: a decoding process that takes longer is treated as broken
# The cepstral mean a streaming pass starts from before any batch pass has measured one: the
# mean of the batch passes over bench_asr's flite sentences (rms and slt) at 8 kHz. A fresh
# decoder's own default (40,3,-1,0,...) cost the streaming pass 60-150 % WER on them.
_INITIAL_CMN = "43,32,-22,48,-12,-2,23,-23,8,-4,0,16,-5"


class AsrError(RuntimeError):
    """Recognition could not run (model missing, decoder failure)."""


class UnsupportedLanguage(ValueError):
    """The recognizer has no model for the requested language."""


@dataclass(frozen=True, slots=True)
class RecognitionEvent:
    """One collect event. ``text``/``confidence`` on partial and final; ``error`` on error.

    ``offset`` is the audio time (seconds since the session began) at which it was raised.
    """

    type: EventType
    text: str | None = None
    confidence: float | None = None
    error: str | None = None
    offset: float = 0.0

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS


class RecognitionSession(Protocol):
    """A streaming recognition of one utterance (see the module docstring)."""

    done: bool

    def feed(self, frame: Frame) -> list[RecognitionEvent]: ...

    def feed_many(self, frames: Iterable[Frame]) -> list[RecognitionEvent]: ...

    def start_timers(self) -> None:
        """Start the no-input timer of a session opened with ``timers_started=False``
        (``calling.collect.start_input_timers``)."""
        ...

    def close(self) -> None: ...


class SpeechRecognizer(Protocol):
    def supports(self, language: str | None) -> bool: ...

    def open_session(
        self,
        language: str | None = "en-US",
        hints: Sequence[str] | None = None,
        end_silence_timeout: float | None = None,
        speech_timeout: float | None = None,
        partial_results: bool = False,
        *,
        initial_timeout: float | None = None,
        timers_started: bool = True,
        sensitivity: float = 44.0,
        stream_partials: bool = False,
    ) -> RecognitionSession:
        """Blocking (may load a model): call through ``asyncio.to_thread`` or
        :meth:`AsyncRecognition.open`. Raises :class:`UnsupportedLanguage`.

        ``partial_results``: ``partial`` events, every 300 ms when the hypothesis changed, at
        whatever cost; ``stream_partials``: ``partial`` events only where they cost nothing
        extra (the open model's streaming pass, see "Partial hypotheses"), as soon as one
        changes; none otherwise (a grammar, whisper, the streaming process not up)."""
        ...

    def prepare(self) -> None:
        """Fast recognition is wanted soon (a voice agent starts): start in the background
        whatever would otherwise start at the first speech. Non-blocking; may do nothing."""
        ...


_Session = TypeVar("_Session", bound="EndpointedSession")


@dataclass(frozen=True, slots=True)
class SessionRequest:
    """What ``open_session`` asked for beyond the endpointing."""

    endpointer: Endpointer
    language: str | None
    hints: Sequence[str] | None
    partial_results: bool
    stream_partials: bool = False


class EndpointedRecognizer(Generic[_Session]):
    """``open_session`` of the recognizers whose sessions endpoint with an :class:`Endpointer`:
    the endpointing parameters become the endpointer, the rest goes to ``_open``."""

    def open_session(
        self,
        language: str | None = "en-US",
        hints: Sequence[str] | None = None,
        end_silence_timeout: float | None = None,
        speech_timeout: float | None = None,
        partial_results: bool = False,
        *,
        initial_timeout: float | None = None,
        timers_started: bool = True,
        sensitivity: float = 44.0,
        stream_partials: bool = False,
    ) -> _Session:
        endpointer = Endpointer(
            end_silence_timeout=end_silence_timeout,
            speech_timeout=speech_timeout,
            initial_timeout=initial_timeout,
            timers_started=timers_started,
            sensitivity=sensitivity,
        )
        return self._open(
            SessionRequest(endpointer, language, hints, partial_results, stream_partials)
        )

    def prepare(self) -> None:
        """Nothing to start ahead of the first speech (see ``SpeechRecognizer.prepare``)."""

    def _open(self, request: SessionRequest) -> _Session:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# DSP helpers


class Upsampler2x:
    """Streaming 8 kHz -> 16 kHz interpolator: zero-stuffing + a 64-tap Kaiser-windowed sinc
    low-pass at 3.8 kHz, with the filter state carried from one frame to the next."""

    TAPS = 64

    def __init__(self) -> None:
        n = self.TAPS
        m = np.arange(n) - (n - 1) / 2
        cutoff = 3800.0 / DECODER_RATE  # cycles per output sample
        h = 2 * cutoff * np.sinc(2 * cutoff * m) * np.kaiser(n, 8.0)
        self._h = h * (2.0 / h.sum())  # x2: zero-stuffing halves the average level
        self._tail = np.zeros(n - 1)

    def process(self, frame: Frame) -> Frame:
        x = np.asarray(frame, dtype=np.float64).reshape(-1)
        stuffed = np.zeros(2 * x.size)
        stuffed[::2] = x
        buf = np.concatenate([self._tail, stuffed])
        y = np.convolve(buf, self._h, mode="valid")
        self._tail = buf[-(self.TAPS - 1) :]
        out: Frame = np.clip(np.rint(y), -32768, 32767).astype(np.int16)
        return out


def is_voiced(window: npt.NDArray[np.float64]) -> bool:
    """Periodicity in the 60-400 Hz pitch range (normalised autocorrelation peak)."""
    x = window - window.mean()
    energy = float(np.dot(x, x))
    if energy <= 0.0:
        return False
    spec = np.fft.rfft(x, 1024)
    r = np.fft.irfft(spec * np.conj(spec), 1024)[: x.size]
    lo, hi = SAMPLE_RATE // 400, min(SAMPLE_RATE // 60, x.size - 1)
    # Unbiased normalisation so long lags (low voices) are not penalised for overlap loss.
    lags = np.arange(lo, hi)
    norm = r[lo:hi] / energy * (x.size / (x.size - lags))
    return bool(norm.max() >= _VOICED_CORRELATION)


# ---------------------------------------------------------------------------------------------
# Text normalisation for hints

_DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_NON_WORD = re.compile(r"[^a-z0-9' ]+")


def normalize_phrase(phrase: str) -> list[str]:
    """Lower-case dictionary-style words; digits are spoken one by one ("911" -> nine one one)."""
    words: list[str] = []
    for token in _NON_WORD.sub(" ", phrase.lower().replace("-", " ")).split():
        token = token.strip("'")
        if not token:
            continue
        if token.isdigit():
            words.extend(_DIGITS[int(d)] for d in token)
        else:
            words.append(token)
    return words


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance / reference length (for tests and the benchmark)."""
    ref, hyp = normalize_phrase(reference), normalize_phrase(hypothesis)
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1] / max(len(ref), 1)


# ---------------------------------------------------------------------------------------------
# PocketSphinx


def _language_ok(language: str | None) -> bool:
    if not language:
        return True
    tag = language.split(":", 1)[-1].strip().lower()  # "Deepgram:en-US" -> "en-us"
    return tag == "en" or tag.startswith("en-") or tag.startswith("en_")


FinalPass = Literal["auto", "batch", "stream"]
Word = tuple[str, int, int, float]  # word, first and last 10 ms frame, posterior


@dataclass(frozen=True, slots=True)
class Decoded:
    """The batch pass over one utterance: the best hypothesis and its non-filler words."""

    text: str
    words: tuple[Word, ...]
    cmn: str = ""  # the decoder's cepstral mean after the pass (``Decoder.get_cmn``)


def decode_utterance(decoder: Any, pcm16k: bytes) -> Decoded:
    """One batch pass (``full_utt=True``: the cepstral mean comes from this utterance alone)."""
    decoder.start_utt()
    decoder.process_raw(pcm16k, False, True)
    decoder.end_utt()
    return decoded_result(decoder)


def decoded_result(decoder: Any) -> Decoded:
    """The hypothesis of the utterance the decoder just ended."""
    hyp = decoder.hyp()
    text = hyp.hypstr.strip() if hyp is not None and hyp.hypstr else ""
    words = tuple(
        (str(seg.word), int(seg.start_frame), int(seg.end_frame), float(seg.prob))
        for seg in decoder.seg()
        if not (seg.word.startswith("<") or seg.word.startswith("["))
    )
    return Decoded(text, words, str(decoder.get_cmn(False)))


def _load_decoder() -> Any:
    try:
        import pocketsphinx
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise AsrError("pocketsphinx is not installed (pip install pocketsphinx)") from exc
    try:
        return pocketsphinx.Decoder(loglevel="FATAL", samprate=DECODER_RATE)
    except (RuntimeError, ValueError) as exc:
        raise AsrError(f"cannot load the pocketsphinx model: {exc}") from exc


# The decoding processes' side (see "Decoding processes" in the module docstring).
_process_decoder: Any = None


# Decoding yields to the server's own process: when the cores are busy, a late recognition
# result costs a turn some latency, a late media tick costs every call audio.
DECODER_NICENESS = 5
# Seconds between a decoding process's checks that the server that started it is still there.
_PARENT_POLL = 1.0


def _decoder_process_setup() -> None:
    # Ctrl-C reaches the whole process group: the server shuts its pools down itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(DECODER_NICENESS)
    threading.Thread(
        target=_exit_with_parent, args=(os.getppid(),), name="parent-watch", daemon=True
    ).start()


def _exit_with_parent(parent: int) -> None:
    """A pool's workers hold both ends of its job queue's pipe, so they never see EOF when the
    server dies without shutting them down (kill -9, the OOM killer): each would stay, ~140 MB,
    for good (a test run that kills its servers left 248 of them and ran out of memory)."""
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL)
    os._exit(0)


def _process_init() -> None:
    _decoder_process_setup()
    global _process_decoder
    _process_decoder = _load_decoder()


def _process_ready() -> bool:
    return _process_decoder is not None


def _process_decode(pcm16k: bytes) -> Decoded:
    return decode_utterance(_process_decoder, pcm16k)


# The streaming process's side (see "Streaming fallback"): one process, so every job of a
# stream runs there and in submission order; a decoder per open stream, pooled.
_streams: dict[int, Any] = {}
_stream_pool: list[Any] = []


def _stream_decoder() -> Any:
    if _stream_pool:
        return _stream_pool.pop()
    try:
        import pocketsphinx
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise AsrError("pocketsphinx is not installed (pip install pocketsphinx)") from exc
    # Without the second (fwdflat) pass: that one runs at end_utt over the whole utterance
    # (100-265 ms), which is exactly the wait this pass is here to avoid; measured WER on
    # bench_asr's sentences is no worse without it.
    return pocketsphinx.Decoder(loglevel="FATAL", samprate=DECODER_RATE, fwdflat=False)


def _stream_init() -> None:
    _decoder_process_setup()
    _stream_pool.append(_stream_decoder())


def _stream_begin(sid: int, cmn: str) -> None:
    decoder = _stream_decoder()
    decoder.set_cmn(cmn)
    decoder.start_utt()
    _streams[sid] = decoder


def _stream_feed(sid: int, pcm16k: bytes, hypothesis: bool = False) -> str | None:
    """Decode a chunk; with ``hypothesis``, the best hypothesis so far (a partial result)."""
    decoder = _streams.get(sid)
    if decoder is None:
        return None
    decoder.process_raw(pcm16k, False, False)
    if not hypothesis:
        return None
    hyp = decoder.hyp()
    return str(hyp.hypstr).strip() if hyp is not None and hyp.hypstr else ""


def _stream_end(sid: int, pcm16k: bytes) -> Decoded | None:
    decoder = _streams.pop(sid, None)
    if decoder is None:
        return None
    if pcm16k:
        decoder.process_raw(pcm16k, False, False)
    decoder.end_utt()
    decoded = decoded_result(decoder)
    _stream_pool.append(decoder)
    return decoded


def _stream_drop(sid: int) -> None:
    decoder = _streams.pop(sid, None)
    if decoder is not None:
        decoder.end_utt()
        _stream_pool.append(decoder)


class _PooledDecoder:
    """A decoder plus the grammar searches already loaded into it."""

    MAX_GRAMMARS = 32

    def __init__(self, decoder: Any) -> None:
        self.decoder = decoder
        self.grammars: dict[str, None] = {}  # search names, oldest first


class PocketSphinxRecognizer(EndpointedRecognizer["PocketSphinxSession"]):
    """:class:`SpeechRecognizer` on pocketsphinx 5 and its bundled US English model."""

    def __init__(
        self,
        *,
        grammar_min_confidence: float = GRAMMAR_MIN_CONFIDENCE,
        lm_min_confidence: float = LM_MIN_CONFIDENCE,
        max_pool: int = 8,
        work_dir: str | Path | None = None,
        decode_processes: int | None = None,
        final_pass: FinalPass = "auto",
    ) -> None:
        # "auto": with decoding processes the open model also runs a streaming pass in the
        # streaming process, used at the timeout when the batch pass is not ready (and for
        # partial hypotheses); "batch": wait for the batch pass; "stream": always the
        # streaming pass (to measure it).
        self.final_pass: FinalPass = final_pass
        self.grammar_min_confidence = grammar_min_confidence
        self.lm_min_confidence = lm_min_confidence
        self._max_pool = max_pool
        # None: one per core, at most 2; 0: final passes in the feeding thread (holding the GIL).
        self.decode_processes = (
            min(2, os.cpu_count() or 1) if decode_processes is None else max(0, decode_processes)
        )
        self._executor: ProcessPoolExecutor | None = None
        self._streamer: ProcessPoolExecutor | None = None  # the streaming process
        self._stream_up: Future[Any] | None = None
        self._stream_ids = itertools.count(1)
        self._ready: list[Future[Any]] = []  # the processes' start-up: in use once all are done
        # Recent wall time of a pass in a decoding process per second of audio (queueing and
        # the machine's load included): when to start a speculative pass.
        self.decode_rtf = _INITIAL_RTF
        # The cepstral mean of the latest batch pass: where streaming passes start (a str
        # store: atomic), so that one does not inherit its pooled decoder's last call.
        self.recent_cmn = _INITIAL_CMN
        self._pool: list[_PooledDecoder] = []
        self._lock = threading.Lock()
        self._dict_lock = threading.Lock()
        self._known: dict[str, bool] = {}
        if work_dir is None:
            self._tmp: tempfile.TemporaryDirectory[str] | None = tempfile.TemporaryDirectory(
                prefix="callplane-asr-"
            )
            self._dir = Path(self._tmp.name)
        else:
            self._tmp = None
            self._dir = Path(work_dir)
            self._dir.mkdir(parents=True, exist_ok=True)

    def supports(self, language: str | None) -> bool:
        return _language_ok(language)

    # -- decoders ----------------------------------------------------------------------------

    def _new_decoder(self) -> _PooledDecoder:
        return _PooledDecoder(_load_decoder())

    def acquire(self) -> _PooledDecoder:
        with self._lock:
            if self._pool:
                return self._pool.pop()
        return self._new_decoder()  # outside the lock: loading takes ~0.25 s

    def release(self, pooled: _PooledDecoder) -> None:
        try:
            pooled.decoder.activate_search()  # back to the language model for the next user
        except (RuntimeError, KeyError):
            return  # a decoder in a bad state is dropped, not pooled
        with self._lock:
            if len(self._pool) < self._max_pool:
                self._pool.append(pooled)

    def warm_up(self) -> None:
        """Load one decoder now (blocking) so the first collect does not pay for it."""
        self.release(self.acquire())

    # -- decoding processes -------------------------------------------------------------------

    def _decode_pool(self) -> ProcessPoolExecutor | None:
        if self.decode_processes == 0:
            return None
        with self._lock:
            if self._executor is None:
                # spawn, not fork: the server's process has threads (a forked lock may be held).
                self._executor = ProcessPoolExecutor(
                    max_workers=self.decode_processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_process_init,
                )
            return self._executor

    def prepare(self) -> None:
        self.prepare_decoding()

    def prepare_decoding(self) -> None:
        """Start the decoding processes (non-blocking) if they do not run yet. Each takes ~1 s
        of CPU to start, so this happens at the first onset of speech rather than with every
        server start; until they are up, final passes run in the feeding thread as before."""
        self._prepare_streaming()
        with self._lock:
            if self._executor is not None or self.decode_processes == 0:
                return
        pool = self._decode_pool()
        if pool is None:
            return
        try:
            # The pool adds a process per job submitted while none is idle: all start now,
            # rather than one in the middle of a later call.
            ready = [pool.submit(_process_ready) for _ in range(self.decode_processes)]
        except RuntimeError:
            self.drop_pool(pool)
            return
        with self._lock:
            if self._executor is pool:
                self._ready = ready

    def _prepare_streaming(self) -> None:
        if self.final_pass == "batch" or self.decode_processes == 0:
            return
        with self._lock:
            if self._streamer is not None:
                return
            streamer = ProcessPoolExecutor(
                max_workers=1,  # one process: a stream's jobs run in order on its decoder
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_stream_init,
            )
            self._streamer = streamer
        try:
            up = streamer.submit(_process_ready)
        except RuntimeError:
            self.drop_streamer(streamer)
            return
        with self._lock:
            if self._streamer is streamer:
                self._stream_up = up

    def streaming_ready(self) -> bool:
        """The streaming process is up, or there is none to wait for."""
        if self.final_pass == "batch" or self.decode_processes == 0:
            return True
        with self._lock:
            up = self._stream_up
        return up is not None and up.done()

    def stream(self, fn: Any, *args: Any) -> Future[Any] | None:
        """A job of a streaming pass in the streaming process; None if that is not up (not
        started yet, disabled, or broken: the session then goes without its streaming pass)."""
        with self._lock:
            streamer, up = self._streamer, self._stream_up
        if streamer is None or up is None or not up.done():
            return None
        try:
            return streamer.submit(fn, *args)
        except RuntimeError as exc:  # BrokenProcessPool, or shut down meanwhile
            log.warning("speech streaming process unusable (%r)", exc)
            self.drop_streamer(streamer)
            return None

    def drop_streamer(self, streamer: ProcessPoolExecutor | None = None) -> None:
        """Forget a broken streaming process (the next utterance starts a new one)."""
        with self._lock:
            if streamer is not None and self._streamer is not streamer:
                return
            streamer, self._streamer, self._stream_up = self._streamer, None, None
        if streamer is not None:
            streamer.shutdown(wait=False, cancel_futures=True)

    def decoding_ready(self) -> bool:
        with self._lock:
            ready = self._executor is not None and bool(self._ready)
            futures = list(self._ready)
        return ready and all(
            f.done() and not f.cancelled() and f.exception() is None for f in futures
        )

    def submit_decode(self, pcm16k: bytes) -> Future[Any] | None:
        """A batch pass in a decoding process; None when none is ready (disabled, starting,
        or broken): the caller decodes in its own thread."""
        if not self.decoding_ready():
            return None
        with self._lock:
            pool = self._executor
        if pool is None:
            return None
        try:
            future = pool.submit(_process_decode, pcm16k)
        except RuntimeError as exc:  # BrokenProcessPool, or shut down meanwhile
            log.warning("speech decoding processes unusable (%r): decoding in-process", exc)
            self.drop_pool(pool)
            return None
        audio = len(pcm16k) / (2 * DECODER_RATE)
        started = time.monotonic()

        def timed(done: Future[Any]) -> None:
            if audio > 0 and not done.cancelled() and done.exception() is None:
                rtf = (time.monotonic() - started) / audio
                self.decode_rtf = 0.7 * self.decode_rtf + 0.3 * rtf  # a float store: atomic
                self.recent_cmn = done.result().cmn or self.recent_cmn

        future.add_done_callback(timed)
        return future

    def drop_pool(self, pool: ProcessPoolExecutor | None = None) -> None:
        """Forget a broken pool (the next pass starts a new one)."""
        with self._lock:
            if pool is not None and self._executor is not pool:
                return
            pool, self._executor = self._executor, None
            self._ready = []
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def pronounce(self, word: str) -> list[str] | None:
        """The phonemes of ``word`` in the model's dictionary (ARPAbet), None if unknown."""
        pooled = self.acquire()
        try:
            with self._dict_lock:
                phones = pooled.decoder.lookup_word(word.lower())
        finally:
            self.release(pooled)
        return phones.split() if phones else None

    # -- grammars ------------------------------------------------------------------------------

    def _in_dictionary(self, decoder: Any, word: str) -> bool:
        with self._dict_lock:
            known = self._known.get(word)
            if known is None:
                known = self._known[word] = decoder.lookup_word(word) is not None
            return known

    def grammar_phrases(self, decoder: Any, hints: Sequence[str]) -> dict[str, str]:
        """Normalised phrase -> the caller's hint, for hints fully in the dictionary."""
        phrases: dict[str, str] = {}
        for hint in hints:
            words = normalize_phrase(hint)
            if not words:
                continue
            missing = [w for w in words if not self._in_dictionary(decoder, w)]
            if missing:
                log.info("hint %r dropped: not in the dictionary: %s", hint, " ".join(missing))
                continue
            phrases.setdefault(" ".join(words), hint)
        return phrases

    def _activate_grammar(self, pooled: _PooledDecoder, phrases: Sequence[str]) -> bool:
        body = " | ".join(sorted(phrases))
        name = "g" + hashlib.sha1(body.encode()).hexdigest()[:16]
        dec = pooled.decoder
        if name not in pooled.grammars:
            path = self._dir / f"{name}.jsgf"
            if not path.is_file():
                tmp = path.with_suffix(".tmp")
                tmp.write_text(f"#JSGF V1.0;\ngrammar callplane;\npublic <hint> = {body} ;\n")
                tmp.replace(path)  # atomic: another thread never sees half a grammar
            # pocketsphinx segfaults on a missing grammar file: never pass one unchecked.
            if not path.is_file() or path.stat().st_size == 0:
                log.error("grammar file %s missing after writing it", path)
                return False
            try:
                dec.add_jsgf_file(name, str(path))
            except RuntimeError:
                log.exception("pocketsphinx rejected grammar %s", path)
                return False
            pooled.grammars[name] = None
            if len(pooled.grammars) > _PooledDecoder.MAX_GRAMMARS:
                oldest = next(iter(pooled.grammars))
                del pooled.grammars[oldest]
                with contextlib.suppress(RuntimeError, KeyError):
                    dec.remove_search(oldest)
        dec.activate_search(name)
        return True

    # -- sessions ------------------------------------------------------------------------------

    def _open(self, request: SessionRequest) -> PocketSphinxSession:
        if not _language_ok(request.language):
            raise UnsupportedLanguage(
                f"no speech model for language {request.language!r} (en only)"
            )
        hints = request.hints
        pooled = self.acquire()
        try:
            phrases: dict[str, str] = {}
            if hints:
                phrases = self.grammar_phrases(pooled.decoder, hints)
                if phrases and not self._activate_grammar(pooled, list(phrases)):
                    phrases = {}
            if not phrases:
                pooled.decoder.activate_search()
            return PocketSphinxSession(
                self,
                pooled,
                request.endpointer,
                phrases=phrases,
                partial_results=request.partial_results,
                stream_partials=request.stream_partials,
            )
        except BaseException:
            self.release(pooled)
            raise

    def close(self) -> None:
        with self._lock:
            self._pool.clear()
        self.drop_pool()
        self.drop_streamer()
        if self._tmp is not None:
            self._tmp.cleanup()


def _frames_for(seconds: float) -> int:
    return max(1, math.ceil(seconds * FRAMES_PER_SECOND - 1e-9))


EndpointEvent = Literal["start", "pause", "resume", "end", "no_input"]


class Endpointer:
    """The endpointing of every recognition session (see "PocketSphinx" above), without a
    decoder: 8 kHz frames in, endpoint events out, the utterance kept at 16 kHz in
    :attr:`utterance`. Sans-IO and synchronous; one feeder at a time.

    :meth:`feed` returns, for one frame: ``start`` (onset: the pre-roll and this frame are in
    :attr:`utterance`), ``pause`` (a trailing non-speech frame of the utterance, the
    :attr:`silent_run` th; the end-of-speech timer runs), ``resume`` (speech again after a
    pause), ``end`` (the utterance ended: end-of-speech timeout or the 30 s limit; if the last
    frame was speech, :attr:`silent_run` is 0), ``no_input``, or None (speech goes on, or
    nothing yet)."""

    def __init__(
        self,
        *,
        end_silence_timeout: float | None = None,
        speech_timeout: float | None = None,
        initial_timeout: float | None = None,
        timers_started: bool = True,
        sensitivity: float = 44.0,
    ) -> None:
        self.end_silence = _frames_for(end_silence_timeout or DEFAULT_END_SILENCE)
        waits = [t for t in (speech_timeout, initial_timeout) if t is not None and t > 0]
        self._no_input = _frames_for(min(waits) if waits else DEFAULT_NO_INPUT)
        self._max_utt = _frames_for(MAX_UTTERANCE_SECONDS)
        self.timers = timers_started
        self._vad = Vad(input_sensitivity=sensitivity)
        self._up = Upsampler2x()
        self._onset: deque[bool] = deque(maxlen=_ONSET_WINDOW)
        self._preroll: deque[tuple[Frame, bool, bool]] = deque(maxlen=_PREROLL_FRAMES)
        self._prev = np.zeros(FRAME_SAMPLES)
        self.frames = 0  # frames fed in total
        self._waited = 0  # frames counted by the no-input timer
        self.in_speech = False
        self.speech_frames = 0
        self.voiced_frames = 0
        self.silent_run = 0
        self._since_voiced = _VOICING_HANGOVER + 1
        self.utterance: list[Frame] = []  # 16 kHz audio of the current utterance, per frame

    @property
    def now(self) -> float:
        """Audio time (seconds since the session began)."""
        return self.frames / FRAMES_PER_SECOND

    @property
    def voice_like(self) -> bool:
        """Enough of the utterance's speech frames were voiced: a voice, not hiss or static."""
        return not self.speech_frames or self.voiced_frames / self.speech_frames >= (
            _MIN_VOICED_RATIO
        )

    def take_utterance(self) -> Frame:
        audio = np.concatenate(self.utterance) if self.utterance else np.zeros(0, np.int16)
        self.utterance = []
        return audio

    def feed(self, frame: Frame) -> EndpointEvent | None:
        self.frames += 1
        vad = self._vad.is_voiced(frame)
        window = np.concatenate([self._prev, frame.astype(np.float64)])
        self._prev = window[-FRAME_SAMPLES:]
        voiced = vad and is_voiced(window)
        self._since_voiced = 0 if voiced else self._since_voiced + 1
        # Speech for endpointing = VAD speech near voicing: unvoiced consonants sit within
        # a few frames of a vowel, steady hiss or static never does.
        speech = vad and self._since_voiced <= _VOICING_HANGOVER
        up = self._up.process(frame)
        if not self.in_speech:
            self._onset.append(speech)
            self._preroll.append((up, speech, voiced))
            if sum(self._onset) >= _ONSET_SPEECH:
                self.in_speech = True
                for pre, was_speech, was_voiced in self._preroll:
                    self.utterance.append(pre)
                    self.speech_frames += was_speech
                    self.voiced_frames += was_voiced
                self._preroll.clear()
                return "start"
            if self.timers:
                self._waited += 1
                if self._waited >= self._no_input:
                    return "no_input"
            return None
        self.utterance.append(up)
        resumed = False
        if speech:
            self.speech_frames += 1
            self.voiced_frames += voiced
            resumed = self.silent_run > 0
            self.silent_run = 0
        else:
            self.silent_run += 1
        if self.silent_run >= self.end_silence or len(self.utterance) >= self._max_utt:
            self.in_speech = False
            return "end"
        if resumed:
            return "resume"
        return "pause" if self.silent_run else None


class EndpointedSession:
    """What every recognition session shares: an :class:`Endpointer`, the feeding loop, and a
    failure of its recognizer ending the session with an ``error`` event."""

    _ep: Endpointer
    done: bool

    def start_timers(self) -> None:
        self._ep.timers = True

    def feed_many(self, frames: Iterable[Frame]) -> list[RecognitionEvent]:
        events: list[RecognitionEvent] = []
        for frame in frames:
            if self.done:
                break
            events.extend(self.feed(frame))
        return events

    def feed(self, frame: Frame) -> list[RecognitionEvent]:
        if self.done:
            return []
        try:
            return self._feed(np.asarray(frame, dtype=np.int16).reshape(-1))
        except Exception as exc:  # a decoder failure ends this collect, never the caller
            log.exception("speech recognition failed")
            return [self._finish(RecognitionEvent("error", error=str(exc), offset=self._ep.now))]

    def _feed(self, frame: Frame) -> list[RecognitionEvent]:
        raise NotImplementedError

    def _finish(self, event: RecognitionEvent) -> RecognitionEvent:
        raise NotImplementedError


class PocketSphinxSession(EndpointedSession):
    """One utterance on a pooled decoder. Not thread-safe: one feeder at a time."""

    def __init__(
        self,
        owner: PocketSphinxRecognizer,
        pooled: _PooledDecoder,
        endpointer: Endpointer,
        *,
        phrases: dict[str, str],
        partial_results: bool,
        stream_partials: bool = False,
    ) -> None:
        self._owner = owner
        self._pooled: _PooledDecoder | None = pooled
        self._dec = pooled.decoder
        self.phrases = phrases  # empty = open language model
        self.grammar = bool(phrases)
        self.partial_results = partial_results
        self.stream_partials = stream_partials
        self._ep = endpointer
        self._up_to = 0  # frames of the endpointer's utterance already handed to the decoder
        # A live pass for partial results is open on this decoder, in the feeding thread
        # (only without a streaming pass: see "Partial hypotheses").
        self._live = False
        # The open model's streaming pass in the streaming process (see "Streaming fallback"):
        # its id there (None: no such pass) and the audio not sent yet.
        self._sid: int | None = None
        self._unsent: list[bytes] = []
        # Its chunks whose hypotheses are wanted (partials), oldest first, and the latest
        # hypothesis it returned.
        self._hypotheses: deque[Future[Any]] = deque()
        self._streamed = ""
        self.final_source = ""  # "speculative", "stream" or "batch": where the final came from
        self._last_partial = ""
        # The final pass started when the trailing silence began (None: none, or discarded
        # because the caller went on).
        self._speculation: Future[Any] | None = None
        self.speculations = 0  # final passes started early
        self.speculations_discarded = 0  # ... of which the caller's resumed speech made stale
        self.done = False
        self.decode_seconds = 0.0  # time spent in or waiting for the final pass
        self.audio_seconds = 0.0

    # -- public ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the decoder (idempotent). An unfinished utterance is abandoned."""
        pooled, self._pooled = self._pooled, None
        self.done = True
        if pooled is None:
            return
        if self._speculation is not None:
            self._speculation.cancel()  # only stops it if it has not started yet
            self._speculation = None
        self._hypotheses.clear()
        if self._sid is not None:
            self._owner.stream(_stream_drop, self._sid)
            self._sid = None
        if self._live:
            self._live = False
            try:
                self._dec.end_utt()
            except RuntimeError:
                return  # do not pool a decoder that failed
        self._owner.release(pooled)

    # -- internals ------------------------------------------------------------------------------

    def _now(self) -> float:
        return self._ep.now

    def _finish(self, event: RecognitionEvent) -> RecognitionEvent:
        self.done = True
        if self._live:
            self._live = False
            with contextlib.suppress(RuntimeError):
                self._dec.end_utt()
        self.close()
        return event

    def _process(self) -> None:
        """Account for (and with a live pass, decode) the endpointer's new audio."""
        fresh = self._ep.utterance[self._up_to :]
        self._up_to = len(self._ep.utterance)
        for pcm16k in fresh:
            self.audio_seconds += pcm16k.size / DECODER_RATE
            if self._sid is not None:
                self._unsent.append(pcm16k.tobytes())
                if len(self._unsent) >= _STREAM_CHUNK:
                    self._send_stream()
            if self._live:
                t0 = time.perf_counter()
                self._dec.process_raw(pcm16k.tobytes(), False, False)
                self.decode_seconds += time.perf_counter() - t0

    def _feed(self, frame: Frame) -> list[RecognitionEvent]:
        what = self._ep.feed(frame)
        if what is None and not self._ep.in_speech:
            return []
        if what == "no_input":
            return [self._finish(RecognitionEvent("no_input", offset=self._now()))]
        if what == "start":
            self._start_utterance()
            return [RecognitionEvent("start_of_input", offset=self._now())]
        self._process()
        if what == "resume" or (what == "end" and not self._ep.silent_run):
            self._drop_speculation()  # the caller went on: that pass is stale
        elif what == "pause" and self._ep.silent_run >= self._speculate_at():
            self._speculate()
        if what == "end":
            return [self._finish(self._final_event())]
        text = self._partial_text()
        if text and text != self._last_partial:
            self._last_partial = text
            return [RecognitionEvent("partial", text=text, offset=self._now())]
        return []

    def _partial_text(self) -> str:
        """The hypothesis to report now, if any (see "Partial hypotheses")."""
        due = len(self._ep.utterance) % _PARTIAL_EVERY == 0
        if self._live:
            return self._hyp_text() if due else ""
        while self._hypotheses and self._hypotheses[0].done():
            job = self._hypotheses.popleft()
            # A failed job is skipped: the streaming pass's end finds the process broken.
            if not job.cancelled() and job.exception() is None and job.result() is not None:
                self._streamed = job.result()
        return self._streamed if self.stream_partials or (self.partial_results and due) else ""

    def _send_stream(self) -> None:
        chunk, self._unsent = b"".join(self._unsent), []
        if self._sid is None:
            return
        wanted = self.stream_partials or self.partial_results
        job = self._owner.stream(_stream_feed, self._sid, chunk, wanted)
        if job is None:
            self._sid = None  # the streaming process broke: no streaming pass
        elif wanted:
            self._hypotheses.append(job)

    def _end_stream(self) -> Future[Any] | None:
        """The streaming pass's result (it has nearly all the audio already)."""
        self._hypotheses.clear()
        sid, self._sid = self._sid, None
        chunk, self._unsent = b"".join(self._unsent), []
        return None if sid is None else self._owner.stream(_stream_end, sid, chunk)

    def _drop_speculation(self) -> None:
        if self._speculation is not None:
            self._speculation.cancel()  # if still queued; a running pass just ends unused
            self._speculation = None
            self.speculations_discarded += 1

    def _speculate_at(self) -> int:
        """The trailing non-speech frame at which to start the final pass early."""
        decode = len(self._ep.utterance) * self._owner.decode_rtf  # frames
        end_silence = self._ep.end_silence
        return max(_SPECULATE_AFTER, end_silence - math.ceil(decode) - _SPECULATE_MARGIN)

    def _speculate(self) -> None:
        """Start the final pass over the utterance so far in a decoding process, while the
        end-of-speech timer still runs; used at the timeout unless the caller speaks again."""
        if self._speculation is not None or self.grammar:
            return  # a grammar pass is ~10 ms: nothing to hide
        future = self._owner.submit_decode(np.concatenate(self._ep.utterance).tobytes())
        if future is not None:
            self._speculation = future
            self.speculations += 1

    def _start_utterance(self) -> None:
        if not self.grammar:
            self._owner.prepare_decoding()
        if not self.grammar and self._owner.final_pass != "batch":
            sid = next(self._owner._stream_ids)
            if self._owner.stream(_stream_begin, sid, self._owner.recent_cmn) is not None:
                self._sid = sid
        if self.partial_results and self._sid is None:
            # No streaming pass to take the partial hypotheses from: a live pass here.
            self._dec.start_utt()
            self._live = True
        self._process()  # the pre-roll

    def _hyp_text(self) -> str:
        hyp = self._dec.hyp()
        if hyp is None or not hyp.hypstr:
            return ""
        text: str = hyp.hypstr
        return self.phrases.get(text, text) if self.grammar else text

    def _final_decode(self) -> Decoded:
        # The final result decodes the whole utterance in one call with full_utt=True, so the
        # cepstral mean is estimated from this utterance itself. Streaming decoding starts
        # from whatever mean the pooled decoder last had (another call, another channel), and
        # the first utterance on a fresh decoder came out wrong in testing ("support" ->
        # "no"); the batch pass makes every session independent of its decoder's history.
        # The streaming pass is only the fallback when the batch pass would make the caller
        # wait (see "Streaming fallback").
        if self._live:
            self._dec.end_utt()  # the live pass only fed partials
            self._live = False
        speculation, self._speculation = self._speculation, None
        stream = self._end_stream()
        if stream is not None and self._owner.final_pass == "stream":
            speculation = None  # measuring the streaming pass alone
        if stream is not None and (speculation is None or not speculation.done()):
            # Whichever comes first: the batch pass if it is ready, else (usually within
            # milliseconds) the streaming pass.
            waiting = {stream} if speculation is None else {stream, speculation}
            wait(waiting, timeout=_DECODE_WAIT, return_when=FIRST_COMPLETED)
            if stream.done() and (speculation is None or not speculation.done()):
                streamed = self._result_of(stream)
                if streamed is not None:
                    if speculation is not None:
                        speculation.cancel()  # if still queued; if running it ends unused
                    self.final_source = "stream"
                    return streamed
        if speculation is not None:
            # Started when the trailing silence began: the audio since then is non-speech.
            decoded = self._wait(speculation)
            if decoded is not None:
                self.final_source = "speculative"
                return decoded
        self.final_source = "batch"
        pcm = self._ep.take_utterance().tobytes()
        if not self.grammar:
            future = self._owner.submit_decode(pcm)
            decoded = self._wait(future) if future is not None else None
            if decoded is not None:
                return decoded
        return decode_utterance(self._dec, pcm)

    def _result_of(self, stream: Future[Any]) -> Decoded | None:
        try:
            decoded: Decoded | None = stream.result(timeout=0)
            return decoded
        except Exception as exc:  # BrokenProcessPool, a decoder error over there
            log.warning("speech streaming process failed (%r)", exc)
            self._owner.drop_streamer()
            return None

    def _wait(self, future: Future[Any]) -> Decoded | None:
        """The result of a decoding process; None if the pool broke (the caller decodes)."""
        try:
            decoded: Decoded = future.result(timeout=_DECODE_WAIT)
            return decoded
        except Exception as exc:  # BrokenProcessPool, a timeout, a decoder error over there
            log.warning("speech decoding process failed (%r): decoding in-process", exc)
            self._owner.drop_pool()
            return None

    def _final_event(self) -> RecognitionEvent:
        t0 = time.perf_counter()
        decoded = self._final_decode()
        self._ep.utterance = []
        self.decode_seconds += time.perf_counter() - t0
        now = self._now()
        if not self._ep.voice_like:
            return RecognitionEvent("no_match", offset=now)  # hiss/static, not a voice
        text = decoded.text
        if not text:
            return RecognitionEvent("no_match", offset=now)
        words = decoded.words
        if self.grammar:
            word_frames = sum(end - start + 1 for _, start, end, _ in words)  # 10 ms frames
            coverage = word_frames / (2.0 * max(self._ep.speech_frames, 1))
            confidence = min(1.0, coverage / _FULL_COVERAGE)
            threshold = self._owner.grammar_min_confidence
            text = self.phrases.get(text, text)
        else:
            probs = [min(max(p, 1e-3), 1.0) for *_, p in words] or [1e-3]
            confidence = math.exp(sum(math.log(p) for p in probs) / len(probs))
            threshold = self._owner.lm_min_confidence
        confidence = round(min(max(confidence, 0.0), 1.0), 3)
        if confidence < threshold:
            return RecognitionEvent("no_match", text=text, confidence=confidence, offset=now)
        return RecognitionEvent("final", text=text, confidence=confidence, offset=now)


# ---------------------------------------------------------------------------------------------
# asyncio wrapper


class AsyncRecognition:
    """Runs a :class:`RecognitionSession` off the event loop (see "Threading" above).

    ``push`` from the media listener; read events with ``await next_event()`` or
    ``async for event in recognition`` (ends after the terminal event); ``await aclose()``.
    """

    def __init__(self, session: RecognitionSession) -> None:
        self.session = session
        self._pending: list[Frame] = []
        self._events: asyncio.Queue[RecognitionEvent] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._terminal = False

    @classmethod
    async def open(cls, recognizer: SpeechRecognizer, **kwargs: Any) -> AsyncRecognition:
        session = await asyncio.to_thread(recognizer.open_session, **kwargs)
        return cls(session)

    def push(self, frame: Frame) -> None:
        """Queue one frame (non-blocking; the frame is copied)."""
        if self._closed or self._terminal:
            return
        self._pending.append(np.array(frame, dtype=np.int16, copy=True))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._drain())

    def start_timers(self) -> None:
        self.session.start_timers()  # a bool store: safe to do from the loop thread

    async def _drain(self) -> None:
        while self._pending and not self._terminal:
            batch, self._pending = self._pending, []
            events = await asyncio.to_thread(self.session.feed_many, batch)
            for event in events:
                self._events.put_nowait(event)
                if event.terminal:
                    self._terminal = True
                    self._pending.clear()

    async def next_event(self) -> RecognitionEvent:
        return await self._events.get()

    def __aiter__(self) -> AsyncRecognition:
        return self

    async def __anext__(self) -> RecognitionEvent:
        if self._terminal and self._events.empty():
            raise StopAsyncIteration
        return await self._events.get()

    async def aclose(self) -> None:
        self._closed = True
        if self._worker is not None:
            try:
                await self._worker
            except Exception:
                log.exception("recognition worker failed")
        await asyncio.to_thread(self.session.close)
