"""SWML `ai`: a voice agent on the call (swml.md §2.4), and its REST control
(`calling.ai_message`, `calling.ai_hold`, `calling.ai_unhold`, `calling.ai.stop`).

The loop
--------
The agent opens the conversation (``params.wait_for_user`` false, the reference default): a
``static_greeting`` is spoken, or without one the model is asked at once for the opening turn
(the system prompt alone, no caller message). With ``wait_for_user: true`` the caller speaks
first (a greeting is still spoken). Then listen -> recognise -> think -> speak, until the
agent is stopped or the call ends:

* **listen / recognise**: a media listener queues the leg's inbound frames; one worker feeds
  them (off the event loop) to a chain of recognition sessions, the same
  :class:`~callplane.engine.operations.transcribe.Transcriber` as `transcribe`, with
  ``params.end_of_speech_timeout`` (default 700 ms) ending each utterance. Every utterance
  with text is one caller turn. Key presses (the call's ``KeyPresses``: RFC 4733 and in-band)
  reach the model as caller turns too (``DTMF: 5``).
* **think**: the server's language model (``Services.llm``, an OpenAI-compatible endpoint)
  gets the system prompt, the conversation and the SWAIG functions as tools;
  ``params.ai_model`` overrides the model name. The system prompt (rebuilt before every
  request) is ``prompt.text`` or ``prompt.pom`` rendered (``ai_prompt``: markdown, or XML with
  ``params.pom_format``), the current context and step of ``prompt.contexts`` with their
  ``next_step`` / ``change_context`` tools, the ``hints`` words, and ``global_data`` as JSON.
* **speak**: the reply is cut into sentences as it streams; each is synthesised
  (``speech.synthesise``: the server's TTS through ``Services.audio``) and pushed to one
  ``LiveSource`` played on the leg for the agent's lifetime, so the first sentence plays
  while the model still writes the rest.
* **barge-in**: a voice activity detector watches the inbound frames; caller speech while the
  agent talks clears the ``LiveSource`` and drops the sentences not yet spoken. What the caller
  says is recognised as the next turn. With ``params.barge_min_words`` the voice alone does
  not interrupt: the caller's words do, as soon as a partial hypothesis of the utterance has
  that many (after the ``hints`` replacements); an utterance that ends with fewer while the
  agent talks is dropped (backchannel). The partials are those of the recognizer's streaming
  pass, decoded in its streaming process anyway (``providers.asr``, "Partial hypotheses"):
  none cost the worker thread any decoding. Where there are none (whisper; the first
  utterance before the streaming process is up) the count is made on the final text, at the
  end of the utterance. A ``static_greeting`` with ``static_greeting_no_barge`` is heard
  out; words over it are the next turn.

Parameters
----------
* ``params.ai_volume`` (-50..50 dB) is the gain of the agent's playback (speech and hold
  beeps); ``languages[0]`` gives the recognition/TTS language (``code``, or the legacy
  ``listen_language``) and the voice: ``flite.<voice>``, ``espeak.<voice>`` (or ``engine`` +
  ``voice``, or a bare flite voice name); other engines' voices fall back to the default voice
  with a warning in the log.
* Timers count media ticks (50 a second): ``params.attention_timeout`` (default 5000 ms, 0
  off, else 10000-600000; on a dialled call ``outbound_attention_timeout``, default 120000
  ms, takes its place) puts ``attention_timeout_prompt`` to the model as a system message
  when the agent has spoken, its speech has played out and the caller has not taken a turn
  for that long (never before the agent's first words; not while it thinks, is held or the
  caller's voice is heard); ``params.inactivity_timeout`` (default 600000 ms) ends the
  agent (``finished`` with ``reason: inactivity_timeout``; the script goes on) when the caller
  has neither spoken, keyed nor sent a user message that long (time on hold does not count).
  ``params.hard_stop_time`` (``1h45m30s``) after the agent's start: the caller's words and
  keys are dropped from then on, ``hard_stop_prompt`` goes to the model as a system message,
  its answer is heard out (no barge-in) and the agent ends (``reason: hard_stop_time``).
* ``prompt.contexts`` (``ai_prompt.ConversationFlow``): a context's ``exit_fillers`` and the
  next one's ``enter_fillers`` are spoken on a change of context (one phrase each, for the
  agent's language); a step with ``skip_user_turn`` moves to its next step after the
  agent's turn and the model speaks again, without waiting for the caller.
* ``hints`` (``ai_native``): listed in the system prompt; hint objects' ``pattern`` is
  replaced by ``replace`` in every recognised utterance. They do not reach the recognizer:
  its hints are a closed grammar.
* ``SWAIG.native_functions`` (``ai_native``): ``check_time`` (``params.local_tz``, default
  ``US/Central``), ``wait_seconds`` (the model's round waits that many ticks) and
  ``wait_for_user`` are answered here; ``adjust_response_latency`` is accepted, not offered.

SWAIG functions
---------------
A tool call naming a function with a ``web_hook_url`` POSTs the SWAIG request (``function``,
``argument`` {parsed, raw, substituted}, ``meta_data``, ``global_data``, ``SWMLVars``,
``content_type: text/swaig``, ...) through the engine's HTTP client (the outbound target policy
applies). ``SWMLVars`` are the call's script variables at that moment (all of them, or the
names ``params.swaig_post_swml_vars`` lists, none if it is false); ``meta_data`` is scoped by
``meta_data_token`` (default: the function's web hook URL), so functions sharing a token share
one object; ``params.swaig_post_conversation`` adds the conversation. The reply's
``response`` goes back to the model as the tool result; its ``action`` list is acted on:
``say`` (spoken), ``set_global_data`` / ``unset_global_data``, ``set_meta_data`` /
``unset_meta_data`` (the function's scope), ``change_context`` / ``change_step`` /
``context_switch`` (``system_prompt``, ``user_prompt``; ``consolidate`` restarts the
conversation, without a summary), ``stop`` (the agent ends), ``hang_up`` (the call ends),
``SWML`` (the agent ends and the document replaces the call's script, e.g. a ``connect``),
``hold`` (as ``ai_hold``). A failing or slow function (10 s) is reported to the model and the
log; the call goes on.

Ending
------
``post_prompt`` (its ``text`` or rendered ``pom``) is sent to the model with the
conversation once the agent ends (``speech.complete``); the answer and the conversation log
(roles, text, timestamps, tool calls) are POSTed to ``post_prompt_url`` (the webhook
outbox: durable, signed). SWML then continues after ``ai`` with ``ai_result`` (``success`` |
``failed``) set. Without a configured model ``ai`` fails at once: an error in the log, a
``calling.call.ai`` ``error`` event, ``ai_result: failed``.

Events (``calling.call.ai`` to the call's event log): ``started``, ``finished`` (with
``reason: inactivity_timeout`` or ``hard_stop_time`` when that timer ended it) or ``error``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
import numpy as np

from callplane.engine.calls import CallStatus
from callplane.engine.facade import CommandError
from callplane.engine.keypad import KeyPresses
from callplane.engine.operations.ai_native import (
    Hints,
    check_time,
    native_tools,
    time_zone,
    wait_seconds_argument,
)
from callplane.engine.operations.ai_prompt import ConversationFlow, FlowError, prompt_text
from callplane.engine.operations.base import Operation, register, require_answered, unregister
from callplane.engine.operations.speech import complete, synthesise
from callplane.engine.operations.transcribe import Transcriber, TranscriptionFailed
from callplane.engine.services import CommandHandler, Services, SwmlMethod
from callplane.engine.swml.errors import SwmlError
from callplane.engine.swml.expressions import Scope, expand_string, has_placeholders
from callplane.media.dsp.vad import SpeechEnd, SpeechStart, Vad
from callplane.media.sources import LiveSource, tone
from callplane.providers.llm import LanguageModel, LlmError, Reply, TextDelta, ToolCall
from callplane.providers.tts import FliteTts

if TYPE_CHECKING:
    from callplane.engine.calls import Call
    from callplane.media.engine import Playback, TickFrames
    from callplane.media.sources import Frame
    from callplane.providers.asr import SpeechRecognizer

log = logging.getLogger("callplane.engine.ai")

EVENT = "calling.call.ai"
DEFAULT_END_OF_SPEECH = 0.7
FUNCTION_TIMEOUT = 10.0
MAX_TOOL_ROUNDS = 5
# Two minutes of speech may be queued: a long reply is synthesised faster than it plays.
_LIVE_FRAMES = 50 * 120
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")
# Hold audio: 0.3 s of 440 Hz at -24 dBFS, then 2.7 s of silence, repeated.
_HOLD_CYCLE = np.concatenate(
    [tone(440, 0.3, level_dbfs=-24.0).render(), np.zeros(8000 * 27 // 10, dtype=np.int16)]
)
_RECOGNIZER_HANGOVER = 0.2  # providers.asr: voicing hangover counted as speech
TICKS_PER_SECOND = 50
DEFAULT_ATTENTION_TIMEOUT = 5000  # ms (the reference's default; 0 disables)
DEFAULT_ATTENTION_PROMPT = (
    "The user has not responded, try to get their attention. Stay in the same language."
)
DEFAULT_OUTBOUND_ATTENTION_TIMEOUT = 120000  # ms
DEFAULT_INACTIVITY_TIMEOUT = 600000  # ms
DEFAULT_HARD_STOP_PROMPT = (
    "Explain to the user in the current language that you have run out of time to continue "
    "the conversation and you will have someone contact them soon."
)
_HARD_STOP = "hard_stop"  # the input that ends the conversation
_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_FLOW_TOOLS = ("next_step", "change_context")
# TTS engines of the play path, as the `<engine>.<voice>` of `languages[].voice` names them.
_LOCAL_ENGINES = {"flite": "flite", "espeak": "espeak-ng", "espeak-ng": "espeak-ng"}


class AiOperation(Operation):
    kind = "ai"
    event_type = EVENT
    initial_state = "new"
    transitions: ClassVar[Mapping[str, frozenset[str]]] = {
        "new": frozenset({"started", "error"}),
        "started": frozenset({"finished", "error"}),
    }
    writes_audio = True

    def __init__(
        self,
        call: Call,
        services: Services,
        llm: LanguageModel,
        recognizer: SpeechRecognizer,
        params: Mapping[str, Any],
    ) -> None:
        super().__init__(call, f"ai-{uuid.uuid4()}", None, services.emit)
        self._services = services
        self._llm = llm
        self._params = params
        tuning = params.get("params") or {}
        if not isinstance(tuning, Mapping):
            raise ValueError("params must be an object")
        self._tuning = tuning
        self._model = tuning.get("ai_model") or None
        language = (params.get("languages") or [{}])[0]
        code = language.get("code") or language.get("listen_language") or "en-US"
        self._language = str(code[0] if isinstance(code, list) and code else code)
        self._voice = _local_voice(language, call.id)
        self._volume = float(_ranged(tuning, "ai_volume", 0, -50, 50))
        eos = float(tuning.get("end_of_speech_timeout") or DEFAULT_END_OF_SPEECH * 1000) / 1000
        self._barge_words = (
            int(_ranged(tuning, "barge_min_words", 0, 1, 99))
            if tuning.get("barge_min_words") is not None
            else None
        )
        # The recognizer counts speech on for 200 ms past the last voiced frame (its
        # consonant hangover): the timeout is the silence after the voice, so that is taken off.
        # barge_min_words counts the words of partial hypotheses, those the streaming pass
        # gives anyway (never a live pass in the worker thread: it would hold the GIL).
        self._transcriber = Transcriber(
            recognizer,
            end_silence=max(0.1, eos - _RECOGNIZER_HANGOVER),
            stream_partials=self._barge_words is not None,
        )
        # The decoding processes otherwise start at the server's first speech, and the first
        # turn would wait on an in-thread final pass (bench_ai: the p90 was that turn).
        recognizer.prepare()
        self._vad = Vad(start_frames=5)
        self._greeting_bargeable = not _true(tuning.get("static_greeting_no_barge"))
        self._wait_for_user = _true(tuning.get("wait_for_user"))
        # Timers count media ticks (50 a second), like every operation's.
        attention = _ranged(tuning, "attention_timeout", DEFAULT_ATTENTION_TIMEOUT, 10000, 600000)
        outbound = _ranged(
            tuning,
            "outbound_attention_timeout",
            DEFAULT_OUTBOUND_ATTENTION_TIMEOUT,
            10000,
            600000,
        )
        if attention and call.direction != "inbound":
            attention = outbound  # the one a dialled party gets (0 still turns it off)
        self._attention_ticks = int(attention) * TICKS_PER_SECOND // 1000
        self._attention_prompt = str(
            tuning.get("attention_timeout_prompt") or DEFAULT_ATTENTION_PROMPT
        )
        inactivity = _ranged(
            tuning, "inactivity_timeout", DEFAULT_INACTIVITY_TIMEOUT, 10000, 3600000
        )
        self._inactivity_ticks = int(inactivity) * TICKS_PER_SECOND // 1000
        self._hard_stop_ticks = _duration_ticks(tuning.get("hard_stop_time"))
        self._hard_stop_prompt = str(tuning.get("hard_stop_prompt") or DEFAULT_HARD_STOP_PROMPT)
        self._hard_stopping = False
        self._zone = time_zone(tuning.get("local_tz"))
        self.global_data: dict[str, Any] = dict(params.get("global_data") or {})
        self._pom_format = str(tuning.get("pom_format") or "markdown")
        prompt = params.get("prompt") or {}
        self._system_prompt = prompt_text(prompt, self._pom_format, "prompt")
        self._flow = (
            ConversationFlow(prompt["contexts"], self._pom_format)
            if isinstance(prompt, Mapping) and prompt.get("contexts") is not None
            else None
        )
        self._post_prompt_text = prompt_text(
            params.get("post_prompt"), self._pom_format, "post_prompt"
        )
        self._hints = Hints(params.get("hints"))
        self._system_message: dict[str, Any] | None = None
        self.messages: list[dict[str, Any]] = []
        self.log_entries: list[dict[str, Any]] = []
        swaig = params.get("SWAIG") or {}
        self._functions = {
            str(f["function"]): f
            for f in (swaig.get("functions") or [])
            if isinstance(f, dict) and f.get("function")
        }
        self._native_tools = [
            t
            for t in native_tools(swaig.get("native_functions"))
            if t["function"]["name"] not in self._functions
        ]
        self._natives = {t["function"]["name"] for t in self._native_tools}
        # meta_data is scoped by meta_data_token, by default the function's web hook URL:
        # functions sharing a scope share (and update) one object.
        self._meta_data: dict[str, dict[str, Any]] = {}
        for f in self._functions.values():
            if isinstance(f.get("meta_data"), dict):
                self._meta_data.setdefault(self._meta_token(f), {}).update(f["meta_data"])
        self._inputs: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._pending: list[Frame] = []
        self._worker: asyncio.Task[None] | None = None
        self._live = LiveSource(f"ai({self.control_id})", max_frames=_LIVE_FRAMES)
        self._playback: Playback | None = None
        self._speaking = 0  # sentences queued or playing in the current reply
        self._bargeable = True  # the sentence being spoken may be interrupted
        self._barge_ins = 0  # a reply still streaming when this moves is not spoken further
        self._speech_task: asyncio.Task[None] | None = None
        self._played: asyncio.Future[None] | None = None  # the sentence playing now
        self._sentences: asyncio.Queue[tuple[str, bool] | None] = asyncio.Queue()
        self._ending = asyncio.Event()
        self.held = False
        self._hold_timer: asyncio.TimerHandle | None = None
        self._hold_audio: asyncio.Task[None] | None = None
        self.end_action: dict[str, Any] | None = None  # the SWML a function handed over
        self.hang_up = False
        self.end_reason: str | None = None
        # Tick clock: the attention and inactivity timers and wait_seconds.
        self._tick = 0
        self._last_activity = 0  # tick of the caller's last voice, key or turn
        self._idle = 0  # ticks in a row waiting for the caller with nothing going on
        # The agent has spoken and the caller has not taken a turn since: only then does the
        # attention timer run (never before the agent's first words).
        self._awaiting_caller = False
        self._busy = False  # a turn is being answered
        self._caller_talking = False
        self._wait_until: int | None = None
        self._waited = asyncio.Event()
        self._waiting_for_user = False
        self._end_turn = False  # wait_for_user: no model round after this one's tools
        self._isolate = False  # an isolated context was entered in this tool round

    # ------------------------------------------------------------------ lifecycle

    def _system_content(self) -> str:
        parts = [self._system_prompt]
        if self._flow is not None:
            parts.append(self._flow.prompt())
        parts.append(self._hints.prompt())
        system = self._with_global_data("\n\n".join(p for p in parts if p))
        if self.global_data:
            system += "\n\nglobal_data: " + json.dumps(self.global_data)
        return system

    def _with_global_data(self, text: str) -> str:
        """``${global_data.x}`` in a prompt, with the values of now (the interpreter leaves
        them to the agent)."""
        if not has_placeholders(text):
            return text
        try:
            return str(expand_string(text, Scope(vars={"global_data": self.global_data})))
        except SwmlError as exc:
            log.warning("ai on call %s: prompt template: %s", self.call.id, exc)
            return text

    def _reset_messages(self) -> None:
        system = self._system_content()
        self._system_message = {"role": "system", "content": system} if system else None
        self.messages = [self._system_message] if self._system_message else []

    def _refresh_system(self) -> None:
        """The system prompt follows the conversation's step and context and `global_data`."""
        system = self._system_content()
        current = self._system_message
        if current is not None and self.messages and self.messages[0] is current:
            current["content"] = system
        elif system:
            self._system_message = {"role": "system", "content": system}
            self.messages.insert(0, self._system_message)

    def _start(self) -> None:
        media = self.call.media
        if media is None:
            raise CommandError(422, "invalid_state", f"call {self.call.id} has no media", "id")
        self._reset_messages()
        self._playback = media.play(self._live, volume_db=self._volume)
        media.add_listener(self._on_frame)
        KeyPresses.for_call(self.call).subscribers.append(self._on_digit)
        self._speech_task = asyncio.get_running_loop().create_task(self._speak_loop())
        self.move("started")

    async def stop(self) -> None:
        """`calling.ai.stop`, a SWAIG `stop`, or the call ending."""
        self._ending.set()

    async def run(self) -> None:
        self._start()
        try:
            greeting = self._tuning.get("static_greeting")
            if greeting:
                self.say(str(greeting), bargeable=self._greeting_bargeable)
                self._log("assistant", str(greeting))
                self.messages.append({"role": "assistant", "content": str(greeting)})
            elif not self._wait_for_user:
                await self._turn(None)  # the agent opens: the model speaks first
            while not self._ending.is_set():
                item = await self._next_input()
                if item is None:
                    break
                role, text = item
                if role == _HARD_STOP:
                    await self._turn(("system", text))
                    self.end_reason = "hard_stop_time"
                    break
                await self._turn(item)
            await self._drain_speech()
        finally:
            self._detach()
        await self._post_prompt()
        if self.end_reason is not None:
            self.move("finished", reason=self.end_reason)
        else:
            self.move("finished")

    async def _turn(self, item: tuple[str, str] | None) -> None:
        """One turn of the model: to `item` (role, text), or with none (the opening)."""
        self._busy = True
        try:
            if item is not None:
                role, text = item
                if role == "user":
                    self._awaiting_caller = False
                self._log(role, text)
                self.messages.append({"role": role, "content": text})
            await self._think()
        finally:
            self._busy = False
            self._idle = 0

    def _detach(self) -> None:
        self._ending.set()
        media = self.call.media
        if media is not None:
            media.remove_listener(self._on_frame)
        hub = KeyPresses.for_call(self.call)
        if self._on_digit in hub.subscribers:
            hub.subscribers.remove(self._on_digit)
        if self._hold_timer is not None:
            self._hold_timer.cancel()
        if self._hold_audio is not None:
            self._hold_audio.cancel()
        self._sentences.put_nowait(None)
        self._live.close()
        if self._playback is not None:
            self._playback.stop()
        if self._speech_task is not None:
            self._speech_task.cancel()

    async def _next_input(self) -> tuple[str, str] | None:
        getter = asyncio.ensure_future(self._inputs.get())
        ending = asyncio.ensure_future(self._ending.wait())
        try:
            await asyncio.wait({getter, ending}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ending.cancel()
            if not getter.done():
                getter.cancel()
        return getter.result() if getter.done() and not getter.cancelled() else None

    def _log(self, role: str, content: str, **extra: Any) -> None:
        self.log_entries.append(
            {"role": role, "content": content, "timestamp": int(time.time() * 1e6), **extra}
        )

    # ------------------------------------------------------------------ caller input

    def _on_frame(self, frames: TickFrames) -> None:
        if self._ending.is_set():
            return
        self._tick += 1
        for event in self._vad.feed(frames.inbound, frames.tick * 0.02):
            if isinstance(event, SpeechStart):
                self._caller_talking = True
                self._caller_active()
                if (
                    self._speaking
                    and self._bargeable
                    and not self.held
                    and not self._hard_stopping
                    and self._barge_words is None
                ):
                    self._barge_in()
            elif isinstance(event, SpeechEnd):
                self._caller_talking = False
        self._pending.append(frames.inbound)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._recognise())
        self._count_tick()

    def _count_tick(self) -> None:
        """The tick timers: `wait_seconds`, `attention_timeout`, `inactivity_timeout`,
        `hard_stop_time`."""
        if self._wait_until is not None and self._tick >= self._wait_until:
            self._waited.set()
        if self._hard_stop_ticks is not None and self._tick >= self._hard_stop_ticks:
            self._hard_stop()
        if self.held:
            self._last_activity = self._tick  # a caller on hold is not inactive
        if self._tick - self._last_activity >= self._inactivity_ticks:
            log.info("ai on call %s: no caller activity; the agent ends", self.call.id)
            self.end_reason = "inactivity_timeout"
            self._ending.set()
            return
        waiting = (
            self._awaiting_caller
            and not self._hard_stopping
            and not self._speaking
            and not self._busy
            and not self.held
            and not self._caller_talking
            and self._wait_until is None
            and not self._waiting_for_user
            and self._inputs.empty()
        )
        self._idle = self._idle + 1 if waiting else 0
        if self._attention_ticks and self._idle >= self._attention_ticks:
            self._idle = 0
            log.info("ai on call %s: the caller is silent; re-engaging", self.call.id)
            self._inputs.put_nowait(("system", self._attention_prompt))

    def _hard_stop(self) -> None:
        """`hard_stop_time` is up: whatever the caller still says is dropped, the model is
        given `hard_stop_prompt` for its last words, which are heard out; then the agent ends."""
        if self._hard_stopping:
            return
        log.info("ai on call %s: hard_stop_time reached; the agent ends", self.call.id)
        self._hard_stopping = True
        self._hard_stop_ticks = None
        if self.held:
            self._end_hold()
        self._waited.set()  # a wait_seconds in progress is over
        while not self._inputs.empty():
            self._inputs.get_nowait()
        self._inputs.put_nowait((_HARD_STOP, self._hard_stop_prompt))

    def _caller_active(self) -> None:
        self._last_activity = self._tick
        self._idle = 0
        self._waiting_for_user = False

    async def _recognise(self) -> None:
        transcriber = self._transcriber
        while self._pending and not self._ending.is_set():
            batch, self._pending = self._pending, []
            try:
                await asyncio.to_thread(transcriber.feed, batch)
            except TranscriptionFailed as exc:
                log.error("ai on call %s: speech recognition failed: %s", self.call.id, exc)
                transcriber.close()
                continue
            # Taken out between two feeds (never while the thread runs): a long call's partial
            # hypotheses do not pile up.
            heard = list(transcriber.results)
            transcriber.results.clear()
            for utterance in heard:
                if utterance.final:
                    self._heard(utterance.text)
                else:
                    self._hearing(utterance.text)

    def _interrupts(self) -> bool:
        """Caller words now would cut the agent's speech (with ``barge_min_words``)."""
        return (
            self._barge_words is not None
            and bool(self._speaking)
            and self._bargeable
            and not self.held
            and not self._ending.is_set()
            and not self._hard_stopping
        )

    def _hearing(self, partial: str) -> None:
        """A partial hypothesis of the caller's utterance: with ``barge_min_words``, the first
        one with that many words cuts the agent's speech; the utterance's final text is the
        turn."""
        words = self._barge_words
        if words is None or not self._interrupts():
            return
        text = self._hints.apply(partial)
        if len(text.split()) >= words:
            log.info("ai on call %s: %r so far: barge-in", self.call.id, text)
            self._barge_in()

    def _heard(self, heard: str) -> None:
        """One recognised utterance: a turn, unless held; with ``barge_min_words``, words
        that come while the agent speaks interrupt it only when there are that many (fewer
        are dropped: backchannel). Mostly a partial hypothesis has interrupted it already
        (:meth:`_hearing`); this is the check where there are none (whisper)."""
        if self.held or self._ending.is_set() or self._hard_stopping:
            return
        text = self._hints.apply(heard)
        if self._barge_words is not None and self._interrupts():
            if len(text.split()) < self._barge_words:
                log.info("ai on call %s: %r is too short to barge in", self.call.id, text)
                return
            self._barge_in()
        self._caller_active()
        self._inputs.put_nowait(("user", text))

    def _on_digit(self, digit: str) -> None:
        if not self.held and not self._ending.is_set() and not self._hard_stopping:
            self._caller_active()
            self._inputs.put_nowait(("user", f"DTMF: {digit}"))

    def _barge_in(self) -> None:
        log.info("ai on call %s: barge-in", self.call.id)
        self._barge_ins += 1
        self._live.clear()
        if self._played is not None and not self._played.done():
            self._played.set_result(None)  # its mark was cleared with it
        while not self._sentences.empty():
            self._sentences.get_nowait()
        self._speaking = 0

    # ------------------------------------------------------------------ speaking

    def say(self, sentence: str, *, bargeable: bool = True) -> None:
        sentence = sentence.strip()
        if sentence and not self._ending.is_set():
            self._speaking += 1
            self._awaiting_caller = True
            self._sentences.put_nowait((sentence, bargeable))

    async def _speak_loop(self) -> None:
        while (item := await self._sentences.get()) is not None:
            sentence, self._bargeable = item
            try:
                samples = await synthesise(
                    self._services.audio, sentence, language=self._language, voice=self._voice
                )
                if self._speaking:  # not barged in while synthesising
                    self._live.push(samples)
                    done = self._played = asyncio.get_running_loop().create_future()
                    self._live.on_mark = self._on_mark
                    self._live.mark(sentence[:20])
                    # Waiting for the mark keeps `_speaking` true while the sentence plays.
                    await done
            except Exception:
                log.exception("ai on call %s: cannot speak %r", self.call.id, sentence)
            self._speaking = max(0, self._speaking - 1)
            self._bargeable = True

    def _on_mark(self, _name: str) -> None:
        if self._played is not None and not self._played.done():
            self._played.set_result(None)

    async def _drain_speech(self) -> None:
        """Let the last words play out (a goodbye before a hang-up), without waiting on a
        call that is gone."""
        deadline = time.monotonic() + 30
        while self._speaking and not self.call.is_terminal and time.monotonic() < deadline:
            if self._ending.is_set() and self.end_action is None and not self.hang_up:
                return  # stopped from outside: at once
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------------ thinking

    def _tools(self) -> list[dict[str, Any]]:
        allowed = self._flow.allowed_functions() if self._flow is not None else None
        tools = []
        for name, f in self._functions.items():
            if allowed is not None and name not in allowed:
                continue
            tools.append(
                {
                    "type": "function",
                    "function": {
                        "name": name,
                        "description": str(f.get("description") or f.get("purpose") or name),
                        "parameters": f.get("parameters") or {"type": "object", "properties": {}},
                    },
                }
            )
        tools.extend(self._native_tools)
        if self._flow is not None:
            tools.extend(self._flow.tools())
        return tools

    async def _think(self) -> None:
        self._end_turn = False
        for _ in range(MAX_TOOL_ROUNDS):
            self._refresh_system()
            try:
                reply = await self._stream_reply()
            except LlmError as exc:
                log.error("ai on call %s: the model failed: %s", self.call.id, exc)
                self._services.record_event(
                    self.call, EVENT, {"state": "model_error", "error": str(exc)}
                )
                return
            message: dict[str, Any] = {"role": "assistant", "content": reply.text}
            if reply.tool_calls:
                message["tool_calls"] = [
                    {
                        "id": tc.id,
                        "type": "function",
                        "function": {"name": tc.name, "arguments": tc.arguments},
                    }
                    for tc in reply.tool_calls
                ]
            self.messages.append(message)
            if reply.text:
                self._log("assistant", reply.text)
            if not reply.tool_calls:
                moved = self._skip_user_turn()
                if moved is None:
                    return
                # The step's turn is done and the caller's is skipped: the next step's turn.
                self.messages.append({"role": "system", "content": moved})
                continue
            self._isolate = False
            results = [(tc.id, await self._call_function(tc)) for tc in reply.tool_calls]
            if self._isolate:
                # An isolated context starts afresh: the system prompt and this tool round.
                self._reset_messages()
                self.messages.append(message)
            for call_id, result in results:
                self.messages.append({"role": "tool", "tool_call_id": call_id, "content": result})
            if self._ending.is_set() or self._end_turn:
                return

    def _skip_user_turn(self) -> str | None:
        """A step with ``skip_user_turn`` moves on to its next step once the agent has had
        its turn, without waiting for the caller; the move's text, or None to wait."""
        flow = self._flow
        if flow is None or self._ending.is_set() or self._end_turn or not flow.skips_user_turn():
            return None
        following = flow.next_steps()
        return flow.move_step(following[0]) if following else None

    async def _stream_reply(self) -> Reply:
        buffer = ""
        text: list[str] = []
        reply: Reply | None = None
        barge_ins = self._barge_ins
        async for event in self._llm.stream(self.messages, tools=self._tools(), model=self._model):
            if isinstance(event, TextDelta):
                text.append(event.text)
                buffer += event.text
                *done, buffer = _SENTENCE_END.split(buffer)
                for sentence in done:
                    self.say(sentence)
            else:
                reply = event
            if self._ending.is_set() or self._barge_ins != barge_ins:
                # Interrupted: the caller's words are the next turn; the rest of this reply
                # is neither spoken nor kept as said.
                return Reply("".join(text) + " ...")
        self.say(buffer)
        return reply or Reply("".join(text))

    # ------------------------------------------------------------------ SWAIG

    def _meta_token(self, f: Mapping[str, Any]) -> str:
        defaults = (self._params.get("SWAIG") or {}).get("defaults") or {}
        return str(
            f.get("meta_data_token") or f.get("web_hook_url") or defaults.get("web_hook_url") or ""
        )

    def _swml_vars(self) -> dict[str, Any]:
        """The call's SWML variables now, as ``params.swaig_post_swml_vars`` allows (all of
        them unless it is false or a list of names)."""
        interpreter = self.call.swml
        variables = dict(interpreter.vars) if interpreter is not None else {}
        setting = self._tuning.get("swaig_post_swml_vars", True)
        if isinstance(setting, list):
            return {k: variables[k] for k in map(str, setting) if k in variables}
        if setting is False or str(setting).lower() == "false":
            return {}
        return variables

    async def _call_function(self, tc: ToolCall) -> str:
        self._log("function", tc.arguments, function=tc.name)
        if tc.name in self._natives and tc.name not in self._functions:
            return await self._native(tc)
        if self._flow is not None and tc.name in _FLOW_TOOLS and tc.name not in self._functions:
            before = self._flow.context
            result, self._isolate = self._flow.answer(tc.name, tc.arguments)
            self._say_fillers(before)
            return result
        f = self._functions.get(tc.name)
        allowed = self._flow.allowed_functions() if self._flow is not None else None
        if allowed is not None and tc.name not in allowed:
            f = None
        defaults = (self._params.get("SWAIG") or {}).get("defaults") or {}
        url = (f or {}).get("web_hook_url") or defaults.get("web_hook_url")
        if f is None or not url:
            return json.dumps({"error": f"no function {tc.name!r} can be called"})
        try:
            parsed = json.loads(tc.arguments) if tc.arguments.strip() else {}
        except ValueError:
            parsed = None
        token = self._meta_token(f)
        request = {
            "app_name": "callplane",
            "function": tc.name,
            "purpose": f.get("purpose") or f.get("description"),
            "argument_desc": f.get("parameters"),
            "argument": {
                "parsed": [parsed] if parsed is not None else [],
                "raw": tc.arguments,
                "substituted": tc.arguments,
            },
            "meta_data": self._meta_data.get(token, {}),
            "meta_data_token": token,
            "global_data": self.global_data,
            "SWMLVars": self._swml_vars(),
            "call_id": self.call.id,
            "ai_session_id": self.control_id,
            "content_type": "text/swaig",
            "version": "2.0",
        }
        if _true(self._tuning.get("swaig_post_conversation")):
            request["conversation"] = self.messages
        http = self._services.http
        if http is None:
            return json.dumps({"error": "function web hooks are not available"})
        try:
            response = await http.post(str(url), json=request, timeout=FUNCTION_TIMEOUT)
            response.raise_for_status()
            answer = response.json()
        except (httpx.HTTPError, ValueError, OSError) as exc:
            log.warning("ai on call %s: function %s failed: %r", self.call.id, tc.name, exc)
            self._services.record_event(
                self.call,
                EVENT,
                {"state": "function_error", "function": tc.name, "error": repr(exc)[:300]},
            )
            return json.dumps({"error": f"the function {tc.name} failed"})
        if not isinstance(answer, dict):
            return json.dumps({"error": f"the function {tc.name} answered no object"})
        actions = answer.get("action") or []
        for action in actions if isinstance(actions, list) else [actions]:
            if isinstance(action, dict):
                await self._act(action, token)
        return str(answer.get("response") or "")

    async def _native(self, tc: ToolCall) -> str:
        """``SWAIG.native_functions``: answered here, no web hook."""
        try:
            args = json.loads(tc.arguments) if tc.arguments.strip() else {}
        except ValueError:
            args = {}
        if not isinstance(args, dict):
            args = {}
        if tc.name == "check_time":
            zone = self._zone
            if args.get("timezone"):
                try:
                    zone = time_zone(args["timezone"])
                except ValueError as exc:
                    return f"error: {exc}"
            return check_time(zone)
        if tc.name == "wait_seconds":
            seconds = wait_seconds_argument(args)
            await self._wait_ticks(seconds * TICKS_PER_SECOND)
            return f"Waited {seconds} seconds."
        # wait_for_user: no further model round; the caller's next words are the next turn.
        self._waiting_for_user = True
        self._end_turn = True
        return "Waiting for the user to speak."

    async def _wait_ticks(self, ticks: int) -> None:
        self._waited.clear()
        self._wait_until = self._tick + ticks
        waited = asyncio.ensure_future(self._waited.wait())
        ending = asyncio.ensure_future(self._ending.wait())
        try:
            await asyncio.wait({waited, ending}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waited.cancel()
            ending.cancel()
            self._wait_until = None

    async def _act(self, action: dict[str, Any], token: str = "") -> None:
        if "say" in action:
            self.say(str(action["say"]))
        if isinstance(action.get("set_global_data"), dict):
            self.global_data.update(action["set_global_data"])
        for key in _names(action.get("unset_global_data")):
            self.global_data.pop(key, None)
        if isinstance(action.get("set_meta_data"), dict):
            self._meta_data.setdefault(token, {}).update(action["set_meta_data"])
        for key in _names(action.get("unset_meta_data")):
            self._meta_data.get(token, {}).pop(key, None)
        self._change_flow(action)
        if isinstance(action.get("context_switch"), dict):
            switch = action["context_switch"]
            if switch.get("system_prompt"):
                self._system_prompt = str(switch["system_prompt"])
            if _true(switch.get("consolidate")):
                # The conversation restarts under the new prompt (no summary is made).
                self._isolate = True
            if switch.get("user_prompt"):
                self._inputs.put_nowait(("user", str(switch["user_prompt"])))
        if action.get("hold") is not None and not self.held:
            hold = action["hold"]
            self.hold(str(hold.get("timeout", "") if isinstance(hold, dict) else hold))
        if "SWML" in action:
            document = action["SWML"]
            if isinstance(document, str):
                try:
                    document = json.loads(document)
                except ValueError:
                    document = None
            if isinstance(document, dict):
                self.end_action = document
                self._ending.set()
        if action.get("stop"):
            self._ending.set()
        if action.get("hang_up"):
            self.hang_up = True
            self._ending.set()

    def _change_flow(self, action: Mapping[str, Any]) -> None:
        """SWAIG ``change_context`` / ``change_step`` actions: a function moves the
        conversation anywhere in ``prompt.contexts``."""
        if self._flow is None:
            return
        try:
            if action.get("change_context"):
                before = self._flow.context
                _, isolated = self._flow.move_context(str(action["change_context"]), forced=True)
                self._isolate = self._isolate or isolated
                self._say_fillers(before)
            if action.get("change_step"):
                self._flow.move_step(str(action["change_step"]), forced=True)
        except FlowError as exc:
            log.warning("ai on call %s: %s", self.call.id, exc)

    def _say_fillers(self, before: str) -> None:
        """On a change of context: one of the old context's ``exit_fillers`` and one of the
        new one's ``enter_fillers`` (in the agent's language), before the model goes on."""
        flow = self._flow
        if flow is None or flow.context == before:
            return
        for phrases in (
            flow.fillers(before, "exit_fillers", self._language),
            flow.fillers(flow.context, "enter_fillers", self._language),
        ):
            if phrases:
                self.say(random.choice(phrases))

    # ------------------------------------------------------------------ control

    def hold(self, timeout: str | None) -> None:
        if self.held:
            raise CommandError(409, "invalid_state", "the AI agent is already on hold", None)
        self.held = True
        self._barge_in()
        self._hold_audio = asyncio.get_running_loop().create_task(self._play_hold_audio())
        try:
            seconds = min(max(float(timeout or 300), 0.0), 900.0)
        except ValueError:
            seconds = 300.0
        self._hold_timer = asyncio.get_running_loop().call_later(seconds, self._timeout_hold)

    def _timeout_hold(self) -> None:
        self._end_hold()

    def _end_hold(self) -> None:
        self.held = False
        if self._hold_timer is not None:
            self._hold_timer.cancel()
        if self._hold_audio is not None:
            self._hold_audio.cancel()
            self._hold_audio = None
            self._live.clear()

    async def _play_hold_audio(self) -> None:
        """A soft beep every few seconds while held, after the hold prompt (if any) is
        spoken; the agent neither listens nor answers meanwhile."""
        while self.held and not self._ending.is_set():
            if not self._speaking and self._live.queued_frames < 50:
                self._live.push(_HOLD_CYCLE)
            await asyncio.sleep(0.2)

    def unhold(self) -> None:
        if not self.held:
            raise CommandError(409, "invalid_state", "the AI agent is not on hold", None)
        self._end_hold()

    def message(self, p: Mapping[str, Any]) -> None:
        reset = p.get("reset") or {}
        if isinstance(p.get("global_data"), dict):
            self.global_data.update(p["global_data"])
        if reset.get("system_prompt"):
            self._system_prompt = str(reset["system_prompt"])
        if reset.get("full_reset") or reset.get("system_prompt"):
            self._reset_messages()
        if reset.get("user_prompt"):
            self._inputs.put_nowait(("user", str(reset["user_prompt"])))
        text = p.get("message_text")
        if not text:
            return
        role = str(p.get("role") or "user")
        if role == "user":
            if self._hard_stopping:
                return
            self._caller_active()
            self._inputs.put_nowait(("user", str(text)))
        else:
            self.messages.append({"role": role, "content": str(text)})
            self._log(role, str(text))

    # ------------------------------------------------------------------ post-prompt

    async def _post_prompt(self) -> None:
        url = self._params.get("post_prompt_url")
        summary: str | None = None
        if self._post_prompt_text:
            post = self._with_global_data(self._post_prompt_text)
            messages = [*self.messages, {"role": "system", "content": post}]
            try:
                summary = await complete(self._llm, messages, model=self._model)
            except LlmError as exc:
                log.error("ai on call %s: the post-prompt failed: %s", self.call.id, exc)
        if url:
            payload = {
                "action": "post_conversation",
                "ai_session_id": self.control_id,
                "call_id": self.call.id,
                "app_name": "callplane",
                "content_type": "text/swaig",
                "global_data": self.global_data,
                "post_prompt_data": {
                    "raw": summary,
                    "substituted": summary,
                    "parsed": _parsed(summary),
                },
                "call_log": self.log_entries,
                "conversation": self.messages,
            }
            self._services.deliver(self.call, payload, str(url))


def _true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _names(value: Any) -> list[str]:
    """An ``unset_*`` action's keys: one name or a list of them."""
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if isinstance(value, list) else []


def _ranged(tuning: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    """An integer parameter of ``params`` within the schema's range (0 also for the
    timeouts the reference lets 0 disable). Raises ValueError naming it."""
    value = tuning.get(key)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"params.{key} must be an integer, not {value!r}") from None
    if number == 0 and key == "attention_timeout":
        return 0
    if not low <= number <= high:
        raise ValueError(f"params.{key} must be within {low}..{high}, not {number}")
    return number


def _duration_ticks(value: Any) -> int | None:
    """``params.hard_stop_time`` (``1h45m30s``, ``2m``, ``30s``) in ticks; None: no limit."""
    if value is None or value == "":
        return None
    match = _DURATION.fullmatch(str(value).strip())
    if match is None:
        raise ValueError(f"params.hard_stop_time must be like 1h45m30s, not {value!r}")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ValueError(f"params.hard_stop_time must be longer than nothing, not {value!r}")
    return total * TICKS_PER_SECOND


def _local_voice(language: Mapping[str, Any], call_id: str) -> str | None:
    """``languages[].voice`` (``<engine>.<voice>[:<model>]``, or ``engine`` + ``voice``) as the
    play path's TTS understands it: a flite or espeak-ng voice (the TTS speaks English with
    flite and other languages with espeak-ng, so a voice of the other engine is not used).
    Other engines' voices are not available here: the default voice speaks, and the log says
    so."""
    voice = language.get("voice")
    if not voice:
        return None
    engine, dot, name = str(voice).partition(".")
    if not dot:
        engine, name = str(language.get("engine") or ""), str(voice)
    name = name.split(":", 1)[0]
    if _LOCAL_ENGINES.get(engine.lower()) or (not engine and name in FliteTts.VOICES):
        return name
    log.warning(
        "ai on call %s: voice %r is not available (engines here: flite, espeak-ng); "
        "the default voice speaks",
        call_id,
        voice,
    )
    return None


def _parsed(summary: str | None) -> list[Any]:
    try:
        return [json.loads(summary)] if summary else []
    except ValueError:
        return []


# ---------------------------------------------------------------------- SWML and REST


_agents: set[asyncio.Task[str]] = set()


async def _run(op: AiOperation) -> str:
    try:
        await op.run()
        return "success"
    except Exception:
        log.exception("ai on call %s failed", op.call.id)
        op._detach()
        op.move("error")
        return "failed"
    finally:
        unregister(op.call, op)


def running_agent(call: Call) -> AiOperation:
    for op in call.operations.values():
        if isinstance(op, AiOperation):
            return op
    raise CommandError(422, "invalid_state", f"no AI agent runs on call {call.id}", "id")


async def swml_ai(services: Services, call: Call, params: dict[str, Any]) -> dict[str, Any] | None:
    if not isinstance(params, dict):
        raise SwmlError("ai takes an object")
    if services.llm is None or services.recognizer is None:
        missing = (
            "language model (--llm-url, --llm-model)"
            if services.llm is None
            else ("speech recognizer (pocketsphinx)")
        )
        log.error("ai on call %s: no %s is configured; the agent cannot run", call.id, missing)
        services.record_event(call, EVENT, {"state": "error", "error": f"no {missing}"})
        return {"ai_result": "failed"}
    if call.status is not CallStatus.ANSWERED:
        await services.answer(call)
    require_answered(call, "given an AI agent")
    try:
        op = AiOperation(call, services, services.llm, services.recognizer, params)
        register(call, op)
    except (TypeError, ValueError, AttributeError) as exc:
        raise SwmlError(f"invalid ai parameters: {exc}") from exc
    except CommandError as exc:
        raise SwmlError(exc.message) from exc
    # The agent runs in its own task: when the call hangs up and the script is cancelled, the
    # post-prompt (the summary of exactly that conversation) still runs and is delivered.
    task = asyncio.create_task(_run(op))
    _agents.add(task)
    task.add_done_callback(_agents.discard)
    try:
        result = await asyncio.shield(task)
    except asyncio.CancelledError:
        await op.stop()
        raise
    if result == "failed":
        return {"ai_result": "failed"}
    if op.hang_up and not call.is_terminal:
        await services.hang_up(call, "hangup")
    if op.end_action is not None and not call.is_terminal and call.swml is not None:
        # The function handed the call to SWML (a connect, ...): it replaces this script.
        replacing = asyncio.create_task(call.swml.replace(op.end_action))
        call.tasks.add(replacing)
        replacing.add_done_callback(call.tasks.discard)
        await asyncio.Event().wait()  # cancelled by the replacement
    return {"ai_result": "success"}


async def _message(services: Services, call: Call, p: dict[str, Any]) -> None:
    running_agent(call).message(p)


async def _hold(services: Services, call: Call, p: dict[str, Any]) -> None:
    agent = running_agent(call)
    timeout = p.get("timeout")
    agent.hold(str(timeout) if timeout is not None else None)
    if p.get("prompt"):
        agent.say(str(p["prompt"]))


async def _unhold(services: Services, call: Call, p: dict[str, Any]) -> None:
    agent = running_agent(call)
    agent.unhold()
    if p.get("prompt"):
        agent.say(str(p["prompt"]))


async def _stop(services: Services, call: Call, p: dict[str, Any]) -> None:
    await running_agent(call).stop()


COMMANDS: dict[str, CommandHandler] = {
    "calling.ai_message": _message,
    "calling.ai_hold": _hold,
    "calling.ai_unhold": _unhold,
    "calling.ai.stop": _stop,
}
SWML_METHODS: dict[str, SwmlMethod] = {"ai": swml_ai}
