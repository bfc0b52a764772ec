"""`calling.live_transcribe` / `calling.live_translate` and SWML `live_transcribe` /
`live_translate` (reference §4.25, §4.26; swml.md §2.1): real-time transcription of a leg's two
sides to a webhook, and real-time translation spoken to the other side.

The payloads are in docs/live.md; the design in docs/architecture.md ("Live transcription and
translation").

Directions on a leg
-------------------
``remote-caller`` is the leg's far end: what its party says (``party_frame`` ``speak``: the
inbound audio plus speak-direction playbacks). ``local-caller`` is what the leg hears
(``party_frame`` ``listen``: its outbound audio, i.e. the bridged peer's voice and whatever is
played to the leg). Each requested direction gets its own recognition chain
(:class:`~callplane.engine.operations.transcribe.Transcriber`), fed off the event loop by one
worker per chain; ``vad_silence_ms`` of trailing non-speech ends an utterance.

Translation speaks into the leg's outbound audio (a ``LiveSource`` played on the leg), which is
exactly what ``local-caller`` hears: while a translation plays on the leg (and 100 ms after),
the ``local-caller`` chain is fed silence, so callplane never translates its own voice.

One live transcription and one live translation at most per call (a second start: 409); the
call's end stops them, flushing the last utterance.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from callplane.engine.calls import CallStatus
from callplane.engine.facade import CommandError
from callplane.engine.operations.base import Operation, register_started, require_answered
from callplane.engine.operations.speech import complete, synthesise
from callplane.engine.operations.transcribe import Transcriber, TranscriptionFailed, Utterance
from callplane.engine.services import CommandHandler, Services, SwmlMethod
from callplane.engine.swml.errors import SwmlError, SwmlMethodNotSupported
from callplane.media.sinks import party_frame
from callplane.media.sources import FRAME_SAMPLES, LiveSource
from callplane.providers.llm import LlmError

if TYPE_CHECKING:
    from callplane.engine.calls import Call
    from callplane.media.engine import Playback, TickFrames
    from callplane.media.sources import Frame
    from callplane.providers.asr import SpeechRecognizer

log = logging.getLogger("callplane.engine.live")

TRANSCRIBE_EVENT = "calling.call.live_transcribe"
TRANSLATE_EVENT = "calling.call.live_translate"
REMOTE = "remote-caller"
LOCAL = "local-caller"
SIDES = (REMOTE, LOCAL)
# pocketsphinx splits a sentence at a 300-500 ms pause (the other engines' defaults), so
# callplane's default is the `transcribe` one.
DEFAULT_VAD_SILENCE_MS = 700
_RECOGNIZER_HANGOVER = 0.2  # providers.asr counts voicing as speech 200 ms past the voice
_MUTE_TICKS = 5  # local-caller stays deaf this long after a translation stopped playing
_LIVE_FRAMES = 50 * 120  # two minutes of translated speech may be queued on a leg
_SILENT: Frame = np.zeros(FRAME_SAMPLES, dtype=np.int16)
_SILENT.flags.writeable = False

DEFAULT_SUMMARY_PROMPT = (
    "Summarise this phone call transcript in a few sentences: who said what, what was "
    "decided and what is left to do."
)
FILTERS = {
    "polite": "Make the translation polite and courteous.",
    "rude": "Make the translation blunt and rude (no slurs).",
    "professional": "Make the translation formal and professional, as in business.",
    "shakespeare": "Render the translation in the style of Shakespeare's English.",
    "gen-z": "Render the translation in Gen Z slang.",
}


@dataclass(eq=False)
class _Chain:
    """One direction's recognition: frames queued by the media listener, decoded by a worker."""

    side: str
    lang: str
    transcriber: Transcriber
    pending: list[Frame] = field(default_factory=list)
    worker: asyncio.Task[None] | None = None


@dataclass(frozen=True)
class _Target:
    """What `Services.emit` needs to store an event and send it to a URL of our choice."""

    call: Call
    event_type: str
    status_url: str | None


