"""`calling.transcribe` / `calling.transcribe.stop` and SWML `transcribe` / `transcribe_stop`:
whole-call background transcription (reference §4.20, §4.21, §7.4, §9 item 23; swml.md).

What is transcribed
-------------------
The far end's voice: each media tick's ``inbound`` frame (docs/architecture.md, "Media
directions").
callplane's own side is what it plays (TTS prompts, files), which the application already
knows, and transcribing it too would double the decoding cost and turn the spec's single
``text`` into a labelled dialogue no §7.4 consumer expects. Only inbound audio is heard.

How
---
One :class:`TranscribeOperation` per call (a second start while one runs answers **409**; once
it has ended a new one may start). It feeds the inbound audio to the server's recognizer
(``Services.recognizer``, pocketsphinx's open language model, English only) one utterance at a
time: the recognizer's endpointing ends an utterance after :data:`END_SILENCE` s of
non-speech, its text becomes one segment of the transcript, and the next frame opens the next
session (no input timer: a session waits for speech as long as the call lasts; an utterance
longer than the recognizer's 30 s cap is cut there and continued in the next session).

Decoding never runs on the event loop. The media listener only appends frames to a list; a
single worker task hands everything queued to a thread (``asyncio.to_thread``), where the
synchronous :class:`Transcriber` feeds the frames, opens the next session when one ends, and
decodes each finished utterance. One worker per transcription means one thread at a time per
decoder (the sessions are not thread-safe), and one hop per batch keeps the hop cost
negligible. This is :class:`~callplane.providers.asr.AsyncRecognition`'s scheme, done here
rather than through it because a transcription is a chain of sessions: frames arriving while
the next session opens must go to it, not be lost, so the session switch happens in the
thread, between two frames. The recognizer runs each utterance's final pass in its
decoding processes, started when the trailing silence begins (``providers.asr``, "Decoding
processes"): a segment is ready as the silence timer ends, and decoding never holds the GIL
that the media clock needs. The AI agent (``operations.ai``) hears its caller through the same
:class:`Transcriber`.

The media engine delivers one tick every 20 ms whether or not the far end sends RTP (silence
where nothing arrived), so the recognizer's clock keeps running through silence suppression or
hold, and an utterance ends when the talker goes quiet even if the RTP stops.

Ending
------
``calling.transcribe.stop``, SWML ``transcribe_stop`` or the call ending: the listener is
detached, the frames already queued are decoded, an utterance still open is ended by feeding
:data:`END_SILENCE` s of silence (so the last words count), and then **one** callback goes to
``status_url`` and into the call's event log:

* ``calling.transcript.completed`` ``{id, call_id, segment_id, text?}``: ``text`` is the
  segments joined by spaces (lower-case words, no punctuation), omitted when nothing was
  recognised;
* ``calling.transcript.failed`` ``{id, call_id, segment_id}``: the recognizer could not load
  or failed while decoding (a transcription that fails stops at once; it does not wait for
  the call to end).

``id`` is the transcript's id (a fresh UUID per transcription), ``segment_id`` the call's.
The stop command returns at once; the callback follows when the last utterance is decoded
(well under a second for a sentence). When the call ends the engine waits up to 2 s for it, so
it normally precedes the call's ``ended`` event.

Envelope (workaround): the §7.4 callback has no ``event_channel`` and no ``node_id``, but the
only webhook path an operation module has is ``Services.emit``, which builds the §7.1
envelope. The callbacks therefore carry the §7.4 fields *plus* ``event_channel`` and
``params.node_id``, a superset any §7.4 consumer accepts. (``_TranscriptCallback`` exists only
to give ``Services.emit`` the event type and URL it reads from an operation.)

RELAY-style state events: ``calling.call.transcribe`` ``{control_id, state, transcript_id}``
with ``state`` ``transcribing`` -> ``finished`` (or ``error``) are written to the call's event
log only (``Services.record_event``), never to ``status_url``: the reference documents only the
transcript callbacks there, and RELAY's recording fields (url, size) do not exist here.

SWML: ``transcribe`` answers the call if needed, starts a transcription with a generated
control id and sets ``transcribe_result`` (``success`` | ``failed``) and
``transcribe_control_id``; ``transcribe_stop`` stops the running one, waits (up to
:data:`_SWML_STOP_WAIT` s) for its callback and sets ``transcribe_stop_result`` (``success`` |
``failed`` when none was running or it failed).

A server without a recognizer answers **501** to ``calling.transcribe`` (SWML: the method is
reported unsupported and the script stops, as for a speech ``prompt``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from callplane.engine.calls import CallStatus
from callplane.engine.facade import CommandError
from callplane.engine.operations.base import (
    Emit,
    Operation,
    control_id_of,
    lookup,
    register_started,
    require_answered,
)
from callplane.engine.services import CommandHandler, Services, SwmlMethod
from callplane.engine.swml.errors import SwmlError, SwmlMethodNotSupported
from callplane.media.sources import FRAME_SAMPLES, SAMPLE_RATE
from callplane.providers.asr import AsrError, RecognitionSession, SpeechRecognizer

if TYPE_CHECKING:
    from callplane.engine.calls import Call
    from callplane.media.engine import TickFrames
    from callplane.media.sources import Frame

log = logging.getLogger("callplane.engine.transcribe")

TRANSCRIPT_COMPLETED = "calling.transcript.completed"
TRANSCRIPT_FAILED = "calling.transcript.failed"
LANGUAGE = "en-US"
# Trailing non-speech that ends an utterance (one transcript segment). Shorter than collect's
# default 1 s: a pause between sentences is often under a second, and short utterances decode
# as well as long ones with the open language model.
END_SILENCE = 0.7
_FLUSH_FRAMES = int((END_SILENCE + 0.3) * SAMPLE_RATE / FRAME_SAMPLES)
_SWML_STOP_WAIT = 10.0
_SILENCE: Frame = np.zeros(FRAME_SAMPLES, dtype=np.int16)


class TranscriptionFailed(RuntimeError):
    """The recognizer reported an error or could not open a session."""


@dataclass(frozen=True, slots=True)
class Utterance:
    """One recognised utterance (or, ``final`` False, a partial hypothesis of one), timed in
    seconds of audio since the transcriber's first frame (one frame per media tick)."""

    text: str
    start: float
    end: float
    final: bool = True
    confidence: float | None = None


