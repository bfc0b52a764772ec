"""SWML `ai` parameters (prompt.pom, contexts, native functions, timers, hints, ai_volume,
voices, barge_min_words, static_greeting_no_barge, SWMLVars / meta_data / global_data in SWAIG
requests), driven in process by TickFrames alone (tests/e2e/ticks.py) against the local
OpenAI-compatible model server (tests/providers/llm_server.py, real HTTP on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import datetime
import logging
import sys
import zoneinfo
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np
import pytest
from harness import Receiver, until
from speech import requires_speech
from ticks import Emitted, TickSession, tick_call, tick_services

from callplane.engine.audio import AudioResolver
from callplane.engine.calls import Call
from callplane.engine.operations import ai as ai_module
from callplane.engine.operations.ai_native import Hints, check_time, native_tools, time_zone
from callplane.engine.operations.ai_prompt import ConversationFlow, FlowError, render_pom
from callplane.engine.operations.speech import synthesise
from callplane.engine.services import Services
from callplane.engine.swml.errors import SwmlError
from callplane.engine.swml.interpreter import SwmlInterpreter
from callplane.netpolicy import TargetPolicy
from callplane.providers.asr import PocketSphinxRecognizer, Upsampler2x, word_error_rate
from callplane.providers.llm import LlmSettings, OpenAiChat
from callplane.providers.tts import DefaultTts

sys.path.insert(0, str(Path(__file__).parents[1] / "media" / "dsp"))
sys.path.insert(0, str(Path(__file__).parents[1] / "providers"))
from dsp_audio import flite, to_frames
from llm_server import ModelServer, Turn

POM = [
    {"body": "You are Franklin, the pizza shop's assistant."},
    {
        "title": "Rules",
        "numbered": True,
        "body": "Follow these:",
        "bullets": ["Be brief", "Be kind"],
        "numberedBullets": True,
        "subsections": [{"title": "Payment", "numbered": True, "body": "Cash only."}],
    },
    {"title": "Menu", "numbered": True, "bullets": ["Margherita", "Pepperoni & <cheese>"]},
]
POM_MARKDOWN = """You are Franklin, the pizza shop's assistant.

## 1. Rules

Follow these:

1. Be brief
2. Be kind

### 1.1. Payment

Cash only.

## 2. Menu

