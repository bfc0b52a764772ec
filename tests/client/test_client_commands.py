"""The command surface: names, envelopes, typed parameters, pass-through, sync/async parity."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

from callplane import AsyncRestClient, RestClient
from callplane.client import Calling

CALL_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"

# method -> (command, required keywords with sample values)
COMMANDS: dict[str, tuple[str, dict[str, Any]]] = {
    "dial": ("dial", {"from_": "+15550001111"}),
    "update": ("update", {"id": CALL_ID}),
    "end": ("calling.end", {}),
    "transfer": ("calling.transfer", {"dest": "+15550002222"}),
    "disconnect": ("calling.disconnect", {}),
    "play": ("calling.play", {"play": []}),
    "play_pause": ("calling.play.pause", {"control_id": "c"}),
    "play_resume": ("calling.play.resume", {"control_id": "c"}),
    "play_stop": ("calling.play.stop", {"control_id": "c"}),
    "play_volume": ("calling.play.volume", {"control_id": "c", "volume": 1.0}),
    "record": ("calling.record", {}),
    "record_pause": ("calling.record.pause", {"control_id": "c"}),
    "record_resume": ("calling.record.resume", {"control_id": "c"}),
    "record_stop": ("calling.record.stop", {"control_id": "c"}),
    "collect": ("calling.collect", {"control_id": "c"}),
    "collect_stop": ("calling.collect.stop", {"control_id": "c"}),
    "collect_start_input_timers": ("calling.collect.start_input_timers", {"control_id": "c"}),
    "detect": ("calling.detect", {"control_id": "c", "detect": {"type": "fax"}}),
    "detect_stop": ("calling.detect.stop", {"control_id": "c"}),
    "tap": ("calling.tap", {"control_id": "c", "tap": {}, "device": {}}),
    "tap_stop": ("calling.tap.stop", {"control_id": "c"}),
    "stream": ("calling.stream", {"control_id": "c", "url": "wss://x"}),
    "stream_stop": ("calling.stream.stop", {"control_id": "c"}),
    "denoise": ("calling.denoise", {}),
    "denoise_stop": ("calling.denoise.stop", {}),
    "transcribe": ("calling.transcribe", {"control_id": "c"}),
    "transcribe_stop": ("calling.transcribe.stop", {"control_id": "c"}),
    "ai_message": ("calling.ai_message", {}),
    "ai_hold": ("calling.ai_hold", {}),
    "ai_unhold": ("calling.ai_unhold", {}),
    "ai_stop": ("calling.ai.stop", {}),
    "live_transcribe": ("calling.live_transcribe", {"action": "stop"}),
    "live_translate": ("calling.live_translate", {"action": "stop"}),
    "send_fax_stop": ("calling.send_fax.stop", {"control_id": "c"}),
    "receive_fax_stop": ("calling.receive_fax.stop", {"control_id": "c"}),
    "refer": ("calling.refer", {"device": {"to": "sip:a@b"}}),
    "user_event": ("calling.user_event", {"event": {}}),
    "ai_sidecar": ("calling.ai_sidecar", {"lang": "en-US"}),
    "ai_sidecar_poke": ("calling.ai_sidecar.poke", {"text": "t"}),
    "ai_sidecar_ask": ("calling.ai_sidecar.ask", {"text": "t"}),
    "ai_sidecar_stop": ("calling.ai_sidecar.stop", {}),
    "ai_sidecar_status": ("calling.ai_sidecar.status", {}),
}

# Every parameter documented in calling-api.md §4/§5 and the client docs, per method.
DOCUMENTED: dict[str, set[str]] = {
    "dial": {
        "from_", "to", "url", "swml", "username", "password", "to_script", "caller_id",
        "fallback_url", "status_url", "status_events", "url_method", "codecs", "timeout",
        "max_price_per_minute", "send_digits", "region", "custom_variables",
    },
    "update": {"id", "url", "swml", "fallback_url", "status", "status_url"},
    "end": {"reason"},
    "transfer": {"dest"},
    "disconnect": set(),
    "play": {
        "control_id", "play", "volume", "direction", "loop", "language", "voice", "gender",
        "status_url",
    },
    "play_pause": {"control_id"},
    "play_resume": {"control_id"},
    "play_stop": {"control_id"},
    "play_volume": {"control_id", "volume"},
    "record": {"control_id", "record", "audio", "status_url"},
    "record_pause": {"control_id", "behavior"},
    "record_resume": {"control_id"},
    "record_stop": {"control_id"},
    "collect": {
        "control_id", "initial_timeout", "digits", "speech", "continuous", "partial_results",
        "send_start_of_input", "start_input_timers", "status_url",
    },
    "collect_stop": {"control_id"},
    "collect_start_input_timers": {"control_id"},
    "detect": {"control_id", "detect", "timeout", "status_url"},
    "detect_stop": {"control_id"},
    "tap": {"control_id", "tap", "device", "status_url"},
    "tap_stop": {"control_id"},
    "stream": {
        "control_id", "url", "name", "codec", "track", "authorization_bearer_token",
        "custom_parameters", "status_url", "status_url_method",
    },
    "stream_stop": {"control_id"},
    "denoise": set(),
    "denoise_stop": set(),
    "transcribe": {"control_id", "status_url"},
    "transcribe_stop": {"control_id"},
    "ai_message": {"role", "message_text", "reset", "global_data"},
    "ai_hold": {"timeout", "prompt"},
    "ai_unhold": {"prompt"},
    "ai_stop": {"control_id"},
    "live_transcribe": {"action", "lang"},
    "live_translate": {"action", "status_url", "from_lang", "to_lang"},
    "send_fax_stop": {"control_id"},
    "receive_fax_stop": {"control_id"},
    "refer": {"device", "status_url"},
    "user_event": {"event"},
    "ai_sidecar": {
        "lang", "prompt", "model", "direction", "customer_role", "url", "SWAIG", "permissions",
        "global_data", "hints", "params", "action",
    },
    "ai_sidecar_poke": {"text"},
    "ai_sidecar_ask": {"text"},
    "ai_sidecar_stop": set(),
    "ai_sidecar_status": set(),
}  # fmt: skip


def test_command_table_is_complete() -> None:
    public = {name for name in vars(Calling) if not name.startswith("_")} - {"send_command"}
    assert public == set(COMMANDS) == set(DOCUMENTED)
    assert len(public) == 42


@pytest.mark.parametrize("method", sorted(DOCUMENTED))
def test_documented_parameters_are_typed_keywords(method: str) -> None:
    signature = inspect.signature(getattr(Calling, method))
    params = list(signature.parameters.values())
    assert params[0].name == "self"
    if method in ("dial", "update"):
        rest = params[1:]
    else:
        assert params[1].name == "call_id"
        assert params[1].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        rest = params[2:]
    keywords = {p.name for p in rest if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert DOCUMENTED[method] <= keywords
    assert all(p.annotation is not inspect.Parameter.empty for p in rest)
    assert rest[-1].kind is inspect.Parameter.VAR_KEYWORD  # pass-through for new parameters
    doc = inspect.getdoc(getattr(Calling, method)) or ""
    for name in DOCUMENTED[method]:
        assert f"{name}:" in doc, f"{method}({name}) is not documented"


@pytest.mark.parametrize("method", sorted(COMMANDS))
def test_each_method_sends_its_command(client: RestClient, server: Any, method: str) -> None:
    command, required = COMMANDS[method]
    call_id = () if method in ("dial", "update") else (CALL_ID,)
    getattr(client.calling, method)(*call_id, **required)
    body = server.last.json
    assert body["command"] == command
    assert ("id" in body) is bool(call_id)
    assert body.get("id") == (call_id[0] if call_id else None)
    expected = {("from" if k == "from_" else k): v for k, v in required.items()}
    assert body["params"] == expected  # "params" present even when empty


def test_none_is_dropped_and_unknown_keywords_pass_through(client: RestClient, server: Any) -> None:
    client.calling.play(
        CALL_ID,
        play=[{"type": "audio", "params": {"url": "https://example.com/a.mp3"}}],
        control_id=None,
        volume=None,
        new_server_param={"nested": [1, None]},
        **{"from": "kept"},
    )
    assert server.last.json["params"] == {
        "play": [{"type": "audio", "params": {"url": "https://example.com/a.mp3"}}],
        "new_server_param": {"nested": [1, None]},
        "from": "kept",
    }


def test_shapes_are_sent_as_written(client: RestClient, server: Any) -> None:
    client.calling.live_transcribe(
        CALL_ID, action={"start": {"lang": "en-US", "direction": ["remote-caller"]}}
    )
    assert server.last.json["params"] == {
        "action": {"start": {"lang": "en-US", "direction": ["remote-caller"]}}
    }
    client.calling.record(CALL_ID, control_id="r", record={"audio": {"format": "mp3"}})
    assert server.last.json["params"] == {"control_id": "r", "record": {"audio": {"format": "mp3"}}}
    client.calling.ai_hold(CALL_ID, timeout="300")
    assert server.last.json["params"] == {"timeout": "300"}
    client.calling.refer(
        CALL_ID, device={"type": "sip", "params": {"to": "sip:a@b", "from": "sip:c@d"}}
    )
    assert server.last.json["params"] == {
        "device": {"type": "sip", "params": {"to": "sip:a@b", "from": "sip:c@d"}}
    }


def test_call_id_may_be_given_by_name(client: RestClient, server: Any) -> None:
    client.calling.end(call_id=CALL_ID)
    assert server.last.json == {"command": "calling.end", "id": CALL_ID, "params": {}}


def test_send_command_sends_anything(client: RestClient, server: Any) -> None:
    assert client.calling.send_command("calling.future", CALL_ID, {"x": None}) == server.call_leg
    assert server.last.json == {"command": "calling.future", "id": CALL_ID, "params": {"x": None}}
    client.calling.send_command("dial")
    assert server.last.json == {"command": "dial", "params": {}}


def test_empty_and_204_responses_are_empty_dicts(client: RestClient, server: Any) -> None:
    server.reply(204, text="")
    assert client.calling.denoise(CALL_ID) == {}
    server.reply(200, text="")
    assert client.calling.denoise(CALL_ID) == {}


def test_sidecar_status_line_is_parsed(client: RestClient, server: Any) -> None:
    server.reply(200, text="+OK running=1 ticks=42 errors=0 model=gpt-4o-mini\n")
    assert client.calling.ai_sidecar_status(CALL_ID) == {
        "running": 1,
        "ticks": 42,
        "errors": 0,
        "model": "gpt-4o-mini",
    }
    server.reply(200, json_body={"ask_id": "a1"})
    assert client.calling.ai_sidecar_ask(CALL_ID, text="Is the caller upset?") == {"ask_id": "a1"}


async def test_async_methods_run_concurrently(aclient: AsyncRestClient, server: Any) -> None:
    for _ in range(3):
        server.reply(delay=0.3)
    started = asyncio.get_running_loop().time()
    results = await asyncio.gather(
        *(aclient.calling.play_stop(CALL_ID, control_id=f"c{i}") for i in range(3))
    )
    assert asyncio.get_running_loop().time() - started < 0.8
    assert results == [server.call_leg] * 3
    assert sorted(r.json["params"]["control_id"] for r in server.requests) == ["c0", "c1", "c2"]
    keys = {r.headers["idempotency-key"] for r in server.requests}
    assert len(keys) == 3