# The recognizer opens an utterance after 3 frames of speech (providers.asr's onset rule).
_ONSET = 0.06


class Transcriber:
    """Synchronous, thread-side: a chain of recognition sessions over one audio stream, each
    ending at the end of an utterance. Not thread-safe: one feeder at a time.

    ``segments`` holds the text of each utterance; ``results`` the same as timed
    :class:`Utterance` s, with the recognizer's partial hypotheses in between when
    ``partial_results`` is set (live transcription's interim events) or, only where they cost
    no extra decoding, ``stream_partials`` (the voice agent's ``barge_min_words``; see
    ``providers.asr``, "Partial hypotheses")."""

    def __init__(
        self,
        recognizer: SpeechRecognizer,
        *,
        end_silence: float = END_SILENCE,
        language: str = LANGUAGE,
        partial_results: bool = False,
        stream_partials: bool = False,
    ) -> None:
        self._recognizer = recognizer
        self._end_silence = end_silence
        self._language = language
        self._partial_results = partial_results
        self._stream_partials = stream_partials
        self._session: RecognitionSession | None = None
        self.segments: list[str] = []
        self.results: list[Utterance] = []
        self.utterances = 0  # utterances the recognizer ended (with or without text)
        self._frames = 0  # frames fed in total
        self._base = 0  # frames fed before the current session opened
        self._onset: float | None = None  # start of the current utterance

    @property
    def text(self) -> str:
        return " ".join(self.segments)

    def feed(self, frames: Sequence[Frame]) -> None:
        """Feed 160-sample frames (one per media tick). Raises TranscriptionFailed."""
        for frame in frames:
            self._feed_frame(frame)

    def flush(self) -> None:
        """End an utterance in progress by feeding silence, so its words are not lost."""
        for _ in range(_FLUSH_FRAMES):
            if self._session is None:
                return
            self._feed_frame(_SILENCE)

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()

    def _feed_frame(self, frame: Frame) -> None:
        if self._session is None:
            try:
                self._session = self._recognizer.open_session(
                    self._language,
                    end_silence_timeout=self._end_silence,
                    partial_results=self._partial_results,
                    timers_started=False,
                    stream_partials=self._stream_partials,
                )
            except (AsrError, ValueError) as exc:
                raise TranscriptionFailed(f"cannot start speech recognition: {exc}") from exc
            self._base = self._frames
            self._onset = None
        self._frames += 1
        base = self._base / (SAMPLE_RATE / FRAME_SAMPLES)
        for event in self._session.feed(frame):
            if event.type == "start_of_input":
                self._onset = max(0.0, base + event.offset - _ONSET)
            elif event.type == "partial" and event.text:
                at = base + event.offset
                start = at if self._onset is None else self._onset
                self.results.append(Utterance(event.text, start, at, final=False))
            if not event.terminal:
                continue
            self.close()
            self.utterances += 1
            if event.type == "error":
                raise TranscriptionFailed(event.error or "speech recognition failed")
            # `no_match` with text: a voice, recognised with low confidence. A transcript keeps
            # those words (a dropped sentence costs more than a misheard word); `no_match`
            # without text is noise or static, `no_input` cannot happen (no timers).
            if event.text:
                self.segments.append(event.text)
                # The utterance ended once `end_silence` of non-speech had followed it.
                start = base if self._onset is None else self._onset
                end = max(base + event.offset - self._end_silence, start)
                self.results.append(Utterance(event.text, start, end, True, event.confidence))


