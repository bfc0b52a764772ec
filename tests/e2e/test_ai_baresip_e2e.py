"""SWML `ai` with real third-party SIP peers: a baresip caller asks the agent a question, a local
OpenAI-compatible model (tests/providers/llm_server.py) answers as scripted, and what baresip
heard (its `sndfile` recording) is recognised back; then the caller asks for sales, the model
calls a SWAIG function whose web hook answers with a `connect` to a sipp UAS, and the caller
ends up bridged to sipp."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from harness import Baresip, Receiver, Server, Sipp, baresip_available, sipp_available, swml, until
from speech import recognise, requires_speech, say

from callplane.providers.asr import word_error_rate

sys.path.insert(0, str(Path(__file__).parents[1] / "providers"))
from llm_server import ModelServer, Turn

pytestmark = [
    requires_speech,
    pytest.mark.skipif(not baresip_available(), reason="baresip is not installed"),
    pytest.mark.skipif(not sipp_available(), reason="sipp (Debian sip-tester) missing"),
]

QUESTION = "what are your opening hours"
ANSWER = "We are open from nine to five."
# Words both of the agent's recognition passes get right: its streaming pass hears "transfer me
# to (the) sales (team)" as "transfer me to say holes" / "... this day all stream".
REQUEST = "put me through to the sales team"


def microphone(path: Path, *seconds_and_words: float | str) -> Path:
    """A WAV for baresip's `aufile` source: silences (seconds) and spoken words, in order.
    aufile ends the call when its file runs out, so each file ends in a long silence."""
    parts = [
        say(part) if isinstance(part, str) else np.zeros(round(part * 8000), np.int16)
        for part in seconds_and_words
    ]
    soundfile.write(path, np.concatenate(parts), 8000, subtype="PCM_16")
    return path


def events(server: Server, call_id: str, event_type: str) -> list[dict[str, Any]]:
    data = server.get(f"/api/calling/calls/{call_id}/events").json()["data"]
    return [e["params"] for e in data if e.get("event_type") == event_type]


async def test_a_baresip_caller_hears_the_answer_and_a_swaig_function_bridges_it_to_sipp(
    make_server: Callable[..., Server], model: ModelServer, receiver: Receiver, tmp_path: Path
) -> None:
    sales = Sipp(["-sn", "uas", "-m", "1"]).start(tmp_path)
    sales_uri = f"sip:sales@{sales.uri_host}"
    caller = Baresip(tmp_path / "baresip", record_dir=tmp_path / "heard")
    try:
        model.script(
            Turn(ANSWER),
            Turn(tool_calls=[("transfer_to_sales", {"department": "sales"})]),
        )
        hook = receiver.serve_swml(
            "/swaig",
            {
                "response": "Transferring you now.",
                "action": [{"SWML": swml({"connect": {"to": sales_uri}})}],
            },
        )
        function = {
            "function": "transfer_to_sales",
            "description": "Transfer the caller to sales",
            "parameters": {"type": "object", "properties": {"department": {"type": "string"}}},
            "web_hook_url": hook,
        }
        route = receiver.serve_swml(
            "/agent",
            swml(
                {
                    "ai": {
                        "prompt": {"text": "You are the shop's assistant."},
                        "params": {"wait_for_user": True, "end_of_speech_timeout": 600},
                        # The voice pocketsphinx recognises best: the answer is checked by
                        # its words.
                        "languages": [{"code": "en-US", "voice": "flite.rms"}],
                        "SWAIG": {"functions": [function]},
                    }
                }
            ),
        )
        server = make_server(
            routes={"agent": route}, extra_args=["--llm-url", model.url, "--llm-model", "tiny"]
        )
        caller.start(microphone(tmp_path / "question.wav", 1.0, QUESTION, 60.0))
        second = microphone(tmp_path / "request.wav", REQUEST, 60.0)

        caller.command("dial", f"sip:agent@127.0.0.1:{server.sip_port}")
        first = (await until(lambda: model.requests, 20, "the caller's question"))[0]
        asked = time.monotonic()
        question = first.body["messages"][-1]
        assert question["role"] == "user"
        words = question["content"].lower().split()
        assert "opening" in words and "hours" in words, question

        # The answer (~2 s) plays out before the caller speaks again: words during it would
        # be a barge-in that cuts it short. baresip's `ausrc` switches its microphone mid-call.
        await asyncio.sleep(asked + 5.0 - time.monotonic())
        caller.command("ausrc", f"aufile,{second}")
        await until(lambda: len(model.requests) >= 2, 20, "the caller's request")
        request = model.user_texts()[1]
        assert word_error_rate(REQUEST, request) <= 0.34, request
        tools = model.requests[1].body["tools"]
        assert [t["function"]["name"] for t in tools] == ["transfer_to_sales"]

        swaig = (await until(lambda: receiver.events("/swaig"), 10, "the SWAIG request"))[0]
        assert swaig["function"] == "transfer_to_sales"
        assert swaig["argument"]["parsed"] == [{"department": "sales"}]
        assert swaig["content_type"] == "text/swaig"
        call_id = swaig["call_id"]
        connected = await until(
            lambda: [
                e
                for e in events(server, call_id, "calling.call.connect")
                if e["connect_state"] == "connected"
            ],
            15,
            "the bridge to sales",
        )
        assert connected[0]["peer"]["device"]["params"]["to"] == sales_uri
        assert sales.proc is not None and sales.proc.poll() is None  # sipp is in the call
        # The SWML action ended the agent: no model turn after the function's.
        assert len(model.requests) == 2

        caller.command("hangup")
        await until(lambda: server.call_status(call_id) == "ended", 15, "the call's end")
        states = [e["connect_state"] for e in events(server, call_id, "calling.call.connect")]
        assert states == ["connecting", "connected", "disconnected"], states

        caller.stop()  # sndfile closes its recordings on exit
        heard, rate = soundfile.read(caller.recordings("dec")[-1], dtype="int16")
        assert rate == 8000
        text = recognise(heard)
        assert word_error_rate("we are open from nine to five", text) <= 0.3, text
        # sipp's uas scenario passes only with its INVITE answered, the ACK and a BYE, which
        # the server sent when the caller hung up (sipp exits after a 4 s time-wait).
        assert await asyncio.to_thread(sales.wait, 15) == 0
    finally:
        caller.stop()
        sales.stop()
