"""SWML `ai`: a voice agent on the call (swml.md §2.4), and its REST control
(`calling.ai_message`, `calling.ai_hold`, `calling.ai_unhold`, `calling.ai.stop`).

The loop
--------
listen -> recognise -> think -> speak, until the agent is stopped or the call ends:

* **listen / recognise**: a media listener queues the leg's inbound frames; one worker feeds
  them (off the event loop) to a chain of recognition sessions, the same
  :class:`~callplane.engine.operations.transcribe.Transcriber` as `transcribe`, with
  ``params.end_of_speech_timeout`` (default 700 ms) ending each utterance. Every utterance
  with text is one caller turn. Key presses (the call's ``KeyPresses``: RFC 4733 and in-band)
  reach the model as caller turns too (``DTMF: 5``).
* **think**: the server's language model (``Services.llm``, an OpenAI-compatible endpoint)
  gets the system prompt (``prompt.text``, ``global_data`` appended as JSON when set), the
  conversation and the SWAIG functions as tools; ``params.ai_model`` overrides the model name.
* **speak**: the reply is cut into sentences as it streams; each is synthesised (the server's
  TTS through ``Services.audio``) and pushed to one ``LiveSource`` played on the leg for the
  agent's lifetime, so the first sentence plays while the model still writes the rest.
* **barge-in**: a voice activity detector watches the inbound frames; caller speech while the
  agent talks clears the ``LiveSource`` and drops the sentences not yet spoken. What the caller
  says is recognised as the next turn.

SWAIG functions
---------------
A tool call naming a function with a ``web_hook_url`` POSTs the SWAIG request (``function``,
``argument`` {parsed, raw, substituted}, ``meta_data``, ``global_data``, ``SWMLVars``,
``content_type: text/swaig``, ...) through the engine's HTTP client (the outbound target policy
applies). The reply's ``response`` goes back to the model as the tool result; its ``action``
list is acted on: ``say`` (spoken), ``set_global_data`` (merged), ``stop`` (the agent ends),
``hang_up`` (the call ends), ``SWML`` (the agent ends and the document replaces the call's
script, e.g. a ``connect``), ``hold`` (as ``ai_hold``). A failing or slow function (10 s) is
reported to the model and the log; the call goes on.

Ending
------
``post_prompt`` (its ``text``) is sent to the model with the conversation once the agent ends;
the answer and the conversation log (roles, text, timestamps, tool calls) are POSTed to
``post_prompt_url`` (the webhook outbox: durable, signed). SWML then continues after ``ai``
with ``ai_result`` (``success`` | ``failed``) set. Without a configured model ``ai`` fails at
once: an error in the log, a ``calling.call.ai`` ``error`` event, ``ai_result: failed``.

Events (``calling.call.ai`` to the call's event log): ``started``, ``finished`` or ``error``.
"""

from __future__ import annotations