class LiveOperation(Operation):
    """What live transcription and translation share: the recognition chains, the utterance
    events, the transcript and its summary."""

    initial_state = "new"
    transitions: ClassVar[Mapping[str, frozenset[str]]] = {
        "new": frozenset({"started", "error"}),
        "started": frozenset({"finished", "error"}),
    }

    def __init__(
        self,
        call: Call,
        services: Services,
        recognizer: SpeechRecognizer,
        start: Mapping[str, Any],
        *,
        sides: Mapping[str, str],  # side -> the language recognised on it
        status_url: str | None,
        webhook: str | None,
    ) -> None:
        super().__init__(call, f"{self.kind}-{uuid.uuid4()}", status_url, services.emit)
        self._services = services
        self.webhook = webhook
        self.live_events = bool(start.get("live_events"))
        self.ai_summary = bool(start.get("ai_summary"))
        self.summary_prompt = str(start.get("ai_summary_prompt") or "") or None
        silence_ms = start.get("vad_silence_ms")
        silence = (DEFAULT_VAD_SILENCE_MS if silence_ms is None else int(silence_ms)) / 1000
        end_silence = max(0.1, silence - _RECOGNIZER_HANGOVER)
        self.chains = [
            _Chain(
                side,
                lang,
                Transcriber(
                    recognizer,
                    end_silence=end_silence,
                    language=lang,
                    partial_results=self.live_events,
                ),
            )
            for side, lang in sides.items()
        ]
        self.started_at = time.time()
        self.transcript: list[dict[str, Any]] = []  # final utterances, in order
        self._tasks: set[asyncio.Task[None]] = set()
        self._listening = False
        self.ending = False
        self._failure: Exception | None = None
        self._sequence = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        media = self.call.media
        if media is None:
            raise CommandError(422, "invalid_state", f"call {self.call.id} has no media", "id")
        media.add_listener(self._on_frame)
        self._listening = True
        self.move("started", **self._describe())

    def _describe(self) -> dict[str, Any]:
        return {"direction": [c.side for c in self.chains]}

    async def stop(self) -> None:
        """`stop`, or the call ending: stop listening now; the last utterances, the summary
        (with `ai_summary`) and `finished` follow once the audio already heard is decoded."""
        if self.ending or self.is_terminal:
            return
        self.ending = True
        self.spawn(self._conclude())

    async def _conclude(self) -> None:
        self._detach()
        failed: Exception | None = None
        for chain in self.chains:
            try:
                worker = chain.worker
                if worker is not None and worker is not asyncio.current_task():
                    await worker  # the batch being decoded
                if self._failure is None:
                    # Frames queued but not yet handed to the worker, then the open utterance.
                    batch, chain.pending = chain.pending, []
                    await asyncio.to_thread(_finish_audio, chain.transcriber, batch)
                    self._publish(chain)
            except Exception as exc:  # TranscriptionFailed or a bug: still end with an event
                if not isinstance(exc, TranscriptionFailed):
                    log.exception("%s %s: decoding failed", self.kind, self.control_id)
                failed = failed or exc
            finally:
                chain.pending = []
                await asyncio.to_thread(chain.transcriber.close)
        failed = failed or self._failure
        await self._wind_down()
        if self.ai_summary:
            await self.summarize(None, self.summary_prompt)
        if failed is None:
            self.move("finished")
        else:
            self.move("error", error=str(failed))

    async def _wind_down(self) -> None:
        """What a subclass stops before the summary (translation: its voices)."""

    def _detach(self) -> None:
        if self._listening and self.call.media is not None:
            self.call.media.remove_listener(self._on_frame)
        self._listening = False

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"{self.kind}-{self.control_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ audio in

    def deaf(self, frames: TickFrames, side: str) -> bool:
        """Whether `side`'s audio this tick is callplane's own voice (not transcribed)."""
        return False

    def _on_frame(self, frames: TickFrames) -> None:
        if self.ending:
            return
        for chain in self.chains:
            if chain.side == REMOTE:
                frame = party_frame(frames, "speak")
            else:
                frame = _SILENT if self.deaf(frames, LOCAL) else party_frame(frames, "listen")
            chain.pending.append(frame)
            if chain.worker is None or chain.worker.done():
                chain.worker = self.spawn(self._drain(chain))

    async def _drain(self, chain: _Chain) -> None:
        while chain.pending and not self.ending:
            batch, chain.pending = chain.pending, []
            try:
                await asyncio.to_thread(chain.transcriber.feed, batch)
            except Exception as exc:
                # As `transcribe`: a recognizer that fails (a model that cannot load) would
                # fail again on every frame, so the session ends, saying why.
                if not isinstance(exc, TranscriptionFailed):
                    log.exception("%s %s: decoding failed", self.kind, self.control_id)
                log.error("%s on call %s: recognition failed: %s", self.kind, self.call.id, exc)
                self._failure = self._failure or exc
                await self.stop()
                return
            self._publish(chain)

    def _publish(self, chain: _Chain) -> None:
        # Called between two feeds (never while the chain's thread runs): taking the results
        # out keeps a long call's partial hypotheses from piling up.
        fresh = list(chain.transcriber.results)
        chain.transcriber.results.clear()
        for u in fresh:
            if not u.final and not self.live_events:
                continue
            params = self._utterance(chain, u)
            if u.final:
                self.transcript.append(params)
            self.send(params)
            if u.final and not self.ending:
                self.on_final(chain.side, u.text)

    def _utterance(self, chain: _Chain, u: Utterance) -> dict[str, Any]:
        if u.final:
            self._sequence += 1
        params: dict[str, Any] = {
            "state": "utterance",
            "utterance_id": self._sequence if u.final else None,
            "direction": chain.side,
            "lang": chain.lang,
            "text": u.text,
            "final": u.final,
            "start_ms": round(u.start * 1000),
            "end_ms": round(u.end * 1000),
            "start_time": round(self.started_at + u.start, 3),
            "end_time": round(self.started_at + u.end, 3),
        }
        if u.confidence is not None:
            params["confidence"] = u.confidence
        if not u.final:
            del params["utterance_id"]
        return params

    def on_final(self, side: str, text: str) -> None:
        """A final utterance of `side` (translation translates it)."""

    def send(self, params: dict[str, Any], url: str | None = None) -> None:
        """A content event (utterance, translation, summary) to the webhook and the call's
        event log."""
        target = _Target(self.call, self.event_type, url or self.webhook)
        self._services.emit(target, {"control_id": self.control_id, **params})

    # ------------------------------------------------------------------ summary

    def summary_instructions(self, prompt: str | None) -> str:
        return prompt or DEFAULT_SUMMARY_PROMPT

    async def summarize(self, webhook: str | None, prompt: str | None) -> None:
        """Ask the language model for a summary of the transcript so far; the summary (or
        why there is none) goes to `webhook` (default: the start's)."""
        params: dict[str, Any] = {"state": "summary", "utterances": len(self.transcript)}
        llm = self._services.llm
        if llm is None:
            params["error"] = (
                "no language model is configured on this server (--llm-url, --llm-model)"
            )
        elif not self.transcript:
            params["summary"] = ""
        else:
            lines = "\n".join(f"{u['direction']}: {u['text']}" for u in self.transcript)
            messages = [
                {"role": "system", "content": self.summary_instructions(prompt)},
                {"role": "user", "content": lines},
            ]
            try:
                params["summary"] = await complete(llm, messages)
            except LlmError as exc:
                params["error"] = f"the language model failed: {exc}"
        if "error" in params:
            log.error("%s on call %s: no summary: %s", self.kind, self.call.id, params["error"])
        self.send(params, webhook)