class TranscribeOperation(Operation):
    kind = "transcribe"
    event_type = "calling.call.transcribe"  # state events, event log only (module docstring)
    initial_state = "transcribing"
    transitions: ClassVar[Mapping[str, frozenset[str]]] = {
        "transcribing": frozenset({"finished", "error"}),
    }

    def __init__(
        self,
        call: Call,
        control_id: str,
        status_url: str | None,
        emit: Emit,
        *,
        services: Services,
        recognizer: SpeechRecognizer,
    ) -> None:
        super().__init__(call, control_id, status_url, emit)
        self.transcript_id = str(uuid.uuid4())
        self.text: str | None = None
        self._services = services
        self._transcriber = Transcriber(recognizer)
        self._pending: list[Frame] = []
        self._worker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._listening = False
        self._ending = False
        self._failure: Exception | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Begin listening (the caller has registered the operation)."""
        if self.call.media is None:
            raise CommandError(422, "invalid_state", f"call {self.call.id} has no media", "id")
        self.call.media.add_listener(self._on_frame)
        self._listening = True
        self.report({"state": "transcribing", "transcript_id": self.transcript_id})

    async def stop(self) -> None:
        """Command `.stop`, SWML `transcribe_stop` or the call ending: stop listening now; the
        callback follows once the audio already heard is decoded (`done` resolves then)."""
        if self.is_terminal or self._ending:
            return
        self._spawn(self._conclude(None))

    # ------------------------------------------------------------------ audio in

    def _on_frame(self, frames: TickFrames) -> None:
        if self._ending:
            return
        # TickFrames' frames are owned copies: kept as they are.
        self._pending.append(frames.inbound)
        if self._worker is None or self._worker.done():
            self._worker = self._spawn(self._drain())

    async def _drain(self) -> None:
        while self._pending and not self._ending:
            batch, self._pending = self._pending, []
            try:
                await asyncio.to_thread(self._transcriber.feed, batch)
            except Exception as exc:  # TranscriptionFailed, or a bug: either way it is over
                if not isinstance(exc, TranscriptionFailed):
                    log.exception("transcribe %s: decoding failed", self.control_id)
                self._failure = exc
                self._spawn(self._conclude(exc))
                return

    # ------------------------------------------------------------------ the end

    async def _conclude(self, failure: Exception | None) -> None:
        if self._ending:
            return
        self._ending = True
        self._detach()
        try:
            worker = self._worker
            if worker is not None and worker is not asyncio.current_task():
                await worker  # the batch being decoded
            failure = failure or self._failure  # the worker may have failed meanwhile
            if failure is None:
                # Frames queued but not yet handed to the worker, then the open utterance.
                batch, self._pending = self._pending, []
                await asyncio.to_thread(self._finish_audio, batch)
        except TranscriptionFailed as exc:
            failure = exc
        except Exception as exc:  # a bug must still end the transcription with a callback
            log.exception("transcribe %s on call %s failed", self.control_id, self.call.id)
            failure = exc
        finally:
            self._pending = []
            await asyncio.to_thread(self._transcriber.close)
        params: dict[str, Any] = {
            "id": self.transcript_id,
            "call_id": self.call.id,
            "segment_id": self.call.segment_id,
        }
        if failure is None:
            event_type = TRANSCRIPT_COMPLETED
            text = self._transcriber.text
            if text:
                params["text"] = self.text = text
        else:
            event_type = TRANSCRIPT_FAILED
            log.warning(
                "transcribe %s on call %s failed: %s", self.control_id, self.call.id, failure
            )
        # Reference §7.4: no event_channel, no node_id.
        payload = {
            "event_type": event_type,
            "timestamp": time.time(),
            "project_id": self.call.project_id,
            "space_id": self._services.config.space_id,
            "params": params,
        }
        self._services.deliver(self.call, payload, self.status_url)
        self.move("finished" if failure is None else "error", transcript_id=self.transcript_id)

    def _finish_audio(self, batch: list[Frame]) -> None:
        self._transcriber.feed(batch)
        self._transcriber.flush()

    def _detach(self) -> None:
        if self._listening and self.call.media is not None:
            self.call.media.remove_listener(self._on_frame)
        self._listening = False

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"transcribe-{self.control_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


# ---------------------------------------------------------------------------------------------
# starting and stopping


def _recognizer(services: Services) -> SpeechRecognizer:
    recognizer = services.recognizer
    if recognizer is None:
        raise CommandError(
            501,
            "not_implemented",
            "transcription needs pocketsphinx, which is not installed on this server",
        )
    if not recognizer.supports(LANGUAGE):  # pragma: no cover - every recognizer speaks English
        raise CommandError(501, "not_implemented", "no English speech model on this server")
    return recognizer


def running_transcription(call: Call) -> TranscribeOperation | None:
    return next(
        (op for op in call.operations.values() if isinstance(op, TranscribeOperation)), None
    )


def start_transcribe(
    services: Services, call: Call, *, control_id: str, status_url: str | None
) -> TranscribeOperation:
    recognizer = _recognizer(services)
    running = running_transcription(call)
    if running is not None:
        raise CommandError(
            409,
            "invalid_state",
            f"call {call.id} is already being transcribed (control_id {running.control_id!r})",
            "control_id",
        )

    def log_only(op: Operation, params: dict[str, Any]) -> None:
        services.record_event(op.call, op.event_type, params)

    op = TranscribeOperation(
        call, control_id, status_url, log_only, services=services, recognizer=recognizer
    )
    register_started(call, op, op.start)
    return op


async def _transcribe(services: Services, call: Call, p: dict[str, Any]) -> None:
    require_answered(call, "transcribed")
    start_transcribe(
        services,
        call,
        # Optional in the SDK (reference §9 #2): generate one, as play does.
        control_id=control_id_of(p),
        status_url=p.get("status_url"),
    )


async def _stop(services: Services, call: Call, p: dict[str, Any]) -> None:
    await lookup(call, TranscribeOperation, p).stop()


async def swml_transcribe(
    services: Services, call: Call, params: dict[str, Any]
) -> dict[str, Any] | None:
    """SWML `transcribe`: start a background transcription; the script continues at once."""
    if call.status is not CallStatus.ANSWERED:
        await services.answer(call)
    if call.media is None:
        raise SwmlError("transcribe needs an answered call with media")
    control_id = f"swml-transcribe-{uuid.uuid4()}"
    try:
        start_transcribe(services, call, control_id=control_id, status_url=params.get("status_url"))
    except CommandError as exc:
        if exc.status == 501:
            raise SwmlMethodNotSupported("transcribe", exc.message) from exc
        log.info("SWML transcribe on call %s: %s", call.id, exc.message)
        running = running_transcription(call)
        return {
            "transcribe_result": "failed",
            "transcribe_control_id": running.control_id if running else "",
        }
    return {"transcribe_result": "success", "transcribe_control_id": control_id}


async def swml_transcribe_stop(
    services: Services, call: Call, params: dict[str, Any]
) -> dict[str, Any] | None:
    """SWML `transcribe_stop`: stop the running transcription and wait for its callback."""
    op = running_transcription(call)
    if op is None:
        return {"transcribe_stop_result": "failed"}
    await op.stop()
    try:
        outcome = await asyncio.wait_for(asyncio.shield(op.done), _SWML_STOP_WAIT)
    except TimeoutError:
        outcome = "error"
    return {"transcribe_stop_result": "success" if outcome == "finished" else "failed"}


COMMANDS: dict[str, CommandHandler] = {
    "calling.transcribe": _transcribe,
    "calling.transcribe.stop": _stop,
}
SWML_METHODS: dict[str, SwmlMethod] = {
    "transcribe": swml_transcribe,
    "transcribe_stop": swml_transcribe_stop,
}