- Margherita
- Pepperoni & <cheese>"""


# ---------------------------------------------------------------------- pure parts


def test_pom_renders_to_markdown_and_xml_and_bad_sections_are_named() -> None:
    assert render_pom(POM) == POM_MARKDOWN
    xml = render_pom(POM, "xml")
    assert xml.startswith("<prompt>\n  <section>\n    <body>You are Franklin")
    assert (
        "<title>Payment</title>" in xml and "<bullet>Pepperoni &amp; &lt;cheese&gt;</bullet>" in xml
    )
    with pytest.raises(FlowError, match=r"pom\[1\] needs a body or bullets"):
        render_pom([{"body": "x"}, {"title": "empty"}])
    with pytest.raises(FlowError, match=r"subsections\[0\]\.bullets must be a list of strings"):
        render_pom([{"body": "x", "subsections": [{"bullets": "one"}]}])
    with pytest.raises(FlowError, match="pom_format"):
        render_pom(POM, "html")


CONTEXTS: dict[str, Any] = {
    "default": {
        "steps": [
            {"name": "greet", "text": "Greet the caller.", "step_criteria": "they said hello"},
            {
                "name": "order",
                "pom": [{"title": "Order", "body": "Take the order."}],
                "functions": ["price"],
                "valid_steps": ["next", "greet"],
                "valid_contexts": ["support"],
            },
            {"name": "bye", "text": "Say goodbye.", "end": True},
        ]
    },
    "support": {
        "isolated": True,
        "text": "You help with complaints.",
        "steps": [{"name": "listen", "text": "Listen."}],
    },
}


def test_contexts_move_only_where_the_step_allows() -> None:
    flow = ConversationFlow(CONTEXTS)
    assert (flow.context, flow.step) == ("default", "greet")
    assert "## Current step: greet\n\nGreet the caller." in flow.prompt()
    assert "This step is complete when: they said hello" in flow.prompt()
    assert [t["function"]["name"] for t in flow.tools()] == ["next_step"]
    assert flow.tools()[0]["function"]["parameters"]["properties"]["step"]["enum"] == ["order"]
    assert flow.allowed_functions() is None
    # The model cannot skip a step nor reach a context the step does not list.
    assert flow.answer("next_step", '{"step": "bye"}')[0].startswith("error:")
    assert flow.answer("change_context", '{"context": "support"}')[0].startswith("error:")
    assert flow.answer("next_step", '{"step": "order"}') == (
        "Now in step 'order'. Follow its instructions.",
        False,
    )
    assert "## Order\n\nTake the order." in flow.prompt()
    assert flow.allowed_functions() == {"price"}
    assert flow.next_steps() == ["bye", "greet"] and flow.next_contexts() == ["support"]
    assert flow.answer("change_context", '{"context": "support"}') == (
        "Now in context 'support', step 'listen'.",
        True,  # isolated: the conversation restarts
    )
    assert flow.prompt().startswith("You help with complaints.")
    assert flow.tools() == []
    # A SWAIG action may go anywhere.
    flow.move_context("default", forced=True)
    flow.move_step("bye", forced=True)
    assert flow.next_steps() == []  # an end step
    for bad, message in [
        ({"sales": CONTEXTS["support"]}, "'default' context"),
        ({"default": {"steps": []}}, "non-empty list"),
        ({"default": {"steps": [{"name": "a"}]}}, "needs a text or a pom"),
        ({"default": {"steps": [{"name": "a", "text": "x", "valid_steps": ["b"]}]}}, "no step"),
        (
            {"default": {"steps": [{"name": "a", "text": "x", "valid_contexts": ["z"]}]}},
            "no context",
        ),
        ({"default": {"steps": [{"name": "next", "text": "x"}]}}, "reserved"),
    ]:
        with pytest.raises(FlowError, match=message):
            ConversationFlow(bad)


def test_native_tools_time_zones_and_hints() -> None:
    names = [t["function"]["name"] for t in native_tools(["check_time", "wait_seconds"])]
    assert names == ["check_time", "wait_seconds"]
    assert native_tools(["adjust_response_latency"]) == []  # accepted, not offered
    with pytest.raises(ValueError, match="no native function 'fly'"):
        native_tools(["fly"])
    assert time_zone(None).key == "US/Central"  # the reference's default
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Base'"):
        time_zone("Mars/Base")
    moment = datetime.datetime(2026, 7, 1, 12, 0, tzinfo=datetime.UTC)
    assert check_time(time_zone("America/Ensenada"), moment) == (
        "It is Wednesday, 01 July 2026, 05:00:00 in America/Ensenada (PDT, UTC-07:00)."
    )
    hints = Hints(
        [
            "pepperoni",
            {"hint": "Acme", "pattern": r"ac\s*me", "replace": "Acme", "ignore_case": True},
        ]
    )
    assert hints.apply("I called AC ME about ac me") == "I called Acme about Acme"
    assert hints.prompt().endswith(": pepperoni, Acme")
    with pytest.raises(ValueError, match=r"hints\[0\]\.pattern"):
        Hints([{"hint": "x", "pattern": "(", "replace": "y"}])


def test_languages_voice_maps_to_a_local_voice_or_falls_back_with_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    voice = ai_module._local_voice
    assert voice({"voice": "flite.rms"}, "c") == "rms"
    assert voice({"voice": "espeak.fr:fast"}, "c") == "fr"
    assert voice({"engine": "espeak-ng", "voice": "de"}, "c") == "de"
    assert voice({"voice": "kal"}, "c") == "kal"
    assert voice({}, "c") is None
    with caplog.at_level(logging.WARNING, "callplane.engine.ai"):
        assert voice({"voice": "gcloud.fr-FR-Neural2-B"}, "c") is None
    assert "'gcloud.fr-FR-Neural2-B' is not available" in caplog.text


# ---------------------------------------------------------------------- agents on ticks


class Agent:
    """One `ai` run on a TickSession, with what it recorded and sent."""

    def __init__(self, call: Call, session: TickSession, runner: asyncio.Task[Any]) -> None:
        self.call = call
        self.session = session
        self.runner = runner
        self.recorded: list[tuple[str, dict[str, Any]]] = []
        self.sent: list[np.ndarray] = []

    @property
    def op(self) -> ai_module.AiOperation:
        return ai_module.running_agent(self.call)

    def tick(self, inbound: np.ndarray | None = None) -> None:
        self.sent.append(self.session.tick(inbound).outbound)

    async def ticks(
        self,
        n: int,
        inbound: np.ndarray | None = None,
        *,
        realtime: bool = False,
        after: Callable[[int], Any] | None = None,
    ) -> None:
        """`n` ticks, as fast as the agent keeps up or, `realtime`, one every 20 ms as the
        media clock gives them (what the recognizer's processes see); `after(k)` follows
        the k-th."""
        frames = [None] * n if inbound is None else list(inbound)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for k, frame in enumerate(frames):
            self.tick(frame)
            if realtime:
                await asyncio.sleep(max(0.0, start + (k + 1) * 0.02 - loop.time()))
            elif k % 10 == 9:
                await asyncio.sleep(0.002)
            if after is not None:
                after(k)


@pytest.fixture(scope="module")
def recognizer() -> Iterator[PocketSphinxRecognizer]:
    """One for the file's agents, as the server has one for all its calls: each new one would
    start its own three decoding processes."""
    shared = PocketSphinxRecognizer()
    yield shared
    shared.close()


@pytest.fixture
async def start_agent(
    model: ModelServer, tmp_path: Path, recognizer: PocketSphinxRecognizer
) -> AsyncIterator[Callable[..., Any]]:
    tts = DefaultTts()
    agents: list[Agent] = []
    async with TargetPolicy().http_client(timeout=httpx.Timeout(5.0)) as http:

        async def start(
            params: dict[str, Any],
            *,
            swml_vars: dict[str, Any] | None = None,
            web: bool = True,
            opens: bool = False,
            inbound: bool = False,
        ) -> Agent:
            """`opens`: the reference default, the agent speaks first; otherwise the caller
            does (`wait_for_user`), so that the model's scripted turns answer the caller."""
            if not opens and isinstance(params.get("params", {}), dict):
                params = {**params, "params": {"wait_for_user": True, **params.get("params", {})}}
            recorded: list[tuple[str, dict[str, Any]]] = []
            emitted = Emitted()
            services: Services = tick_services(
                emitted,
                llm=OpenAiChat(LlmSettings(model.url, "tiny"), http),
                recognizer=recognizer,
                audio=AudioResolver(tmp_path, http, tts),
                http=http if web else None,
                record_event=lambda call, kind, p: recorded.append((kind, p)),
                deliver=lambda call, payload, url: None,
            )
            session = TickSession()
            call = tick_call(session)
            if inbound:
                call.direction = "inbound"
            if swml_vars is not None:
                call.swml = SwmlInterpreter(
                    {"version": "1.0.0", "sections": {"main": []}},
                    cast(Any, None),
                    call={},
                    vars=swml_vars,
                )
            runner = asyncio.create_task(ai_module.SWML_METHODS["ai"](services, call, params))
            await until(lambda: call.operations or runner.done(), 5, "the agent")
            agent = Agent(call, session, runner)
            agent.recorded = recorded
            agent.emitted = emitted  # type: ignore[attr-defined]
            agent.services = services  # type: ignore[attr-defined]
            agents.append(agent)
            return agent

        yield start
        for agent in agents:
            if not agent.runner.done():
                await ai_module.running_agent(agent.call).stop()
                await asyncio.wait_for(agent.runner, 10)


def rms_db(frames: list[np.ndarray]) -> float:
    x = np.concatenate(frames).astype(np.float64)
    return float(20 * np.log10(np.sqrt(np.mean(x**2)) + 1e-9))


def say(text: str) -> np.ndarray:
    audio = to_frames(flite(text, "rms")).ravel()
    return np.concatenate([audio, np.zeros((-audio.size) % 160, np.int16)]).reshape(-1, 160)


def word_ends(text: str, frames: np.ndarray) -> list[int]:
    """The tick (20 ms frame of `frames`) at which each word of `text` ends: pocketsphinx's
    forced alignment of the words to the audio."""
    import pocketsphinx

    upsampler = Upsampler2x()
    pcm = np.concatenate([upsampler.process(f) for f in frames]).tobytes()
    decoder = pocketsphinx.Decoder(loglevel="FATAL", samprate=16000)
    decoder.set_align_text(text.lower())
    decoder.start_utt()
    decoder.process_raw(pcm, False, True)
    decoder.end_utt()
    ends = [seg.end_frame // 2 for seg in decoder.seg() if not seg.word.startswith("<")]
    assert len(ends) == len(text.split()), "the alignment lost words"
    return ends


async def test_invalid_parameters_are_a_clear_swml_error(
    start_agent: Callable[..., Any],
) -> None:
    for params, message in [
        ({"attention_timeout": 5000}, r"attention_timeout must be within 10000\.\.600000"),
        ({"outbound_attention_timeout": 0}, r"outbound_attention_timeout must be within"),
        ({"inactivity_timeout": "soon"}, "inactivity_timeout must be an integer"),
        ({"ai_volume": 60}, "ai_volume must be within -50..50"),
        ({"local_tz": "Nowhere/Land"}, "unknown time zone"),
        ({"pom_format": "yaml"}, "pom_format"),
    ]:
        agent = await start_agent({"prompt": {"pom": POM}, "params": params})
        with pytest.raises(SwmlError, match=message):
            await agent.runner
    agent = await start_agent({"prompt": {"text": "t"}, "hints": [{"hint": "x"}]})
    with pytest.raises(SwmlError, match=r"hints\[0\]"):
        await agent.runner


@requires_speech
async def test_pom_contexts_and_next_step_reach_the_model_and_post_prompt_pom(
    start_agent: Callable[..., Any], model: ModelServer
) -> None:
    model.script(
        Turn(tool_calls=[("next_step", {"step": "order"})]),
        Turn(""),
        Turn(tool_calls=[("change_context", {"context": "support"})]),
        Turn(""),
        Turn("summary"),
    )
    agent = await start_agent(
        {
            "prompt": {"pom": POM, "contexts": CONTEXTS},
            "post_prompt": {"pom": [{"title": "Summary", "body": "Summarise."}]},
            "SWAIG": {"functions": [{"function": "price", "description": "p"}]},
            "global_data": {"shop": "corner"},
            "hints": ["pepperoni"],
        }
    )
    agent.session.on_dtmf("1", 100)
    await until(lambda: len(model.requests) >= 2, 5, "the step's round")
    first, second = model.requests[0].body, model.requests[1].body
    system = first["messages"][0]["content"]
    assert system.startswith(POM_MARKDOWN + "\n\n## Current step: greet\n\nGreet the caller.")
    assert "pepperoni" in system and system.endswith('global_data: {"shop": "corner"}')
    # The greet step allows every function; its only move is to `order`.
    assert [t["function"]["name"] for t in first["tools"]] == ["price", "next_step"]
    assert "## Current step: order" in second["messages"][0]["content"]
    assert second["messages"][-1]["content"] == "Now in step 'order'. Follow its instructions."
    assert [t["function"]["name"] for t in second["tools"]] == [
        "price",
        "next_step",
        "change_context",
    ]
    agent.session.on_dtmf("2", 100)
    await until(lambda: len(model.requests) >= 4, 5, "the context change")
    isolated = model.requests[3].body["messages"]
    # An isolated context: the system prompt, the move and its result, nothing before.
    assert [m["role"] for m in isolated] == ["system", "assistant", "tool"]
    assert isolated[0]["content"].startswith(POM_MARKDOWN + "\n\nYou help with complaints.")
    await agent.op.stop()
    assert await asyncio.wait_for(agent.runner, 10) == {"ai_result": "success"}
    assert model.requests[4].body["messages"][-1] == {
        "role": "system",
        "content": "## Summary\n\nSummarise.",
    }


@requires_speech
async def test_check_time_and_wait_seconds_are_answered_without_a_web_hook(
    start_agent: Callable[..., Any], model: ModelServer
) -> None:
    model.script(
        Turn(tool_calls=[("check_time", {})]),
        Turn(tool_calls=[("wait_seconds", {"seconds": 2})]),
        Turn(""),
    )
    agent = await start_agent(
        {
            "prompt": {"text": "t"},
            "params": {"local_tz": "Asia/Kolkata"},
            "SWAIG": {"native_functions": ["check_time", "wait_seconds"]},
        },
        web=False,  # any web hook would fail: there is no HTTP client
    )
    agent.session.on_dtmf("1", 100)
    await until(lambda: len(model.requests) >= 2, 5, "check_time's answer")
    assert [t["function"]["name"] for t in model.requests[0].body["tools"]] == [
        "check_time",
        "wait_seconds",
    ]
    answer = model.requests[1].body["messages"][-1]
    assert answer["role"] == "tool"
    now = datetime.datetime.now(zoneinfo.ZoneInfo("Asia/Kolkata"))
    assert "in Asia/Kolkata (IST, UTC+05:30)" in answer["content"]
    assert now.strftime("%d %B %Y, %H:") in answer["content"] or now.minute == 0
    # wait_seconds 2: the model is asked again after exactly 100 ticks.
    await asyncio.sleep(0.3)  # its stream ended; the wait has begun
    await agent.ticks(99)
    await asyncio.sleep(0.3)
    assert len(model.requests) == 2
    await agent.ticks(1)
    await until(lambda: len(model.requests) >= 3, 5, "the round after the wait")
    assert model.requests[2].body["messages"][-1]["content"] == "Waited 2 seconds."


async def played_out(agent: Agent) -> int:
    """Ticks, one at a time, until the agent's speech has played out; how many."""
    n = 0
    while True:
        for _ in range(3):
            await asyncio.sleep(0)  # the speaker hears its mark
        if not agent.op._speaking and not agent.op._busy:
            return n
        agent.tick()
        n += 1
        if n % 10 == 0:
            await asyncio.sleep(0.002)
        assert n < 3000, "the agent never stopped talking"


async def spoken(agent: Agent, text: str) -> np.ndarray:
    """`text` as the agent's voice says it (the same TTS, deterministic), to find in `sent`."""
    audio = agent.services.audio  # type: ignore[attr-defined]
    return await synthesise(audio, text, language="en-US", voice=None)


def position(sent: list[np.ndarray], samples: np.ndarray) -> int:
    """Where a sentence's audio (its middle part) stands in what the leg sent; -1: nowhere."""
    needle = samples[len(samples) // 4 : len(samples) * 3 // 4].astype(np.int16).tobytes()
    haystack = np.concatenate(sent).astype(np.int16).tobytes() if sent else b""
    at = haystack.find(needle)
    while at % 2:  # a match across sample boundaries is none
        at = haystack.find(needle, at + 1)
    return at // 2 if at >= 0 else -1


@requires_speech
async def test_the_agent_opens_and_attention_and_inactivity_count_from_its_speech(
    start_agent: Callable[..., Any], model: ModelServer
) -> None:
    opening = "Hello, this is the corner shop calling."
    model.script(Turn(opening), Turn(""))
    agent = await start_agent(
        {
            "prompt": {"text": "t"},
            "params": {
                # A dialled call: outbound_attention_timeout is the one that counts.
                "attention_timeout": 30000,
                "outbound_attention_timeout": 10000,
                "attention_timeout_prompt": "Ask if they are still there.",
                "inactivity_timeout": 15000,
            },
        },
        opens=True,
    )
    # The opening request goes out before the caller has said (or the leg carried) anything.
    await until(lambda: model.requests, 5, "the opening request")
    assert agent.sent == []
    assert [m["role"] for m in model.requests[0].body["messages"]] == ["system"]
    await until(lambda: agent.op._live.queued_frames, 5, "the opening's audio")
    speech = await played_out(agent)
    assert position(agent.sent, await spoken(agent, opening)) >= 0  # the reply was spoken
    # The attention timer starts once the speech has played out: 500 ticks after, not before.
    await agent.ticks(499)
    await asyncio.sleep(0.2)
    assert len(model.requests) == 1
    await agent.ticks(1)
    await until(lambda: len(model.requests) == 2, 5, "the attention prompt")
    assert model.requests[1].body["messages"][-1] == {
        "role": "system",
        "content": "Ask if they are still there.",
    }
    await asyncio.sleep(0.2)  # its (empty) answer
    # Inactivity counts from the agent's start: 750 ticks without the caller.
    await agent.ticks(750 - 1 - speech - 500)
    await asyncio.sleep(0.2)
    assert not agent.runner.done()
    await agent.ticks(1)  # the agent ends, the script goes on
    assert await asyncio.wait_for(agent.runner, 5) == {"ai_result": "success"}
    finished = agent.emitted.params("ai")[-1]  # type: ignore[attr-defined]
    assert finished["state"] == "finished" and finished["reason"] == "inactivity_timeout"
    assert len(model.requests) == 2


@requires_speech
async def test_wait_for_user_waits_without_prompting_and_inbound_calls_use_attention_timeout(
    start_agent: Callable[..., Any], model: ModelServer
) -> None:
    model.script(Turn(""))
    params = {"attention_timeout": 10000, "outbound_attention_timeout": 10000}
    agent = await start_agent({"prompt": {"text": "t"}, "params": params})
    # Silence longer than the attention timeout: the agent has said nothing, so no prompt.
    await agent.ticks(550)
    await asyncio.sleep(0.2)
    assert model.requests == []
    agent.session.on_dtmf("7", 100)
    await until(lambda: model.requests, 5, "the caller's turn")
    assert [m["role"] for m in model.requests[0].body["messages"]] == ["system", "user"]
    # The attention timeout of an inbound call is attention_timeout's.
    inbound = await start_agent(
        {"prompt": {"text": "t"}, "params": {"attention_timeout": 12000}}, inbound=True
    )
    assert inbound.op._attention_ticks == 600


@requires_speech
async def test_hard_stop_time_gives_the_model_its_prompt_speaks_the_answer_and_ends(
    start_agent: Callable[..., Any], model: ModelServer
) -> None:
    goodbye = "We are out of time, goodbye."
    model.script(Turn(""), Turn(goodbye))
    agent = await start_agent(
        {
            "prompt": {"text": "t"},
            "params": {"hard_stop_time": "3s", "hard_stop_prompt": "Say goodbye."},
        }
    )
    agent.session.on_dtmf("1", 100)
    await until(lambda: model.requests, 5, "the caller's turn")
    await asyncio.sleep(0.2)
    await agent.ticks(149)
    await asyncio.sleep(0.2)
    assert len(model.requests) == 1
    await agent.ticks(1)  # 3 s since the start
    await until(lambda: len(model.requests) == 2, 5, "the hard stop")
    assert model.requests[1].body["messages"][-1] == {"role": "system", "content": "Say goodbye."}
    agent.session.on_dtmf("2", 100)  # too late: dropped
    await until(lambda: agent.op._live.queued_frames, 5, "the last words")
    frames = agent.op._live.queued_frames
    assert not agent.runner.done()
    await played_out(agent)  # heard out, then the agent ends
    assert await asyncio.wait_for(agent.runner, 5) == {"ai_result": "success"}
    assert position(agent.sent[-frames - 5 :], await spoken(agent, goodbye)) >= 0
    finished = agent.emitted.params("ai")[-1]  # type: ignore[attr-defined]
    assert finished["state"] == "finished" and finished["reason"] == "hard_stop_time"
    assert len(model.requests) == 2
    for bad in ["soon", "0s"]:
        failing = await start_agent({"prompt": {"text": "t"}, "params": {"hard_stop_time": bad}})
        with pytest.raises(SwmlError, match="hard_stop_time"):
            await failing.runner


@requires_speech
async def test_skip_user_turn_moves_on_and_a_context_change_says_its_fillers(
    start_agent: Callable[..., Any], model: ModelServer
) -> None:
    contexts = {
        "default": {
            "exit_fillers": {"default": ["Leaving the lobby."], "fr": ["Au revoir."]},
            "steps": [
                {"name": "intro", "text": "Introduce yourself.", "skip_user_turn": True},
                {"name": "ask", "text": "Ask.", "valid_contexts": ["sales"]},
            ],
        },
        "sales": {
            "enter_fillers": {"en": ["Welcome to sales."], "en-GB": ["Cheerio."]},
            "steps": [{"name": "sell", "text": "Sell."}],
        },
    }
    model.script(
        Turn("I am Ann."),
        Turn("What do you need?"),
        Turn(tool_calls=[("change_context", {"context": "sales"})]),
        Turn("Sales here."),
    )
    agent = await start_agent({"prompt": {"text": "t", "contexts": contexts}}, opens=True)
    # The intro step's turn, then, with no word from the caller, the next step's.
    await until(lambda: len(model.requests) == 2, 5, "the next step's turn")
    assert "## Current step: intro" in model.requests[0].body["messages"][0]["content"]
    moved = model.requests[1].body["messages"]
    assert "## Current step: ask" in moved[0]["content"]
    assert [m["role"] for m in moved] == ["system", "assistant", "system"]
    assert moved[-1]["content"] == "Now in step 'ask'. Follow its instructions."
    await asyncio.sleep(0.3)
    assert len(model.requests) == 2  # the ask step waits for the caller
    await played_out(agent)
    agent.session.on_dtmf("1", 100)
    await until(lambda: len(model.requests) == 4, 5, "the context change")
    await until(lambda: agent.op._live.queued_frames, 5, "the fillers")
    await played_out(agent)
    # The old context's exit filler, the new one's enter filler (en-US -> en), then the reply.
    at = [
        position(agent.sent, await spoken(agent, text))
        for text in ["Leaving the lobby.", "Welcome to sales.", "Sales here."]
    ]
    assert 0 <= at[0] < at[1] < at[2], at


def test_fillers_follow_the_language_and_bad_ones_are_named() -> None:
    fillers = {
        "fr-CA": ["Un instant."],
        "fr": ["Bon."],
        "auto": ["One moment."],
        "default": ["Hm."],
    }
    flow = ConversationFlow(
        {"default": {"enter_fillers": fillers, "steps": [{"name": "a", "text": "x"}]}}
    )
    chosen = {code: flow.fillers("default", "enter_fillers", code) for code in ["fr-CA", "fr-FR"]}
    assert chosen == {"fr-CA": ["Un instant."], "fr-FR": ["Bon."]}
    assert flow.fillers("default", "enter_fillers", "de-DE") == ["One moment."]
    assert flow.fillers("default", "exit_fillers", "fr-CA") == []
    with pytest.raises(FlowError, match=r"contexts\.default\.enter_fillers"):
        ConversationFlow(
            {"default": {"enter_fillers": ["hi"], "steps": [{"name": "a", "text": "x"}]}}
        )


@requires_speech
async def test_ai_volume_scales_the_agents_speech_by_its_decibels(
    start_agent: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    levels = []
    for volume, voice in [(0, "flite.slt"), (-12, "gcloud.en-US-Neural2-A")]:
        agent = await start_agent(
            {
                "prompt": {"text": "t"},
                "params": {"static_greeting": "Hello there.", "ai_volume": volume},
                "languages": [{"code": "en-US", "voice": voice}],
            }
        )
        await until(lambda a=agent: a.op._live.queued_frames, 5, "the greeting's audio")
        await agent.ticks(100)
        loud = [f for f in agent.sent if np.abs(f).max() > 500]
        assert len(loud) > 20
        levels.append(rms_db(agent.sent))
    assert levels[1] - levels[0] == pytest.approx(-12, abs=0.2)
    # The unknown voice fell back to the default one (same audio, so exactly 12 dB apart).
    assert "'gcloud.en-US-Neural2-A' is not available" in caplog.text


@requires_speech
async def test_swml_vars_meta_data_and_global_data_reach_the_web_hook(
    start_agent: Callable[..., Any], model: ModelServer, receiver: Receiver
) -> None:
    model.script(
        Turn(tool_calls=[("remember", {"x": 1})]),
        Turn(tool_calls=[("recall", {})]),
        Turn(""),
        Turn(""),
    )
    receiver.serve_swml(
        "/remember",
        {
            "response": "noted",
            "action": [
                {"set_meta_data": {"c": 3}},
                {"unset_meta_data": "a"},
                {"set_global_data": {"g": 2}},
                {"unset_global_data": ["drop"]},
            ],
        },
    )
    receiver.serve_swml("/recall", {"response": "fine"})
    functions = [
        {
            "function": "remember",
            "description": "r",
            "web_hook_url": receiver.url("/remember"),
            "meta_data_token": "shared",
            "meta_data": {"a": 1},
        },
        {
            "function": "recall",
            "description": "r",
            "web_hook_url": receiver.url("/recall"),
            "meta_data_token": "shared",
            "meta_data": {"b": 2},
        },
    ]
    agent = await start_agent(
        {
            # The interpreter leaves ${global_data.*} to the agent (values of the moment).
            "prompt": {"text": "Level ${global_data.g}."},
            "SWAIG": {"functions": functions},
            "global_data": {"drop": True, "keep": 1},
        },
        swml_vars={"customer": "ada", "visits": 3},
    )
    agent.session.on_dtmf("1", 100)
    first = (await until(lambda: receiver.events("/remember"), 5, "remember"))[0]
    assert first["SWMLVars"] == {"customer": "ada", "visits": 3}
    assert first["meta_data_token"] == "shared" and first["meta_data"] == {"a": 1, "b": 2}
    assert first["global_data"] == {"drop": True, "keep": 1}
    second = (await until(lambda: receiver.events("/recall"), 5, "recall"))[0]
    assert second["meta_data"] == {"b": 2, "c": 3}  # the shared scope, as remember left it
    assert second["global_data"] == {"keep": 1, "g": 2}
    # The model sees global_data as it is now.
    await until(lambda: len(model.requests) >= 3, 5, "the round after the functions")
    assert model.requests[0].body["messages"][0]["content"].startswith("Level .")
    system = model.requests[2].body["messages"][0]["content"]
    assert system == 'Level 2.\n\nglobal_data: {"keep": 1, "g": 2}'
    # A list in swaig_post_swml_vars posts only those variables.
    listed = await start_agent(
        {"prompt": {"text": "t"}, "params": {"swaig_post_swml_vars": ["visits", "absent"]}},
        swml_vars={"customer": "ada", "visits": 3},
    )
    assert listed.op._swml_vars() == {"visits": 3}


@requires_speech
async def test_words_over_a_no_barge_greeting_do_not_cut_it_and_are_the_next_turn(
    start_agent: Callable[..., Any], model: ModelServer
) -> None:
    agent = await start_agent(
        {
            "prompt": {"text": "t"},
            "params": {
                "static_greeting": "Welcome to the corner shop. We sell lamps, tables, chairs "
                "and many other fine things for your home. Ask me anything you like.",
                "static_greeting_no_barge": True,
            },
            "hints": [{"hint": "morning", "pattern": "morning", "replace": "evening"}],
        }
    )
    greeting = await until(lambda: agent.op._live.queued_frames, 5, "the greeting")
    await agent.ticks(10)
    question = say("good morning to you")
    await agent.ticks(len(question), question)
    while not model.requests and len(agent.sent) < greeting - 20:
        await agent.ticks(5)
        await asyncio.sleep(0.05)
    assert model.requests, "the words were no turn"
    # Heard out: every frame of the greeting is still there to play.
    assert agent.op._live.queued_frames == greeting - len(agent.sent)
    # The hint's pattern replaced the recognised word.
    assert word_error_rate("good evening to you", model.user_texts()[0]) <= 0.5
    assert "morning" not in model.user_texts()[0]


@requires_speech
async def test_barge_min_words_lets_one_word_pass_and_four_interrupt(
    start_agent: Callable[..., Any], model: ModelServer
) -> None:
    reply = " ".join(f"Item {n} is a fine thing we sell." for n in range(8))
    model.script(Turn(reply), Turn(""))
    agent = await start_agent({"prompt": {"text": "t"}, "params": {"barge_min_words": 3}})
    agent.session.on_dtmf("1", 100)
    await until(lambda: agent.op._live.queued_frames > 50, 10, "the reply's audio")
    await agent.ticks(25)
    short = say("yes")
    await agent.ticks(len(short), short)
    while agent.op._transcriber.utterances < 1:
        await agent.ticks(5)
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)
    assert len(model.requests) == 1  # one word: neither a barge-in nor a turn
    assert agent.op._live.queued_frames > 0
    stop = say("please stop talking now")
    await agent.ticks(len(stop), stop)
    while len(model.requests) < 2 and agent.op._transcriber.utterances < 2:
        await agent.ticks(5)
        await asyncio.sleep(0.05)
    await until(lambda: len(model.requests) >= 2, 5, "the barge-in turn")
    assert word_error_rate("please stop talking now", model.user_texts()[1]) <= 0.5
    assert agent.op._live.queued_frames == 0


@requires_speech
async def test_barge_min_words_cuts_the_agent_at_the_nth_word_not_at_a_backchannel(
    start_agent: Callable[..., Any], model: ModelServer
) -> None:
    """The words are counted on the recognizer's partial hypotheses, as the caller speaks:
    the agent stops talking at the 3rd word of a long sentence, not at its end."""
    reply = " ".join(f"Item {n} is a fine thing we sell." for n in range(12))
    model.script(Turn(reply), Turn(""))
    agent = await start_agent({"prompt": {"text": "t"}, "params": {"barge_min_words": 3}})
    op = agent.op
    # The partials come from the recognizer's streaming process (started with the agent).
    await until(agent.services.recognizer.streaming_ready, 30, "the streaming process")
    agent.session.on_dtmf("1", 100)
    await until(lambda: op._live.queued_frames > 50, 10, "the reply's audio")
    await agent.ticks(25, realtime=True)

    # A backchannel: heard to its end, and the agent talks on.
    okay = say("okay")
    await agent.ticks(len(okay), okay, realtime=True)
    while op._transcriber.utterances < 1:
        await agent.ticks(5, realtime=True)
        assert len(agent.sent) < 2000, "the backchannel was never recognised"
    await agent.ticks(10, realtime=True)
    assert op._barge_ins == 0 and len(model.requests) == 1
    assert op._speaking  # the reply goes on

    # A long sentence: cut at its 3rd word, long before its end.
    text = "I would like to talk to someone about the bill I got last month"
    sentence = say(text)
    ends = word_ends(text, sentence)
    before = len(agent.sent)
    cut: list[int] = []

    def barged(k: int) -> None:
        if op._barge_ins and not cut:
            cut.append(k)

    await agent.ticks(len(sentence), sentence, realtime=True, after=barged)
    assert cut, "the agent talked over the whole sentence"
    latency = (cut[0] - ends[2]) * 20
    print(f"barge-in {latency} ms after the 3rd word ends ({len(sentence) * 20} ms sentence)")
    assert cut[0] > ends[1], "cut before the 3rd word"
    # Mostly within 100 ms (the streaming process is niced: on a busy machine later), and
    # always before the last words: at the end of the utterance would be the old behaviour.
    assert cut[0] < ends[-2], f"cut only {latency} ms after the 3rd word"
    # From the cut the agent is silent; before the caller spoke it was not.
    talking = agent.sent[before - 50 : before]
    assert rms_db(talking) > -40
    assert not np.any(np.concatenate(agent.sent[before + cut[0] + 1 :]))
    # The whole sentence is the next turn.
    await agent.ticks(50, realtime=True)
    await until(lambda: len(model.requests) >= 2, 30, "the barge-in turn")
    assert word_error_rate(text, model.user_texts()[1]) <= 0.25
    assert op._live.queued_frames == 0
