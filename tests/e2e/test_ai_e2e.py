"""SWML `ai` against the real server: a far end speaks (flite over RTP), a local
OpenAI-compatible model server (tests/providers/llm_server.py, 127.0.0.1) answers as scripted,
and what the far end hears is recognised back."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from farend import FarEnd, peaks, rms_db
from harness import Receiver, Server, swml, until
from speech import recognise, requires_speech, say

from callplane import AsyncRestClient, RestError
from callplane.providers.asr import PocketSphinxRecognizer, word_error_rate

sys.path.insert(0, str(Path(__file__).parents[1] / "providers"))
from llm_server import ModelServer, Turn

pytestmark = requires_speech

QUESTION = "what are your opening hours"
ANSWER = "We are open from nine to five."


def loud_at(far_end: FarEnd, start: float, end: float) -> bool:
    audio = far_end.audio(start, end)
    return bool(audio.size) and float(np.sqrt(np.mean(audio**2))) > 300


@pytest.fixture
def ai_server(make_server: Callable[..., Server], model: ModelServer) -> Server:
    return make_server(extra_args=["--llm-url", model.url, "--llm-model", "tiny"])


async def dial(client: AsyncRestClient, far_end: FarEnd, document: dict[str, Any]) -> str:
    leg = await client.calling.dial(from_="+15559876543", to=far_end.uri, swml=document)
    await asyncio.wait_for(far_end.answered.wait(), 10)
    return str(leg["id"])


def events(server: Server, call_id: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = server.get(f"/api/calling/calls/{call_id}/events").json()["data"]
    return data


async def test_one_spoken_turn_then_stop_post_prompt_and_the_script_goes_on(
    ai_server: Server, model: ModelServer, far_end: FarEnd, receiver: Receiver
) -> None:
    model.script(Turn(ANSWER), Turn("Hello again."), Turn('{"topic": "opening hours"}'))
    document = swml(
        {
            "ai": {
                "prompt": {"text": "You are the shop's assistant."},
                "params": {
                    "end_of_speech_timeout": 600,
                    "ai_model": "shop-model",
                    "wait_for_user": True,  # the caller opens
                },
                "post_prompt": {"text": "Summarise the call as JSON."},
                "post_prompt_url": receiver.url("/post"),
                "global_data": {"shop": "corner"},
            }
        },
        {"set": {"after_ai": "${ai_result}"}},
        {"play": {"url": "say:goodbye"}},
        {"hangup": {}},
    )
    async with AsyncRestClient(ai_server.project, ai_server.token, ai_server.host) as client:
        call_id = await dial(client, far_end, document)
        await until(lambda: ai_server.call_status(call_id) == "answered", 5, "answered")
        await far_end.silence(0.5)
        await far_end.play(say(QUESTION))
        await far_end.silence(0.3)
        first = (await until(lambda: model.requests, 5, "the first request"))[0]
        asked = time.monotonic()
        body = first.body
        assert body["model"] == "shop-model"
        system = body["messages"][0]
        assert system["role"] == "system" and system["content"].startswith("You are the shop")
        assert '"shop": "corner"' in system["content"]
        heard_question = body["messages"][-1]
        assert heard_question["role"] == "user"
        assert word_error_rate(QUESTION, heard_question["content"]) <= 0.3, heard_question
        await far_end.silence(3.5)
        heard = recognise(far_end.audio(asked, asked + 3.5))
        assert word_error_rate("we are open from nine to five", heard) <= 0.34, heard

        # Control: a user message from REST is a user turn; hold states are checked.
        await client.calling.ai_message(call_id, role="user", message_text="typed hello")
        await until(lambda: len(model.requests) >= 2, 5, "the second turn")
        assert model.user_texts()[1] == "typed hello"
        with pytest.raises(RestError) as not_held:
            await client.calling.ai_unhold(call_id)
        assert not_held.value.status_code == 409
        await client.calling.ai_hold(call_id, timeout="30")
        on_hold = time.monotonic()
        await far_end.silence(1.0)
        hold_audio = far_end.audio(on_hold, on_hold + 1.0)
        assert rms_db(hold_audio) > -60 and abs(peaks(hold_audio, 1)[0] - 440) < 15
        with pytest.raises(RestError) as held:
            await client.calling.ai_hold(call_id, timeout="30")
        assert held.value.status_code == 409
        await client.calling.ai_unhold(call_id)

        await client.calling.ai_stop(call_id)
        post = await until(lambda: receiver.events("/post"), 10, "the post-prompt")
        await until(lambda: ai_server.call_status(call_id) == "ended", 10, "the script's hangup")
        with pytest.raises(RestError) as none:
            await client.calling.ai_stop(call_id)
        assert 400 <= none.value.status_code < 500

    payload = post[0]
    assert payload["post_prompt_data"]["parsed"] == [{"topic": "opening hours"}]
    roles = [(e["role"], e["content"]) for e in payload["call_log"]]
    assert ("assistant", ANSWER) in roles and ("user", "typed hello") in roles
    assert all("timestamp" in e for e in payload["call_log"])
    # The post-prompt request carried the whole conversation and the post-prompt itself.
    summary_request = model.requests[-1].body["messages"]
    assert summary_request[-1] == {"role": "system", "content": "Summarise the call as JSON."}
    states = [
        e["params"].get("state")
        for e in events(ai_server, call_id)
        if e.get("event_type") == "calling.call.ai"
    ]
    assert states[:1] == ["started"] and "finished" in states


async def test_dtmf_reaches_the_model_and_a_swaig_function_hands_the_call_to_connect(
    ai_server: Server, model: ModelServer, far_end: FarEnd, receiver: Receiver
) -> None:
    sales = FarEnd()
    await sales.start()
    try:
        model.script(
            Turn("Welcome."),  # the agent opens (wait_for_user defaults to false)
            Turn("Let me check.", tool_calls=[("look_up", {"item": "lamp"})]),
            Turn(tool_calls=[("broken", {})]),
            Turn(tool_calls=[("transfer_to_sales", {"department": "sales"})]),
        )
        lookup = receiver.serve_swml(
            "/lookup",
            {"response": "The lamp costs ten dollars.", "action": [{"set_global_data": {"a": 1}}]},
        )
        hook = receiver.serve_swml(
            "/swaig",
            {
                "response": "Transferring you now.",
                "action": [
                    {"say": "One moment."},
                    {"set_global_data": {"transferred": True}},
                    {"SWML": swml({"connect": {"to": sales.uri}})},
                ],
            },
        )
        function = {
            "function": "transfer_to_sales",
            "description": "Transfer the caller to sales",
            "parameters": {
                "type": "object",
                "properties": {"department": {"type": "string"}},
            },
            "meta_data": {"team": "east"},
            "web_hook_url": hook,
        }
        functions = [
            {"function": "look_up", "purpose": "prices"},  # SWAIG.defaults.web_hook_url
            # Nothing listens there: the model is told, the call goes on.
            {"function": "broken", "purpose": "fails", "web_hook_url": "http://127.0.0.1:9/x"},
            function,
        ]
        document = swml(
            {"set": {"customer": "ada"}},
            {
                "ai": {
                    "prompt": {"text": "Route calls."},
                    "SWAIG": {"functions": functions, "defaults": {"web_hook_url": lookup}},
                }
            },
        )
        async with AsyncRestClient(ai_server.project, ai_server.token, ai_server.host) as client:
            call_id = await dial(client, far_end, document)
            await until(lambda: ai_server.call_status(call_id) == "answered", 5, "answered")
            opening = (await until(lambda: model.requests, 5, "the opening request"))[0]
            assert [m["role"] for m in opening.body["messages"]] == ["system"]
            await far_end.silence(0.3)
            await far_end.send_digits("5")
            await until(lambda: len(model.requests) >= 2, 5, "the key's request")
            assert model.user_texts()[1] == "DTMF: 5"
            tools = model.requests[1].body["tools"]
            names = [t["function"]["name"] for t in tools]
            assert names == ["look_up", "broken", "transfer_to_sales"]
            assert tools[2]["function"]["parameters"] == function["parameters"]
            swaig = (await until(lambda: receiver.events("/swaig"), 5, "the SWAIG request"))[0]
            assert swaig["function"] == "transfer_to_sales"
            assert swaig["argument"]["parsed"] == [{"department": "sales"}]
            assert json.loads(swaig["argument"]["raw"]) == {"department": "sales"}
            assert swaig["meta_data"] == {"team": "east"}
            assert swaig["content_type"] == "text/swaig"
            assert swaig["call_id"] == call_id
            assert swaig["SWMLVars"]["customer"] == "ada"  # the script's variables now
            assert swaig["global_data"] == {"a": 1}  # set by look_up's action
            # Each function's result went back to the model as the tool's answer.
            second, third = model.requests[2].body["messages"], model.requests[3].body["messages"]
            assert second[-2]["tool_calls"][0]["function"]["name"] == "look_up"
            assert second[-1] == {
                "role": "tool",
                "tool_call_id": "call_0",
                "content": "The lamp costs ten dollars.",
            }
            assert third[-1]["role"] == "tool" and "failed" in third[-1]["content"]
            await asyncio.wait_for(sales.answered.wait(), 10)
            await until(
                lambda: ai_server.get(f"/api/calling/calls/{call_id}").json().get("peer"),
                5,
                "the bridge to sales",
            )
            # The SWML action ended the agent: no turn after the function's.
            assert len(model.requests) == 4
            await client.calling.end(call_id)
            await until(lambda: ai_server.call_status(call_id) == "ended", 10, "ended")
    finally:
        await sales.stop()


async def test_caller_speech_stops_the_agents_audio_and_is_the_next_turn(
    ai_server: Server, model: ModelServer, far_end: FarEnd, receiver: Receiver
) -> None:
    long_reply = " ".join(
        f"Item {n} is the {word} thing we sell."
        for n, word in enumerate(
            ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth"]
        )
    )
    # The answer to the barge-in comes late, so that the silence checked is the barge-in's.
    # It streams for 3.2 s: the barge-in comes while the model is still writing it.
    model.script(Turn(long_reply, piece_delay=0.05), Turn("All right.", first_token_delay=2.0))
    document = swml(
        {
            "ai": {
                "prompt": {"text": "Talk a lot."},
                "params": {"static_greeting": "Hello"},
                "post_prompt": {"text": "Summarise."},
                "post_prompt_url": receiver.url("/post"),
            }
        }
    )
    async with AsyncRestClient(ai_server.project, ai_server.token, ai_server.host) as client:
        call_id = await dial(client, far_end, document)
        await until(lambda: ai_server.call_status(call_id) == "answered", 5, "answered")
        await far_end.silence(1.5)  # the greeting
        await far_end.play(say("tell me everything"))
        await until(lambda: model.requests, 5, "the first turn")
        # Wait for the reply's audio, then talk two seconds into it.
        await until(
            lambda: loud_at(far_end, time.monotonic() - 0.2, time.monotonic()),
            5,
            "the reply's audio",
        )
        await far_end.silence(2.0)
        assert loud_at(far_end, time.monotonic() - 0.3, time.monotonic())
        spoke_at = time.monotonic()
        await far_end.play(say("stop please"))
        await far_end.silence(1.5)
        # Within 300 ms of the caller's first words the agent is quiet.
        assert not loud_at(far_end, spoke_at + 0.3, spoke_at + 2.0)
        await until(lambda: len(model.requests) >= 2, 5, "the barge-in turn")
        assert word_error_rate("stop please", model.user_texts()[1]) <= 0.5, model.user_texts()
        await client.calling.end(call_id)
        await until(lambda: ai_server.call_status(call_id) == "ended", 10, "ended")
        # The caller hung up: the post-prompt still summarises the conversation.
        post = (await until(lambda: receiver.events("/post"), 10, "the post-prompt"))[0]
        said = [e["content"] for e in post["call_log"] if e["role"] == "assistant"]
        assert said[0] == "Hello" and long_reply.startswith(said[1][: -len(" ...")])
        assert said[1].endswith(" ...") and len(said[1]) < len(long_reply)


async def test_without_a_model_ai_fails_at_once_and_says_so(
    server: Server, far_end: FarEnd
) -> None:
    document = swml(
        {"ai": {"prompt": {"text": "Hi"}}},
        {"set": {"after": "${ai_result}"}},
        {"hangup": {}},
    )
    async with AsyncRestClient(server.project, server.token, server.host) as client:
        call_id = await dial(client, far_end, document)
        await until(lambda: server.call_status(call_id) == "ended", 10, "the script's hangup")
        with pytest.raises(RestError) as none:
            await client.calling.ai_message(call_id, role="user", message_text="hi")
        assert 400 <= none.value.status_code < 500
    errors = [e for e in events(server, call_id) if e.get("event_type") == "calling.call.ai"]
    assert errors and "language model" in errors[0]["params"]["error"]
    assert "no language model" in server.log()


async def test_ticks_alone_drive_hold_unhold_and_a_key_press(
    model: ModelServer, tmp_path: Path
) -> None:
    """In process, driven by TickFrames: speech while the agent is held reaches nobody; after
    unhold the same words are a turn, and a key press is one too; the agent's reply is what
    the leg sends."""
    import httpx
    from ticks import Emitted, TickSession, tick_call, tick_services

    from callplane.engine.audio import AudioResolver
    from callplane.engine.operations import ai as ai_module
    from callplane.engine.services import Services
    from callplane.netpolicy import TargetPolicy
    from callplane.providers.llm import LlmSettings, OpenAiChat
    from callplane.providers.tts import DefaultTts

    model.script(Turn("Hello there."), Turn(status=500), Turn("You pressed six."))
    recorded: list[tuple[str, dict[str, Any]]] = []
    async with TargetPolicy().http_client(timeout=httpx.Timeout(5.0)) as http:
        services: Services = tick_services(
            Emitted(),
            llm=OpenAiChat(LlmSettings(model.url, "tiny"), http),
            recognizer=PocketSphinxRecognizer(),
            audio=AudioResolver(tmp_path, http, DefaultTts()),
            http=http,
            record_event=lambda call, kind, params: recorded.append((kind, params)),
            deliver=lambda call, payload, url: None,
        )
        session = TickSession()
        call = tick_call(session)
        runner = asyncio.create_task(
            ai_module.SWML_METHODS["ai"](
                services, call, {"prompt": {"text": "t"}, "params": {"wait_for_user": True}}
            )
        )
        await until(lambda: call.operations, 5, "the agent")
        agent = ai_module.running_agent(call)
        audio = say("good morning to you")
        frames = np.concatenate([audio, np.zeros((-audio.size) % 160, np.int16)]).reshape(-1, 160)

        sent: list[float] = []  # the RMS of each frame the leg sent

        def tick(frame: np.ndarray | None = None) -> None:
            out = session.tick(frame).outbound.astype(np.float64)
            sent.append(float(np.sqrt(np.mean(out**2))))

        async def speak() -> None:
            for k, frame in enumerate(frames):
                tick(frame)
                if k % 10 == 0:
                    await asyncio.sleep(0)
            for _ in range(75):
                tick()
                await asyncio.sleep(0.002)

        agent.hold("30")
        await speak()
        await asyncio.sleep(1.0)
        assert model.requests == []  # held: not listening
        assert max(sent) > 300  # the hold beeps
        agent.unhold()
        sent.clear()
        await speak()
        await until(lambda: model.requests, 5, "the turn after unhold")
        assert word_error_rate("good morning to you", model.user_texts()[0]) <= 0.5
        # The reply is played on the leg: loud frames go out within a few seconds of ticks.
        for _ in range(150):
            tick()
            await asyncio.sleep(0.01)
        assert max(sent) > 300
        session.on_dtmf("5", 100)  # an RFC 4733 key press through the call's KeyPresses
        await until(lambda: len(model.requests) >= 2, 5, "the key press turn")
        assert model.user_texts()[1] == "DTMF: 5"
        # That turn failed at the model: recorded, and the agent keeps listening.
        await until(lambda: recorded, 5, "the model error")
        assert recorded[0][1]["state"] == "model_error" and "500" in recorded[0][1]["error"]
        session.on_dtmf("6", 100)
        await until(lambda: len(model.requests) >= 3, 5, "the next turn")
        assert model.user_texts()[2] == "DTMF: 6"
        await agent.stop()
        assert await asyncio.wait_for(runner, 10) == {"ai_result": "success"}
        assert call.operations == {}
        assert all(getattr(cb, "__self__", None) is not agent for cb in session.listeners)


async def test_replies_start_without_the_tts_breath() -> None:
    """flite opens every sentence with ~0.2 s of breath noise (samples past -55 dBFS): the
    caller would wait for it before the reply's first word."""
    from callplane.engine.operations.speech import _without_leading_silence
    from callplane.providers.tts import DefaultTts

    tts = DefaultTts()
    for text in ("We are open from nine to five.", "Fine.", "Yes, we are."):
        spoken = np.asarray(await tts.synthesize(text), dtype=np.float64)
        trimmed = _without_leading_silence(spoken)
        frames = trimmed[: trimmed.size // 80 * 80].reshape(-1, 80)
        voice = np.flatnonzero(np.sqrt(np.mean(frames**2, axis=1)) > 300)  # ~ -40 dBFS
        # A soft first consonant (the f of "Fine") stays: up to 0.1 s before the voice.
        assert voice.size and voice[0] * 10 <= 100, (text, voice[0] * 10)
        assert spoken.size - trimmed.size >= 1200, text  # at least 150 ms cut