import asyncio
import json
import logging
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
from callplane.engine.operations.base import Operation, register, require_answered
from callplane.engine.operations.transcribe import Transcriber, TranscriptionFailed
from callplane.engine.services import CommandHandler, Services, SwmlMethod
from callplane.engine.swml.errors import SwmlError
from callplane.media.dsp.vad import SpeechStart, Vad
from callplane.media.sources import LiveSource, tone
from callplane.providers.llm import LanguageModel, LlmError, Reply, TextDelta, ToolCall

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
# RMS of a 10 ms window, about -57 dBFS: above flite's ~0.2 s of breath noise (RMS <= 40,
# single samples past 60), below a soft first consonant (f, h: RMS 80-110).
_ONSET_LEVEL = 45
_ONSET_KEEP = 240  # 30 ms before the first sound
# Hold audio: 0.3 s of 440 Hz at -24 dBFS, then 2.7 s of silence, repeated.
_HOLD_CYCLE = np.concatenate(
    [tone(440, 0.3, level_dbfs=-24.0).render(), np.zeros(8000 * 27 // 10, dtype=np.int16)]
)
_RECOGNIZER_HANGOVER = 0.2  # providers.asr: voicing hangover counted as speech


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
        self._model = tuning.get("ai_model") or None
        self._language = str((params.get("languages") or [{}])[0].get("code") or "en-US")
        self._voice = (params.get("languages") or [{}])[0].get("voice")
        eos = float(tuning.get("end_of_speech_timeout") or DEFAULT_END_OF_SPEECH * 1000) / 1000
        # The recognizer counts speech on for 200 ms past the last voiced frame (its
        # consonant hangover): the timeout is the silence after the voice, so that is taken off.
        self._transcriber = Transcriber(
            recognizer, end_silence=max(0.1, eos - _RECOGNIZER_HANGOVER)
        )
        self._vad = Vad(start_frames=5)
        self.global_data: dict[str, Any] = dict(params.get("global_data") or {})
        prompt = params.get("prompt") or {}
        self._system_prompt = str(prompt.get("text") or "")
        self.messages: list[dict[str, Any]] = []
        self.log_entries: list[dict[str, Any]] = []
        self._functions = {
            str(f["function"]): f
            for f in ((params.get("SWAIG") or {}).get("functions") or [])
            if isinstance(f, dict) and f.get("function")
        }
        self._inputs: asyncio.Queue[str] = asyncio.Queue()
        self._pending: list[Frame] = []
        self._worker: asyncio.Task[None] | None = None
        self._live = LiveSource(f"ai({self.control_id})", max_frames=_LIVE_FRAMES)
        self._playback: Playback | None = None
        self._speaking = 0  # sentences queued or playing in the current reply
        self._barge_ins = 0  # a reply still streaming when this moves is not spoken further
        self._speech_task: asyncio.Task[None] | None = None
        self._played: asyncio.Future[None] | None = None  # the sentence playing now
        self._sentences: asyncio.Queue[str | None] = asyncio.Queue()
        self._ending = asyncio.Event()
        self.held = False
        self._hold_timer: asyncio.TimerHandle | None = None
        self._hold_audio: asyncio.Task[None] | None = None
        self.end_action: dict[str, Any] | None = None  # the SWML a function handed over
        self.hang_up = False

    # ------------------------------------------------------------------ lifecycle

    def _reset_messages(self) -> None:
        system = self._system_prompt
        if self.global_data:
            system += "\n\nglobal_data: " + json.dumps(self.global_data)
        self.messages = [{"role": "system", "content": system}] if system else []

    def _start(self) -> None:
        media = self.call.media
        if media is None:
            raise CommandError(422, "invalid_state", f"call {self.call.id} has no media", "id")
        self._reset_messages()
        self._playback = media.play(self._live)
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
            greeting = (self._params.get("params") or {}).get("static_greeting")
            if greeting:
                self.say(str(greeting))
                self._log("assistant", str(greeting))
                self.messages.append({"role": "assistant", "content": str(greeting)})
            while not self._ending.is_set():
                text = await self._next_input()
                if text is None:
                    break
                self._log("user", text)
                self.messages.append({"role": "user", "content": text})
                await self._think()
            await self._drain_speech()
        finally:
            self._detach()
        await self._post_prompt()
        self.move("finished")

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

    async def _next_input(self) -> str | None:
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
        for event in self._vad.feed(frames.inbound, frames.tick * 0.02):
            if isinstance(event, SpeechStart) and self._speaking and not self.held:
                self._barge_in()
        self._pending.append(frames.inbound)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._recognise())

    async def _recognise(self) -> None:
        while self._pending and not self._ending.is_set():
            batch, self._pending = self._pending, []
            before = len(self._transcriber.segments)
            try:
                await asyncio.to_thread(self._transcriber.feed, batch)
            except TranscriptionFailed as exc:
                log.error("ai on call %s: speech recognition failed: %s", self.call.id, exc)
                self._transcriber.close()
                continue
            for text in self._transcriber.segments[before:]:
                if not self.held:
                    self._inputs.put_nowait(text)

    def _on_digit(self, digit: str) -> None:
        if not self.held and not self._ending.is_set():
            self._inputs.put_nowait(f"DTMF: {digit}")

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

    def say(self, sentence: str) -> None:
        sentence = sentence.strip()
        if sentence and not self._ending.is_set():
            self._speaking += 1
            self._sentences.put_nowait(sentence)

    async def _speak_loop(self) -> None:
        while (sentence := await self._sentences.get()) is not None:
            try:
                source = await self._services.audio.resolve(
                    {"type": "tts", "params": {"text": sentence}},
                    language=self._language,
                    voice=self._voice,
                    gender="female",
                )
                if self._speaking:  # not barged in while synthesising
                    self._live.push(_without_leading_silence(source.render()))
                    done = self._played = asyncio.get_running_loop().create_future()
                    self._live.on_mark = self._on_mark
                    self._live.mark(sentence[:20])
                    # Waiting for the mark keeps `_speaking` true while the sentence plays.
                    await done
            except Exception:
                log.exception("ai on call %s: cannot speak %r", self.call.id, sentence)
            self._speaking = max(0, self._speaking - 1)

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
        tools = []
        for name, f in self._functions.items():
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
        return tools

    async def _think(self) -> None:
        for _ in range(MAX_TOOL_ROUNDS):
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
                return
            for tc in reply.tool_calls:
                result = await self._call_function(tc)
                self.messages.append({"role": "tool", "tool_call_id": tc.id, "content": result})
            if self._ending.is_set():
                return

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

    async def _call_function(self, tc: ToolCall) -> str:
        self._log("function", tc.arguments, function=tc.name)
        f = self._functions.get(tc.name)
        defaults = (self._params.get("SWAIG") or {}).get("defaults") or {}
        url = (f or {}).get("web_hook_url") or defaults.get("web_hook_url")
        if f is None or not url:
            return json.dumps({"error": f"no function {tc.name!r} can be called"})
        try:
            parsed = json.loads(tc.arguments) if tc.arguments.strip() else {}
        except ValueError:
            parsed = None
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
            "meta_data": f.get("meta_data") or {},
            "meta_data_token": f.get("meta_data_token") or tc.name,
            "global_data": self.global_data,
            "SWMLVars": {},
            "call_id": self.call.id,
            "ai_session_id": self.control_id,
            "content_type": "text/swaig",
            "version": "2.0",
        }
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
                await self._act(action)
        return str(answer.get("response") or "")

    async def _act(self, action: dict[str, Any]) -> None:
        if "say" in action:
            self.say(str(action["say"]))
        if isinstance(action.get("set_global_data"), dict):
            self.global_data.update(action["set_global_data"])
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
            self._inputs.put_nowait(str(reset["user_prompt"]))
        text = p.get("message_text")
        if not text:
            return
        role = str(p.get("role") or "user")
        if role == "user":
            self._inputs.put_nowait(str(text))
        else:
            self.messages.append({"role": role, "content": str(text)})
            self._log(role, str(text))

    # ------------------------------------------------------------------ post-prompt

    async def _post_prompt(self) -> None:
        post = self._params.get("post_prompt") or {}
        url = self._params.get("post_prompt_url")
        summary: str | None = None
        if post.get("text"):
            messages = [*self.messages, {"role": "system", "content": str(post["text"])}]
            try:
                async for event in self._llm.stream(messages, model=self._model):
                    if isinstance(event, Reply):
                        summary = event.text
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


def _without_leading_silence(samples: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """TTS engines open with a breath of near-silence (flite: ~0.2 s); the caller waits for it."""
    n = samples.size // 80 * 80
    rms = np.sqrt(np.mean(samples[:n].astype(np.float64).reshape(-1, 80) ** 2, axis=1))
    loud = np.flatnonzero(rms > _ONSET_LEVEL)
    if loud.size == 0:
        return samples
    return samples[max(0, int(loud[0]) * 80 - _ONSET_KEEP) :]


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
        op.call.operations.pop((op.kind, op.control_id), None)


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