def _finish_audio(transcriber: Transcriber, batch: list[Frame]) -> None:
    transcriber.feed(batch)
    transcriber.flush()


class LiveTranscribeOperation(LiveOperation):
    kind = "live_transcribe"
    event_type = TRANSCRIBE_EVENT

    def _describe(self) -> dict[str, Any]:
        return {**super()._describe(), "lang": self.chains[0].lang if self.chains else None}


# -------------------------------------------------------------------------------- translation


@dataclass(eq=False)
class _Voice:
    """Translated speech played on one leg for the translation's lifetime."""

    call: Call
    live: LiveSource
    playback: Playback
    media: Any


class LiveTranslateOperation(LiveOperation):
    """Each final utterance is translated by the language model and spoken to the other side:
    ``remote-caller`` (speaking ``from_lang``) to the bridged peer in ``to_lang``, ``local-caller``
    (speaking ``to_lang``) to the leg's own party in ``from_lang``; on an unbridged leg
    everything is spoken to the leg's party."""

    kind = "live_translate"
    event_type = TRANSLATE_EVENT
    writes_audio = True

    def __init__(
        self,
        call: Call,
        services: Services,
        recognizer: SpeechRecognizer,
        start: Mapping[str, Any],
        *,
        sides: Mapping[str, str],
        status_url: str | None,
        webhook: str | None,
        skipped: Mapping[str, str],
    ) -> None:
        super().__init__(
            call, services, recognizer, start, sides=sides, status_url=status_url, webhook=webhook
        )
        self.from_lang = str(start["from_lang"])
        self.to_lang = str(start["to_lang"])
        # Voices and filters belong to the language spoken: `*_from` for speech into
        # from_lang (to the leg's party), `*_to` for speech into to_lang (to the other side).
        self._voice_of = {REMOTE: start.get("from_voice"), LOCAL: start.get("to_voice")}
        self._filter_of = {REMOTE: start.get("filter_from"), LOCAL: start.get("filter_to")}
        self._skipped = dict(skipped)
        self._jobs: asyncio.Queue[tuple[str, str, str | None]] = asyncio.Queue()
        self._voices: dict[str, _Voice] = {}
        self._mute_until = -1
        self._worker: asyncio.Task[None] | None = None

    def _describe(self) -> dict[str, Any]:
        described = {**super()._describe(), "from_lang": self.from_lang, "to_lang": self.to_lang}
        if self._skipped:
            described["not_recognised"] = self._skipped
        return described

    def start(self) -> None:
        super().start()
        self._worker = self.spawn(self._translate_loop())

    def language_of(self, side: str) -> str:
        return self.from_lang if side == REMOTE else self.to_lang

    # ------------------------------------------------------------------ who hears what

    def leg_of(self, side: str) -> Call:
        """The leg whose party is `side`: the bridged peer is the local caller; without a
        bridge callplane itself is, and what is meant for it is spoken to the leg's party."""
        bridge = self.call.bridge
        if side == LOCAL and bridge is not None and bridge.active:
            return bridge.other(self.call)
        return self.call

    def deaf(self, frames: TickFrames, side: str) -> bool:
        voice = self._voices.get(self.call.id)
        if voice is not None and voice.live.queued_frames:
            self._mute_until = frames.tick + _MUTE_TICKS
        return frames.tick <= self._mute_until

    def _voice(self, leg: Call) -> _Voice | None:
        media = leg.media
        if media is None or leg.is_terminal or getattr(media, "closed", False):
            return None
        voice = self._voices.get(leg.id)
        if voice is not None and voice.media is media and not voice.live.closed:
            return voice
        live = LiveSource(f"live_translate({self.control_id})", max_frames=_LIVE_FRAMES)
        voice = _Voice(leg, live, media.play(live), media)
        self._voices[leg.id] = voice
        return voice

    # ------------------------------------------------------------------ translating

    def on_final(self, side: str, text: str) -> None:
        other = LOCAL if side == REMOTE else REMOTE
        self._jobs.put_nowait((other, text, side))

    def inject(self, message: str, side: str) -> None:
        """`inject`: `message` translated into `side`'s language and spoken to it."""
        self._jobs.put_nowait((side, message, None))

    def instructions(self, source: str | None, to_side: str) -> str:
        """The system prompt of one translation: the languages and the filter of the
        language spoken (`filter_from` into from_lang, `filter_to` into to_lang)."""
        src = f"from {source} " if source else ""
        text = (
            f"You are a live interpreter on a phone call. Translate the user's message "
            f"{src}into {self.language_of(to_side)}. Answer with the translation only: "
            "no quotes, no notes."
        )
        preset = str(self._filter_of.get(to_side) or "")
        if preset.startswith("prompt:"):
            text += " " + preset[len("prompt:") :].strip()
        elif preset in FILTERS:
            text += " " + FILTERS[preset]
        return text.strip()

    async def _translate_loop(self) -> None:
        while True:
            to_side, text, from_side = await self._jobs.get()
            try:
                await self._translate(to_side, text, from_side)
            except Exception:  # a bug in one translation must not end the others
                log.exception("live_translate on call %s failed", self.call.id)

    async def _translate(self, to_side: str, text: str, from_side: str | None) -> None:
        target_lang = self.language_of(to_side)
        source_lang = self.language_of(from_side) if from_side else None
        llm = self._services.llm
        params: dict[str, Any] = {
            "state": "translation",
            "direction": from_side or "inject",
            "to": to_side,
            "from_lang": source_lang,
            "to_lang": target_lang,
            "text": text,
        }
        if from_side is None:
            params["injected"] = True
        if llm is None:  # pragma: no cover - start refuses a translation without a model
            return
        messages = [
            {"role": "system", "content": self.instructions(source_lang, to_side)},
            {"role": "user", "content": text},
        ]
        try:
            translation = await complete(llm, messages)
        except LlmError as exc:
            log.error("live_translate on call %s: the model failed: %s", self.call.id, exc)
            self.send({**params, "state": "translation_error", "error": str(exc)})
            return
        leg = self.leg_of(to_side)
        params["translation"] = translation
        params["spoken_to"] = leg.id
        self.send(params)
        if translation and not self.ending:
            await self._speak(leg, translation, target_lang, self._voice_of[to_side])

    async def _speak(self, leg: Call, text: str, language: str, voice: Any) -> None:
        samples = await synthesise(
            self._services.audio, text, language=language, voice=str(voice) if voice else None
        )
        target = self._voice(leg)
        if target is not None and not self.ending:
            target.live.push(samples)

    async def _wind_down(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        for voice in self._voices.values():
            voice.live.close()
            voice.playback.stop()
        self._voices.clear()

    def summary_instructions(self, prompt: str | None) -> str:
        return (prompt or DEFAULT_SUMMARY_PROMPT) + (
            f" Write the summary twice: in {self.from_lang}, then in {self.to_lang}."
        )


# ---------------------------------------------------------------------- REST and SWML


def _recognizer(services: Services, what: str) -> SpeechRecognizer:
    if services.recognizer is None:
        raise CommandError(
            501,
            "not_implemented",
            f"{what} needs pocketsphinx, which is not installed on this server",
        )
    return services.recognizer


def _running(call: Call, kind: type[LiveOperation]) -> LiveOperation | None:
    return next(
        (op for op in call.operations.values() if isinstance(op, kind) and not op.ending), None
    )


def _require_running(call: Call, kind: type[LiveOperation]) -> LiveOperation:
    op = _running(call, kind)
    if op is None:
        raise CommandError(
            422, "invalid_state", f"no {kind.kind} is running on call {call.id}", "action"
        )
    return op


def _sides(start: Mapping[str, Any]) -> list[str]:
    direction = start.get("direction") or list(SIDES)
    if isinstance(direction, str):
        direction = [direction]
    sides = [str(d) for d in direction]
    for side in sides:
        if side not in SIDES:
            raise CommandError(
                422,
                "invalid_parameter",
                f"direction must be local-caller or remote-caller, not {side!r}",
                "action.start.direction",
            )
    return [s for s in SIDES if s in sides]


def start_transcribe(
    services: Services, call: Call, start: Mapping[str, Any]
) -> LiveTranscribeOperation:
    recognizer = _recognizer(services, "live transcription")
    lang = str(start.get("lang") or "")
    if not lang:
        raise CommandError(
            422, "missing_required_parameter", "lang is required", "action.start.lang"
        )
    if not recognizer.supports(lang):
        raise CommandError(
            422,
            "invalid_parameter",
            f"no speech recognition model for {lang!r} on this server (English only)",
            "action.start.lang",
        )
    running = _running(call, LiveTranscribeOperation)
    if running is not None:
        raise CommandError(
            409,
            "invalid_state",
            f"call {call.id} already has a live transcription ({running.control_id})",
            "action",
        )
    webhook = start.get("webhook")
    op = LiveTranscribeOperation(
        call,
        services,
        recognizer,
        start,
        sides={side: lang for side in _sides(start)},
        status_url=webhook,
        webhook=webhook,
    )
    _register(call, op)
    return op


def start_translate(
    services: Services, call: Call, start: Mapping[str, Any], status_url: str | None
) -> LiveTranslateOperation:
    recognizer = _recognizer(services, "live translation")
    if services.llm is None:
        raise CommandError(
            501,
            "not_implemented",
            "live translation needs a language model: start the server with --llm-url",
        )
    for name in ("from_lang", "to_lang"):
        if not start.get(name):
            raise CommandError(
                422, "missing_required_parameter", f"{name} is required", f"action.start.{name}"
            )
    languages = {REMOTE: str(start["from_lang"]), LOCAL: str(start["to_lang"])}
    sides = {s: languages[s] for s in _sides(start) if recognizer.supports(languages[s])}
    skipped = {
        s: f"no speech recognition model for {languages[s]!r}"
        for s in _sides(start)
        if s not in sides
    }
    if not sides:
        raise CommandError(
            422,
            "invalid_parameter",
            f"no speech recognition model for {start['from_lang']!r} on this server "
            "(English only): nothing can be translated",
            "action.start.from_lang",
        )
    running = _running(call, LiveTranslateOperation)
    if running is not None:
        raise CommandError(
            409,
            "invalid_state",
            f"call {call.id} already has a live translation ({running.control_id})",
            "action",
        )
    op = LiveTranslateOperation(
        call,
        services,
        recognizer,
        start,
        sides=sides,
        # Session states go to status_url, content to the webhook; each stands in for the
        # other when only one is given.
        status_url=status_url or start.get("webhook"),
        webhook=start.get("webhook") or status_url,
        skipped=skipped,
    )
    _register(call, op)
    if skipped:
        log.warning("live_translate on call %s: not recognised: %s", call.id, skipped)
    return op


def _register(call: Call, op: LiveOperation) -> None:
    register_started(call, op, op.start)


def _action(params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """("start" | "summarize" | "inject" | "stop", its body) of a canonical or SWML action."""
    action = params.get("action")
    if isinstance(action, str):
        return action, {}
    if isinstance(action, Mapping) and len(action) == 1:
        name, body = next(iter(action.items()))
        return str(name), dict(body) if isinstance(body, Mapping) else {}
    raise CommandError(422, "invalid_parameter", "action must hold exactly one action", "action")


async def _live_transcribe(services: Services, call: Call, p: dict[str, Any]) -> None:
    name, body = _action(p)
    if name == "start":
        require_answered(call, "transcribed")
        start_transcribe(services, call, body)
    elif name == "stop":
        await _require_running(call, LiveTranscribeOperation).stop()
    elif name == "summarize":
        op = _require_running(call, LiveTranscribeOperation)
        op.spawn(op.summarize(body.get("webhook"), body.get("prompt")))
    else:
        raise CommandError(422, "invalid_parameter", f"unknown action {name!r}", "action")


async def _live_translate(services: Services, call: Call, p: dict[str, Any]) -> None:
    name, body = _action(p)
    if name == "start":
        require_answered(call, "translated")
        start_translate(services, call, body, p.get("status_url"))
        return
    op = _require_running(call, LiveTranslateOperation)
    assert isinstance(op, LiveTranslateOperation)
    if name == "stop":
        await op.stop()
    elif name == "summarize":
        op.spawn(op.summarize(body.get("webhook"), body.get("prompt")))
    elif name == "inject":
        side = str(body.get("direction") or "")
        if side not in SIDES or not body.get("message"):
            raise CommandError(
                422,
                "invalid_parameter",
                "inject needs a message and a direction (local-caller or remote-caller)",
                "action.inject",
            )
        op.inject(str(body["message"]), side)
    else:
        raise CommandError(422, "invalid_parameter", f"unknown action {name!r}", "action")


def _swml(handler: CommandHandler, method: str) -> SwmlMethod:
    async def run(services: Services, call: Call, params: dict[str, Any]) -> dict[str, Any] | None:
        if not isinstance(params, dict):
            raise SwmlError(f"{method} takes an object")
        try:
            name, _ = _action(params)
            if name == "start" and call.status is not CallStatus.ANSWERED:
                await services.answer(call)
            await handler(services, call, params)
        except CommandError as exc:
            if exc.status == 501:
                raise SwmlMethodNotSupported(method, exc.message) from exc
            # The script goes on: a live session is a side activity of the call.
            log.warning("SWML %s on call %s: %s", method, call.id, exc.message)
        return None

    return run


COMMANDS: dict[str, CommandHandler] = {
    "calling.live_transcribe": _live_transcribe,
    "calling.live_translate": _live_translate,
}
SWML_METHODS: dict[str, SwmlMethod] = {
    "live_transcribe": _swml(_live_transcribe, "live_transcribe"),
    "live_translate": _swml(_live_translate, "live_translate"),
}
