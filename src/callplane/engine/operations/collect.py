"""`calling.collect`, its `.stop` / `.start_input_timers`, and SWML `prompt` (reference §4.11,
§4.12, §5.3, §7.3; swml.md `prompt`).

One `CollectOperation` gathers DTMF and/or speech from the far end of a call:

* **Digits** come from two places: RFC 4733 telephone-events (`Call.dtmf_listeners`, reported
  when a key is released) and in-band tones in the inbound audio (`DtmfDetector`, reported ~30 ms
  after a key goes down). Some phones and gateways send both for one key press, so a digit seen
  on one path is dropped when the other path already reported the same digit within
  `DUPLICATE_WINDOW` (each digit pairs with at most one of the other kind, so a real "11" stays
  two digits).
* **Speech** goes through a `callplane.providers.asr` recognizer (`Services.recognizer`), one
  streaming session per result; a server without pocketsphinx, or a language it has no model
  for, answers 501. `model` and `engine` name hosted engines and are ignored.
* Digits and speech together: whichever result comes first wins; a key press ends that
  round's speech recognition.

Timers (reference §9 #22): `start_input_timers` defaults to **false**, so the *initial* timer
(`initial_timeout`, "no input at all") does not run until the client asks with
`calling.collect.start_input_timers` (or started the collect with `start_input_timers: true`);
until then the collect waits for input indefinitely. The *inter-digit* timer (`digit_timeout`)
is not gated: it only exists once a digit has arrived, and a caller who typed "12" of 4 digits
and went quiet must not hold the collect open for ever.

Events (`calling.call.collect`), each `{control_id, result: {type, params}}` (params `{}` when
the type carries nothing), plus `final` (bool) when `partial_results` is set and `state` when
`continuous` is set:

* `digit` {digits, terminator}: `digits` excludes the terminator; `terminator` is the key that
  ended the input, or `""` when `max` digits or `digit_timeout` ended it;
* `speech` {text, confidence}; `no_input`; `no_match` (speech that matched nothing);
* `start_of_input` (only with `send_start_of_input`), once per collected result;
* `finished`: the collect was stopped (`calling.collect.stop`, call ended) before a result;
  digits typed so far are discarded (stop means "no longer interested"); with `continuous` it
  is the last event, with `state: "finished"` (earlier results carry `state: "collecting"`);
* `error` (the recognizer failed), which ends even a continuous collect (`state: "error"`).

Time: every timer counts media ticks (``TickFrames``, 50 per second, delivered whether or not
the far end sends RTP), never wall-clock time: ``initial_timeout`` and ``digit_timeout`` here, the
recognizer's no-input and end-of-speech timers on the audio it is fed. So a far end that stops
sending RTP mid-answer still ends the collect (its silence is fed as silence), and a test drives
a collect with TickFrames alone.

Partial results are speech hypotheses only (`speech` {text}, `final: false`); digit input has
no partial events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from asyncio import FIRST_COMPLETED
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from callplane.engine.audio import PlayItemError, swml_sound_to_item
from callplane.engine.calls import CallStatus
from callplane.engine.facade import CommandError
from callplane.engine.keypad import KeyPresses
from callplane.engine.operations.base import (
    Emit,
    Operation,
    control_id_of,
    lookup,
    register,
    require_answered,
)
from callplane.engine.operations.play import start_play
from callplane.engine.services import CommandHandler, Services, SwmlMethod
from callplane.engine.swml.errors import SwmlError, SwmlMethodNotSupported
from callplane.media.sources import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE
from callplane.providers.asr import (
    AsyncRecognition,
    RecognitionEvent,
    SpeechRecognizer,
)

if TYPE_CHECKING:
    from callplane.engine.calls import Call
    from callplane.media.engine import TickFrames
    from callplane.media.sources import Frame

log = logging.getLogger("callplane.engine.collect")

# Server defaults where the reference leaves them to the server (§4.11 initial_timeout, §5.3
# digit_timeout); the SWML prompt's documented defaults are the same 5 s.
DEFAULT_INITIAL_TIMEOUT = 5.0
DEFAULT_DIGIT_TIMEOUT = 5.0
# The spec says `terminators: ""` disables terminators, which only means something if leaving
# the field out does not: REST collects default to "#". SWML prompt documents "not set".
DEFAULT_TERMINATORS = "#"
# Inbound audio kept while a recognizer session is being opened (loading a decoder takes
# ~0.25 s the first time), so the start of an answer is not lost.
_MAX_BUFFERED_FRAMES = 10 * SAMPLE_RATE // FRAME_SAMPLES


@dataclass(frozen=True)
class DigitsConfig:
    max: int
    terminators: str
    digit_timeout: float


@dataclass(frozen=True)
class SpeechConfig:
    end_silence_timeout: float | None = None
    speech_timeout: float | None = None
    language: str = "en-US"
    hints: tuple[str, ...] = ()
    model: str | None = None
    engine: str | None = None


class CollectOperation(Operation):
    kind = "collect"
    writes_audio = True
    event_type = "calling.call.collect"
    # Results are `report`ed (they are not state changes); the state only says whether the
    # collect still listens.
    initial_state = "collecting"
    transitions: ClassVar[Mapping[str, frozenset[str]]] = {
        "collecting": frozenset({"finished", "error"}),
    }

    def __init__(
        self,
        call: Call,
        control_id: str,
        status_url: str | None,
        emit: Emit,
        *,
        digits: DigitsConfig | None,
        speech: SpeechConfig | None,
        initial_timeout: float = DEFAULT_INITIAL_TIMEOUT,
        continuous: bool = False,
        partial_results: bool = False,
        send_start_of_input: bool = False,
        start_input_timers: bool = False,
        recognizer: SpeechRecognizer | None = None,
    ) -> None:
        super().__init__(call, control_id, status_url, emit)
        if speech is not None and recognizer is None:
            raise ValueError("a speech collect needs a recognizer")
        self.digits_config = digits
        self.speech_config = speech
        self.initial_timeout = initial_timeout
        self.continuous = continuous
        self.partial_results = partial_results
        self.send_start_of_input = send_start_of_input
        self._timers_started = start_input_timers
        # Called once when input begins in a round (SWML prompt stops its play: barge-in).
        self.on_input_start: Callable[[], None] | None = None
        # The last result dict, for SWML prompt's variables.
        self.last_result: dict[str, Any] | None = None
        self._hub: KeyPresses | None = None
        # speech: one recognizer session per round; `_speech_round` tells a late event of an
        # earlier round's session from the current one's
        self._recognizer = recognizer
        self._speech_round = 0
        self._recognition: AsyncRecognition | None = None
        self._speech_buffer: list[Frame] = []
        self._speech_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._listening = False
        # per round (a continuous collect runs many)
        self._collected = ""
        self._input_started = False
        # Timers, in media ticks left until they fire (None = not running).
        self._initial_left: int | None = None
        self._digit_left: int | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Begin listening (the caller has registered the operation)."""
        if self.digits_config is not None:
            self._hub = KeyPresses.for_call(self.call)
            self._hub.subscribers.append(self._on_digit)
        if self.call.media is not None:
            self.call.media.add_listener(self._on_tick)
        self._listening = True
        self._open_speech()
        if self._timers_started:
            self._arm_initial_timer()

    def start_input_timers(self) -> None:
        """`calling.collect.start_input_timers`: start `initial_timeout` now (idempotent: a timer
        already running is not restarted, so a repeated command cannot extend the wait)."""
        if self._timers_started:
            return
        self._timers_started = True
        if not self._input_started:
            self._arm_initial_timer()
        if self._recognition is not None:
            self._recognition.start_timers()

    async def stop(self) -> None:
        """`calling.collect.stop` or the call ending: report `finished` and stop listening."""
        if self.is_terminal:
            return
        self._conclude({"type": "finished", "params": {}}, final_state="finished")

    # ------------------------------------------------------------------ digits

    def _on_digit(self, digit: str) -> None:
        config = self.digits_config
        if self.is_terminal or config is None:
            return
        self._begin_input()
        if digit in config.terminators:
            self._result_digits(terminator=digit)
            return
        self._collected += digit
        if len(self._collected) >= config.max:
            self._result_digits(terminator="")
            return
        self._digit_left = _ticks(config.digit_timeout)

    def _result_digits(self, terminator: str) -> None:
        self._result(
            {"type": "digit", "params": {"digits": self._collected, "terminator": terminator}}
        )

    # ------------------------------------------------------------------ speech

    def _on_tick(self, frames: TickFrames) -> None:
        """One media tick: the far end's audio to the recognizer, then the timers."""
        if self.is_terminal:
            return
        if self.speech_config is not None:
            frame = frames.inbound
            if self._recognition is not None:
                self._recognition.push(frame)
            elif self._speech_task is not None and len(self._speech_buffer) < _MAX_BUFFERED_FRAMES:
                self._speech_buffer.append(frame)
        if self._digit_left is not None:
            self._digit_left -= 1
            if self._digit_left <= 0:
                self._digit_left = None
                self._result_digits(terminator="")
                return
        if self._initial_left is not None:
            self._initial_left -= 1
            if self._initial_left <= 0:
                self._initial_left = None
                if not self._input_started:
                    self._result({"type": "no_input", "params": {}})

    def _open_speech(self) -> None:
        if self.speech_config is None or self.is_terminal:
            return
        self._speech_round += 1
        self._speech_buffer = []
        self._speech_task = self._spawn(self._run_speech(self._speech_round))

    def _end_speech(self) -> None:
        """End this round's recognition (its session is closed by its own task)."""
        self._speech_round += 1
        self._speech_buffer = []
        task, self._speech_task = self._speech_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _run_speech(self, round_: int) -> None:
        config = self.speech_config
        assert config is not None and self._recognizer is not None
        opening = asyncio.ensure_future(
            AsyncRecognition.open(
                self._recognizer,
                language=config.language,
                hints=list(config.hints) or None,
                end_silence_timeout=config.end_silence_timeout,
                speech_timeout=config.speech_timeout,
                partial_results=self.partial_results,
                initial_timeout=self.initial_timeout,
                timers_started=self._timers_started,
            )
        )
        try:
            recognition = await asyncio.shield(opening)
        except asyncio.CancelledError:
            # Opening runs in a thread and cannot be interrupted: close it once it is open,
            # or its pooled decoder would never be returned.
            opening.add_done_callback(self._close_late)
            raise
        except Exception as exc:  # AsrError, a model that will not load: this collect fails
            log.warning(
                "collect %s on call %s: cannot start recognition: %s",
                self.control_id,
                self.call.id,
                exc,
            )
            if round_ == self._speech_round and not self.is_terminal:
                self._result({"type": "error", "params": {}}, error=True)
            return
        try:
            if round_ != self._speech_round or self.is_terminal:
                return
            if self._timers_started:
                recognition.start_timers()  # timers started while the session was opening
            self._recognition = recognition
            for frame in self._speech_buffer:
                recognition.push(frame)
            self._speech_buffer = []
            while True:
                event = await recognition.next_event()
                if round_ != self._speech_round or self.is_terminal:
                    return
                self._on_speech_event(event)
                if event.terminal:
                    return
        finally:
            if self._recognition is recognition:
                self._recognition = None
            await recognition.aclose()

    def _close_late(self, opening: asyncio.Future[AsyncRecognition]) -> None:
        if not opening.cancelled() and opening.exception() is None:
            self._spawn(opening.result().aclose())

    def _on_speech_event(self, event: RecognitionEvent) -> None:
        if event.type == "start_of_input":
            self._begin_input(by="speech")
        elif event.type == "partial":
            if self.partial_results and event.text:
                self._report({"type": "speech", "params": {"text": event.text}}, final=False)
        elif event.type == "final":
            text = event.text or ""
            confidence = event.confidence if event.confidence is not None else 0.0
            self._result({"type": "speech", "params": {"text": text, "confidence": confidence}})
        elif event.type == "no_input":
            if not self._input_started:  # keys typed meanwhile are the caller's answer
                self._result({"type": "no_input", "params": {}})
        elif event.type == "no_match":
            self._result({"type": "no_match", "params": {}})
        else:
            log.warning(
                "collect %s on call %s: recognition failed: %s",
                self.control_id,
                self.call.id,
                event.error,
            )
            self._result({"type": "error", "params": {}}, error=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"collect-{self.control_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ rounds and results

    def _begin_input(self, by: str = "digit") -> None:
        if self._input_started:
            return
        self._input_started = True
        if by == "digit":
            # The caller answers with keys: speech recognition of this round is moot.
            self._end_speech()
        self._initial_left = None
        if self.send_start_of_input:
            self._report({"type": "start_of_input", "params": {}}, final=False)
        if self.on_input_start is not None:
            self.on_input_start()

    def _arm_initial_timer(self) -> None:
        self._initial_left = _ticks(self.initial_timeout)

    def _result(self, result: dict[str, Any], *, error: bool = False) -> None:
        """A final result of this round: report it, then either start the next round
        (continuous) or end the collect. An error ends even a continuous collect: whatever
        failed would most likely fail again."""
        if error:
            self._conclude(result, final_state="error")
            return
        if not self.continuous:
            self._conclude(result, final_state="finished")
            return
        self.last_result = result
        self._report(result, final=True, state="collecting")
        self._reset_round()
        if self._timers_started:
            self._arm_initial_timer()
        self._open_speech()

    def _conclude(self, result: dict[str, Any], *, final_state: str) -> None:
        self.last_result = result
        self._close_listeners()
        self._reset_round()
        self._report(result, final=True, state=final_state)
        self.finish(final_state)

    def _report(self, result: dict[str, Any], *, final: bool, state: str = "collecting") -> None:
        params: dict[str, Any] = {"result": result}
        if self.partial_results:
            params["final"] = final
        if self.continuous:
            params["state"] = state
        self.report(params)

    def _reset_round(self) -> None:
        self._collected = ""
        self._input_started = False
        self._end_speech()
        self._initial_left = self._digit_left = None

    def _close_listeners(self) -> None:
        if not self._listening:
            return
        self._listening = False
        if self._hub is not None:
            with contextlib.suppress(ValueError):
                self._hub.subscribers.remove(self._on_digit)
        if self.call.media is not None:
            self.call.media.remove_listener(self._on_tick)


def _ticks(seconds: float) -> int:
    """A timeout in media ticks (at least one)."""
    return max(1, round(seconds / FRAME_SECONDS))


# ---------------------------------------------------------------------------------------------
# REST commands


def _digits_config(raw: Any) -> DigitsConfig | None:
    if raw is None:
        return None
    terminators = raw.get("terminators")
    return DigitsConfig(
        max=int(raw["max"]),
        terminators=(DEFAULT_TERMINATORS if terminators is None else str(terminators)).upper(),
        digit_timeout=float(raw.get("digit_timeout") or DEFAULT_DIGIT_TIMEOUT),
    )


def _speech_config(raw: Any) -> SpeechConfig | None:
    if raw is None:
        return None
    return SpeechConfig(
        end_silence_timeout=_opt_float(raw.get("end_silence_timeout")),
        speech_timeout=_opt_float(raw.get("speech_timeout")),
        language=str(raw.get("language") or "en-US"),
        hints=tuple(str(h) for h in raw.get("hints") or ()),
        model=raw.get("model"),
        engine=raw.get("engine"),
    )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _speech_recognizer(
    services: Services, speech: SpeechConfig | None, attribute: str
) -> SpeechRecognizer | None:
    """The recognizer a collect needs (None for a digits-only one), or the 501 that says why
    callplane cannot recognise this speech: never a collect that silently hears nothing."""
    if speech is None:
        return None
    recognizer = services.recognizer
    if recognizer is None:
        raise CommandError(
            501,
            "not_implemented",
            "speech collection needs pocketsphinx, which is not installed on this server",
            attribute,
        )
    if not recognizer.supports(speech.language):
        raise CommandError(
            501,
            "not_implemented",
            f"callplane has no speech model for language {speech.language!r} (English only)",
            attribute,
        )
    return recognizer


def start_collect(
    services: Services,
    call: Call,
    *,
    control_id: str,
    status_url: str | None,
    digits: DigitsConfig | None,
    speech: SpeechConfig | None,
    initial_timeout: float = DEFAULT_INITIAL_TIMEOUT,
    continuous: bool = False,
    partial_results: bool = False,
    send_start_of_input: bool = False,
    start_input_timers: bool = False,
    recognizer: SpeechRecognizer | None = None,
) -> CollectOperation:
    op = CollectOperation(
        call,
        control_id,
        status_url,
        services.emit,
        digits=digits,
        speech=speech,
        initial_timeout=initial_timeout,
        continuous=continuous,
        partial_results=partial_results,
        send_start_of_input=send_start_of_input,
        start_input_timers=start_input_timers,
        recognizer=recognizer,
    )
    register(call, op)
    op.start()
    return op


async def _collect(services: Services, call: Call, p: dict[str, Any]) -> None:
    require_answered(call, "collected from")
    speech = _speech_config(p.get("speech"))
    recognizer = _speech_recognizer(services, speech, "speech.language")
    start_collect(
        services,
        call,
        # Optional in the SDK (reference §9 #2): generate one, as play does.
        control_id=control_id_of(p),
        status_url=p.get("status_url"),
        digits=_digits_config(p.get("digits")),
        speech=speech,
        initial_timeout=float(p.get("initial_timeout") or DEFAULT_INITIAL_TIMEOUT),
        continuous=bool(p.get("continuous")),
        partial_results=bool(p.get("partial_results")),
        send_start_of_input=bool(p.get("send_start_of_input")),
        start_input_timers=bool(p.get("start_input_timers")),
        recognizer=recognizer,
    )


async def _stop(services: Services, call: Call, p: dict[str, Any]) -> None:
    await lookup(call, CollectOperation, p).stop()


async def _start_input_timers(services: Services, call: Call, p: dict[str, Any]) -> None:
    lookup(call, CollectOperation, p).start_input_timers()


# ---------------------------------------------------------------------------------------------
# SWML prompt

_SPEECH_FIELDS = (
    "speech_timeout",
    "speech_end_timeout",
    "speech_language",
    "speech_hints",
    "speech_engine",
)
_DIGIT_FIELDS = ("max_digits", "terminators", "digit_timeout")


def _prompt_configs(params: dict[str, Any]) -> tuple[DigitsConfig | None, SpeechConfig | None]:
    """Digits only by default; any speech_* field switches to speech, and digits stay on only
    if a digit field is set too (swml.md `prompt`)."""
    try:
        wants_speech = any(params.get(f) is not None for f in _SPEECH_FIELDS)
        wants_digits = not wants_speech or any(params.get(f) is not None for f in _DIGIT_FIELDS)
        digits = None
        if wants_digits:
            max_digits = int(float(params.get("max_digits") or 1))
            if max_digits < 1:
                raise SwmlError("max_digits must be at least 1")
            digits = DigitsConfig(
                max=max_digits,
                terminators=str(params.get("terminators") or "").upper(),
                digit_timeout=_positive(params.get("digit_timeout"), 5.0, "digit_timeout"),
            )
        speech = None
        if wants_speech:
            hints = params.get("speech_hints") or []
            speech = SpeechConfig(
                end_silence_timeout=_opt_float(params.get("speech_end_timeout")),
                speech_timeout=_opt_float(params.get("speech_timeout")),
                language=str(params.get("speech_language") or "en-US"),
                hints=tuple(str(h) for h in (hints if isinstance(hints, list) else [hints])),
                engine=params.get("speech_engine"),
            )
    except (TypeError, ValueError) as exc:
        raise SwmlError(f"invalid prompt parameter: {exc}") from exc
    return digits, speech


def _positive(value: Any, default: float, name: str) -> float:
    if value is None or value == "":
        return default
    number = float(value)
    if number <= 0:
        raise SwmlError(f"{name} must be positive")
    return number


def prompt_variables(result: dict[str, Any] | None) -> dict[str, Any]:
    """SWML `prompt` variables from a collect result. All four are always set, so a value from
    an earlier prompt never survives into this one's."""
    out = {
        "prompt_result": "failed",
        "prompt_value": "",
        "prompt_digit_terminator": "",
        "prompt_speech_confidence": "",
    }
    kind = (result or {}).get("type")
    params = (result or {}).get("params") or {}
    if kind == "digit":
        out["prompt_result"] = "match_digits"
        out["prompt_value"] = str(params.get("digits", ""))
        out["prompt_digit_terminator"] = str(params.get("terminator", ""))
    elif kind == "speech":
        out["prompt_result"] = "match_speech"
        out["prompt_value"] = str(params.get("text", ""))
        out["prompt_speech_confidence"] = str(params.get("confidence", ""))
    elif kind in ("no_input", "no_match"):
        out["prompt_result"] = str(kind)
    return out


async def swml_prompt(
    services: Services, call: Call, params: dict[str, Any]
) -> dict[str, Any] | None:
    """SWML `prompt`: play the prompt while already listening (a key press or speech stops the
    play: barge-in, and the digits typed during it count), start the input timers once the play
    has ended, and wait for the result."""
    if call.status is not CallStatus.ANSWERED:
        if params.get("auto_answer", True) is False:
            raise SwmlMethodNotSupported("prompt", "auto_answer: false (early media)")
        await services.answer(call)
    digits, speech = _prompt_configs(params)
    try:
        recognizer = _speech_recognizer(services, speech, "speech_language")
    except CommandError as exc:
        raise SwmlMethodNotSupported("prompt", exc.message) from exc
    sounds = params.get("play")
    if sounds is None:
        raise SwmlError("prompt needs `play`")
    try:
        items = [
            swml_sound_to_item(str(s)) for s in (sounds if isinstance(sounds, list) else [sounds])
        ]
    except PlayItemError as exc:
        raise SwmlError(str(exc)) from exc
    initial_timeout = _positive(params.get("initial_timeout"), 5.0, "initial_timeout")
    control_id = f"swml-prompt-{uuid.uuid4()}"
    collect = start_collect(
        services,
        call,
        control_id=control_id,
        status_url=params.get("status_url"),
        digits=digits,
        speech=speech,
        initial_timeout=initial_timeout,
        # The prompt's own play runs first; timers start when it ends (below).
        start_input_timers=False,
        recognizer=recognizer,
    )
    try:
        if items:
            play = start_play(
                services,
                call,
                control_id=f"{control_id}-play",
                items=items,
                status_url=None,
                volume=float(params.get("volume") or 0.0),
                language=str(params.get("say_language") or "en-US"),
                voice=params.get("say_voice"),
                gender=str(params.get("say_gender") or "female"),
            )

            barged = asyncio.Event()
            collect.on_input_start = barged.set
            barge = asyncio.ensure_future(barged.wait())
            try:
                waiters: set[asyncio.Future[Any]] = {play.done, barge, collect.done}
                await asyncio.wait(waiters, return_when=FIRST_COMPLETED)
            finally:
                collect.on_input_start = None
                barge.cancel()
                await play.stop()
            if play.done.done() and play.done.result() == "error":
                # A prompt that cannot be played still leaves the caller able to answer it.
                log.warning("prompt on call %s: its play failed; collecting anyway", call.id)
        collect.start_input_timers()
        await collect.done
    finally:
        await collect.stop()
    return prompt_variables(collect.last_result)


COMMANDS: dict[str, CommandHandler] = {
    "calling.collect": _collect,
    "calling.collect.stop": _stop,
    "calling.collect.start_input_timers": _start_input_timers,
}
SWML_METHODS: dict[str, SwmlMethod] = {"prompt": swml_prompt}
