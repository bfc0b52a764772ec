"""Every command over real HTTP: the canonical params the engine receives, and the 4xx table.

The key assertion is what the engine was handed — that is the api -> engine contract
(docs/architecture.md): nested reference shapes, flat client shapes rewritten, no defaults added.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from api_harness import CALL_ID, RecordingEngine

from callplane.api.commands import COMMANDS

URL = "/api/calling/calls"
REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference"
SAME = object()  # "canonical params equal the input"

BOTH_LEGS = ["remote-caller", "local-caller"]
SWML = {"version": "1.0.0", "sections": {"main": [{"answer": {}}, {"hangup": {}}]}}

# (case id, command, params sent, params the engine must receive)
HAPPY: list[tuple[str, str, dict[str, Any], Any]] = [
    (
        "dial-url",
        "dial",
        {
            "from": "+15559876543",
            "to": "sip:alice@127.0.0.1:5070",
            "url": "https://example.com/swml",
            "caller_id": "+15551234567",
            "username": "alice",
            "password": "s3cr3t",
            "status_url": "https://example.com/status",
            "status_events": ["answered", "ended"],
            "url_method": "get",
            "codecs": "PCMU, pcma",
            "timeout": 30,
            "max_price_per_minute": 0.05,
            "send_digits": "1234#w,",
            "region": ["us-east-1"],
            "custom_variables": {"case_number": "54321", "_x": "y"},
        },
        {
            "from": "+15559876543",
            "to": "sip:alice@127.0.0.1:5070",
            "url": "https://example.com/swml",
            "caller_id": "+15551234567",
            "username": "alice",
            "password": "s3cr3t",
            "status_url": "https://example.com/status",
            "status_events": ["answered", "ended"],
            "url_method": "GET",
            "codecs": ["PCMU", "PCMA"],
            "timeout": 30,
            "max_price_per_minute": 0.05,
            "send_digits": "1234#w,",
            "region": ["us-east-1"],
            "custom_variables": {"case_number": "54321", "_x": "y"},
        },
    ),
    (
        "dial-swml-string",
        "dial",
        {"from_": "+1555", "to": "+1666", "swml": json.dumps(SWML), "timeout": 30.0},
        {"from": "+1555", "to": "+1666", "swml": SWML, "timeout": 30},
    ),
    (
        "dial-swml-yaml-to_script",
        "dial",
        {
            "from": "+1555",
            "to_script": "version: 1.0.0\nsections:\n  main:\n    - answer: {}\n",
            "swml": SWML,
            "codecs": ["OPUS@48000H@20I"],
        },
        {
            "from": "+1555",
            "to_script": {"version": "1.0.0", "sections": {"main": [{"answer": {}}]}},
            "swml": SWML,
            "codecs": ["OPUS@48000H@20I"],
        },
    ),
    (
        "update-url",
        "update",
        {"id": CALL_ID, "url": "https://example.com/new", "fallback_url": "https://f.example"},
        SAME,
    ),
    (
        "update-status-only",
        "update",
        {"id": CALL_ID.upper(), "status": "completed"},
        {
            "id": CALL_ID,
            "status": "completed",
        },
    ),
    ("update-swml", "update", {"id": CALL_ID, "swml": SWML, "status_url": "http://h/s"}, SAME),
    ("end", "calling.end", {"reason": "noAnswer"}, SAME),
    ("end-empty", "calling.end", {}, {}),
    ("transfer", "calling.transfer", {"dest": "sip:agent@example.com"}, SAME),
    ("transfer-swml", "calling.transfer", {"dest": SWML}, SAME),
    (
        "transfer-device",
        "calling.transfer",
        {"dest": {"type": "phone", "params": {"to_number": "+15551230000"}}},
        {"dest": "+15551230000"},
    ),
    ("disconnect", "calling.disconnect", {}, {}),
    (
        "play-flat",
        "calling.play",
        {
            "play": [
                {"type": "tts", "text": "Hello!", "voice": "amazon.Joanna:neural"},
                {"type": "audio", "url": "https://example.com/a.mp3"},
                {"type": "silence", "duration": 1},
                {"type": "ringtone", "name": "US", "duration": 2.5},
            ],
            "volume": 5.0,
        },
        {
            "play": [
                {"type": "tts", "params": {"text": "Hello!", "voice": "amazon.Joanna:neural"}},
                {"type": "audio", "params": {"url": "https://example.com/a.mp3"}},
                {"type": "silence", "params": {"duration": 1}},
                {"type": "ringtone", "params": {"name": "us", "duration": 2.5}},
            ],
            "volume": 5.0,
        },
    ),
    (
        "play-nested",
        "calling.play",
        {
            "control_id": "play-1",
            "play": [
                {"type": "tts", "params": {"text": "Hi", "language": "en-GB", "gender": "male"}}
            ],
            "volume": -40,
            "direction": "both",
            "loop": 0,
            "language": "en-US",
            "voice": "en-US-Wavenet-C",
            "gender": "female",
            "status_url": "https://example.com/play",
            "future_option": {"kept": True},
        },
        SAME,
    ),
    ("play.pause", "calling.play.pause", {"control_id": "ctrl-1"}, SAME),
    ("play.resume", "calling.play.resume", {"control_id": "ctrl-1"}, SAME),
    ("play.stop", "calling.play.stop", {"control_id": "ctrl-1"}, SAME),
    ("play.volume", "calling.play.volume", {"control_id": "ctrl-1", "volume": -3.0}, SAME),
    (
        "record-flat-audio",
        "calling.record",
        {"control_id": "rec-1", "audio": {"beep": True, "format": "wav", "stereo": True}},
        {
            "control_id": "rec-1",
            "record": {"audio": {"beep": True, "format": "wav", "stereo": True}},
        },
    ),
    (
        "record-nested",
        "calling.record",
        {
            "control_id": "rec-1",
            "record": {
                "audio": {
                    "format": "mp3",
                    "direction": "both",
                    "initial_timeout": 0,
                    "end_silence_timeout": 2.5,
                    "max_length": 60,
                    "terminators": "#*a",
                    "input_sensitivity": 100,
                }
            },
            "status_url": "https://example.com/rec",
        },
        SAME,
    ),
    ("record.pause", "calling.record.pause", {"control_id": "rec-1", "behavior": "silence"}, SAME),
    ("record.resume", "calling.record.resume", {"control_id": "rec-1"}, SAME),
    ("record.stop", "calling.record.stop", {"control_id": "rec-1"}, SAME),
    (
        "collect",
        "calling.collect",
        {
            "control_id": "coll-1",
            "digits": {"max": 4, "terminators": "#"},
            "speech": {"end_silence_timeout": 2.0},
        },
        SAME,
    ),
    (
        "collect-full",
        "calling.collect",
        {
            "control_id": "coll-2",
            "initial_timeout": 5,
            "digits": {"max": 1, "terminators": "", "digit_timeout": 3.5},
            "speech": {
                "speech_timeout": 10,
                "language": "Deepgram:en-US",
                "hints": ["yes", "no"],
                "model": "nova-3",
                "engine": "Google.V2",
            },
            "continuous": True,
            "partial_results": False,
            "send_start_of_input": True,
            "start_input_timers": False,
            "status_url": "https://example.com/collect",
        },
        SAME,
    ),
    ("collect.stop", "calling.collect.stop", {"control_id": "coll-1"}, SAME),
    (
        "collect.start_input_timers",
        "calling.collect.start_input_timers",
        {"control_id": "coll-1"},
        SAME,
    ),
    (
        "detect-machine",
        "calling.detect",
        {
            "control_id": "det-1",
            "detect": {"type": "machine", "params": {"initial_timeout": 4.5}},
            "timeout": 30,
        },
        SAME,
    ),
    (
        "detect-flat-fax",
        "calling.detect",
        {"control_id": "det-2", "detect": {"type": "fax", "tone": "CED"}},
        {"control_id": "det-2", "detect": {"type": "fax", "params": {"tone": "CED"}}},
    ),
    (
        "detect-digit-no-params",
        "calling.detect",
        {"control_id": "det-3", "detect": {"type": "digit"}},
        SAME,
    ),
    ("detect.stop", "calling.detect.stop", {"control_id": "det-1"}, SAME),
    (
        "tap-nested",
        "calling.tap",
        {
            "control_id": "tap-1",
            "tap": {"type": "audio", "params": {"direction": "both"}},
            "device": {"type": "rtp", "params": {"addr": "192.168.1.1", "port": 1234}},
        },
        SAME,
    ),
    (
        "tap-flat",
        "calling.tap",
        {
            "control_id": "tap-2",
            "tap": {"direction": "speak"},
            "device": {"addr": "198.51.100.42", "port": 5060, "codec": "pcmu", "ptime": 20},
            "status_url": "https://example.com/tap",
        },
        {
            "control_id": "tap-2",
            "tap": {"type": "audio", "params": {"direction": "speak"}},
            "device": {
                "type": "rtp",
                "params": {"addr": "198.51.100.42", "port": 5060, "codec": "pcmu", "ptime": 20},
            },
            "status_url": "https://example.com/tap",
        },
    ),
    (
        "tap-ws",
        "calling.tap",
        {
            "control_id": "tap-3",
            "tap": {"type": "audio", "direction": "listen"},
            "device": {"type": "ws", "uri": "ws://127.0.0.1:9000/tap"},
        },
        {
            "control_id": "tap-3",
            "tap": {"type": "audio", "params": {"direction": "listen"}},
            "device": {"type": "ws", "params": {"uri": "ws://127.0.0.1:9000/tap"}},
        },
    ),
    ("tap.stop", "calling.tap.stop", {"control_id": "tap-1"}, SAME),
    (
        "stream",
        "calling.stream",
        {
            "control_id": "str-1",
            "url": "wss://example.com/audio-stream",
            "codec": "PCMU",
            "name": "n",
            "track": "both_tracks",
            "authorization_bearer_token": "t",
            "custom_parameters": {"session": 1},
            "status_url": "https://example.com/stream",
            "status_url_method": "POST",
        },
        SAME,
    ),
    ("stream.stop", "calling.stream.stop", {"control_id": "str-1"}, SAME),
    ("denoise", "calling.denoise", {}, {}),
    ("denoise.stop", "calling.denoise.stop", {}, {}),
    (
        "transcribe",
        "calling.transcribe",
        {"control_id": "tx-1", "status_url": "https://example.com/hook"},
        SAME,
    ),
    ("transcribe.stop", "calling.transcribe.stop", {"control_id": "tx-1"}, SAME),
    (
        "ai_message",
        "calling.ai_message",
        {"role": "user", "message_text": "Transfer me to billing"},
        SAME,
    ),
    (
        "ai_message-reset",
        "calling.ai_message",
        {"reset": {"full_reset": True, "system_prompt": "x"}, "global_data": {"tier": 1}},
        SAME,
    ),
    (
        "ai_hold-int",
        "calling.ai_hold",
        {"timeout": 60, "prompt": "Please wait while I transfer you."},
        {"timeout": "60", "prompt": "Please wait while I transfer you."},
    ),
    ("ai_hold-string", "calling.ai_hold", {"timeout": "300"}, SAME),
    ("ai_unhold", "calling.ai_unhold", {"prompt": "I'm back, how can I help?"}, SAME),
    ("ai.stop", "calling.ai.stop", {"control_id": "ai-1"}, SAME),
    ("ai.stop-empty", "calling.ai.stop", {}, {}),
    (
        "live_transcribe-flat",
        "calling.live_transcribe",
        {"action": "start", "lang": "en"},
        {"action": {"start": {"lang": "en", "direction": BOTH_LEGS}}},
    ),
    (
        "live_transcribe-flat-direction",
        "calling.live_transcribe",
        {"action": "start", "lang": "en", "direction": "local-caller", "speech_engine": "Google"},
        {
            "action": {
                "start": {"lang": "en", "direction": ["local-caller"], "speech_engine": "google"}
            }
        },
    ),
    (
        "live_transcribe-nested",
        "calling.live_transcribe",
        {
            "action": {
                "start": {
                    "lang": "en-US",
                    "direction": ["local-caller", "remote-caller"],
                    "webhook": "https://example.com/t",
                    "live_events": True,
                    "ai_summary": True,
                    "ai_summary_prompt": "Summarize",
                    "speech_engine": "deepgram",
                    "speech_timeout": 60000,
                    "vad_silence_ms": 300,
                    "vad_thresh": 400,
                    "debug_level": 2,
                }
            }
        },
        SAME,
    ),
    (
        "live_transcribe-language-alias",
        "calling.live_transcribe",
        {"action": {"start": {"language": "en-US", "direction": ["remote-caller"]}}},
        {"action": {"start": {"lang": "en-US", "direction": ["remote-caller"]}}},
    ),
    ("live_transcribe-stop", "calling.live_transcribe", {"action": "stop"}, SAME),
    (
        "live_transcribe-summarize",
        "calling.live_transcribe",
        {"action": "summarize", "webhook": "https://example.com/s"},
        {"action": {"summarize": {"webhook": "https://example.com/s"}}},
    ),
    (
        "live_translate-flat",
        "calling.live_translate",
        {"action": "start", "from_lang": "en", "to_lang": "es"},
        {"action": {"start": {"from_lang": "en", "to_lang": "es", "direction": BOTH_LEGS}}},
    ),
    (
        "live_translate-nested",
        "calling.live_translate",
        {
            "action": {
                "start": {
                    "from_lang": "en-US",
                    "to_lang": "es-ES",
                    "direction": ["local-caller", "remote-caller"],
                    "from_voice": "elevenlabs.josh",
                    "to_voice": "elevenlabs.josh",
                    "filter_from": "professional",
                    "filter_to": "prompt:Use formal business language",
                }
            },
            "status_url": "https://example.com/tr",
        },
        SAME,
    ),
    (
        "live_translate-inject-flat",
        "calling.live_translate",
        {"action": "inject", "message": "Please hold", "direction": "remote-caller"},
        {"action": {"inject": {"message": "Please hold", "direction": "remote-caller"}}},
    ),
    ("live_translate-stop", "calling.live_translate", {"action": "stop"}, SAME),
    ("send_fax.stop", "calling.send_fax.stop", {"control_id": "fax-1"}, SAME),
    ("receive_fax.stop", "calling.receive_fax.stop", {"control_id": "fax-1"}, SAME),
    (
        "refer-to-only",
        "calling.refer",
        {"device": {"to": "sip:agent@example.com"}},
        {"device": {"type": "sip", "params": {"to": "sip:agent@example.com"}}},
    ),
    (
        "refer-typed-flat",
        "calling.refer",
        {
            "device": {"type": "sip", "to": "sip:a@b", "from": "sip:me@b"},
            "status_url": "http://h/r",
        },
        {
            "device": {"type": "sip", "params": {"to": "sip:a@b", "from": "sip:me@b"}},
            "status_url": "http://h/r",
        },
    ),
    (
        "refer-nested",
        "calling.refer",
        {"device": {"type": "sip", "params": {"to": "sip:a@b", "username": "u", "password": "p"}}},
        SAME,
    ),
    (
        "user_event",
        "calling.user_event",
        {"event": {"type": "custom", "data": {"key": "value"}}},
        SAME,
    ),
    (
        "ai_sidecar",
        "calling.ai_sidecar",
        {
            "lang": "en-US",
            "prompt": "You are a sales copilot.",
            "model": "gpt-4o-mini",
            "direction": ["remote-caller", "local-caller"],
            "customer_role": "remote-caller",
            "url": "https://example.com/sidecar",
            "SWAIG": {"functions": []},
            "permissions": {"swaig_allow_swml": False},
            "global_data": {"company": "Acme"},
            "hints": ["ACME", "SOC 2"],
            "params": {"idle_timeout_ms": 250, "final_summary": True, "speech_engine": "google"},
        },
        SAME,
    ),
    (
        "ai_sidecar-summarize",
        "calling.ai_sidecar",
        {"lang": "en-US", "action": {"summarize": {"prompt": "Brief."}}},
        SAME,
    ),
    ("ai_sidecar.poke", "calling.ai_sidecar.poke", {"text": "Suggest a comparison."}, SAME),
    ("ai_sidecar.ask", "calling.ai_sidecar.ask", {"text": "Objections so far?"}, SAME),
    ("ai_sidecar.stop", "calling.ai_sidecar.stop", {}, {}),
    ("ai_sidecar.status", "calling.ai_sidecar.status", {}, {}),
]


def envelope(command: str, params: Any, call_id: str | None = CALL_ID) -> dict[str, Any]:
    body: dict[str, Any] = {"command": command, "params": params}
    if COMMANDS[command].id_at == "top" and call_id is not None:
        body["id"] = call_id
    return body


def test_every_command_has_a_happy_case() -> None:
    assert {case[1] for case in HAPPY} == set(COMMANDS)
    assert len(COMMANDS) == 42


@pytest.mark.parametrize(
    ("command", "sent", "expected"), [c[1:] for c in HAPPY], ids=[c[0] for c in HAPPY]
)
def test_happy_path_hands_canonical_params_to_the_engine(
    http: httpx.Client, engine: RecordingEngine, command: str, sent: dict[str, Any], expected: Any
) -> None:
    response = http.post(URL, json=envelope(command, sent))
    assert response.status_code == 200, response.text
    assert response.json()["id"] == CALL_ID
    [executed] = engine.executed
    assert executed.command == command
    assert executed.call_id == (CALL_ID if COMMANDS[command].id_at == "top" else None)
    assert executed.params == (sent if expected is SAME else expected)
    assert "from_" not in executed.params


# --------------------------------------------------------------------------- documented examples

CLIENT_DOC_EXAMPLES: list[tuple[str, dict[str, Any]]] = [
    # ../shared/reference/client-calling.txt, as the wire bodies those calls produce.
    (
        "dial",
        {"from": "+15559876543", "to": "+15551234567", "url": "https://example.com/call-handler"},
    ),
    ("update", {"id": CALL_ID, "url": "https://example.com/new-handler"}),
    ("calling.end", {"reason": "hangup"}),
    ("calling.transfer", {"dest": "sip:agent@example.com"}),
    ("calling.disconnect", {}),
    ("calling.play", {"play": [{"type": "tts", "text": "Hello!"}], "volume": 5.0}),
    ("calling.play.pause", {"control_id": "ctrl-1"}),
    ("calling.play.resume", {"control_id": "ctrl-1"}),
    ("calling.play.stop", {"control_id": "ctrl-1"}),
    ("calling.play.volume", {"control_id": "ctrl-1", "volume": -3.0}),
    (
        "calling.record",
        {"control_id": "rec-1", "audio": {"beep": True, "format": "wav", "stereo": True}},
    ),
    ("calling.record.pause", {"control_id": "rec-1"}),
    ("calling.record.resume", {"control_id": "rec-1"}),
    ("calling.record.stop", {"control_id": "rec-1"}),
    (
        "calling.collect",
        {
            "control_id": "coll-1",
            "digits": {"max": 4, "terminators": "#"},
            "speech": {"end_silence_timeout": 2.0},
        },
    ),
    ("calling.collect.stop", {"control_id": "coll-1"}),
    ("calling.collect.start_input_timers", {"control_id": "coll-1"}),
    (
        "calling.detect",
        {"control_id": "det-1", "detect": {"type": "machine", "params": {"initial_timeout": 4.5}}},
    ),
    ("calling.detect.stop", {"control_id": "det-1"}),
    (
        "calling.tap",
        {
            "control_id": "tap-1",
            "tap": {"type": "audio", "params": {"direction": "both"}},
            "device": {"type": "rtp", "params": {"addr": "192.168.1.1", "port": 1234}},
        },
    ),
    ("calling.tap.stop", {"control_id": "tap-1"}),
    (
        "calling.stream",
        {"control_id": "str-1", "url": "wss://example.com/audio-stream", "codec": "PCMU"},
    ),
    ("calling.stream.stop", {"control_id": "str-1"}),
    ("calling.denoise", {}),
    ("calling.denoise.stop", {}),
    ("calling.transcribe", {"control_id": "tx-1", "status_url": "https://example.com/hook"}),
    ("calling.transcribe.stop", {"control_id": "tx-1"}),
    ("calling.ai_message", {"role": "user", "message_text": "Transfer me to billing"}),
    ("calling.ai_hold", {"timeout": 60, "prompt": "Please wait while I transfer you."}),
    ("calling.ai_unhold", {"prompt": "I'm back, how can I help?"}),
    ("calling.ai.stop", {"control_id": "ai-1"}),
    ("calling.live_transcribe", {"action": "start", "lang": "en"}),
    ("calling.live_translate", {"action": "start", "from_lang": "en", "to_lang": "es"}),
    ("calling.send_fax.stop", {"control_id": "fax-1"}),
    ("calling.receive_fax.stop", {"control_id": "fax-1"}),
    ("calling.refer", {"device": {"to": "sip:agent@example.com"}}),
    ("calling.user_event", {"event": {"type": "custom", "data": {"key": "value"}}}),
]


@pytest.mark.skipif(not REFERENCE.exists(), reason="shared/reference not checked out beside main")
def test_client_doc_examples_cover_the_document() -> None:
    """Every command in the document's "Complete Method List" has an example above."""
    text = (REFERENCE / "client-calling.txt").read_text()
    table = [line.split("|") for line in text.splitlines() if line.startswith("| ")]
    documented = {cells[2].strip() for cells in table if "(" in cells[1]}
    assert len(documented) == 37
    assert documented == {c for c, _ in CLIENT_DOC_EXAMPLES}


@pytest.mark.parametrize(
    ("command", "params"), CLIENT_DOC_EXAMPLES, ids=[c for c, _ in CLIENT_DOC_EXAMPLES]
)
def test_client_doc_examples_are_accepted(
    http: httpx.Client, command: str, params: dict[str, Any]
) -> None:
    response = http.post(URL, json=envelope(command, params))
    assert response.status_code == 200, response.text


def openapi_examples() -> list[tuple[str, dict[str, Any]]]:
    spec = yaml.safe_load((REFERENCE / "calling-openapi.yaml").read_text())
    examples = spec["paths"]["/api/calling/calls"]["post"]["requestBody"]["content"][
        "application/json"
    ]["examples"]
    return [(name, example["value"]) for name, example in examples.items()]


OPENAPI_EXAMPLES = openapi_examples() if REFERENCE.exists() else []


@pytest.mark.skipif(not OPENAPI_EXAMPLES, reason="shared/reference not checked out beside main")
@pytest.mark.parametrize(("name", "body"), OPENAPI_EXAMPLES, ids=[n for n, _ in OPENAPI_EXAMPLES])
def test_openapi_examples_pass_through_unchanged(
    http: httpx.Client, engine: RecordingEngine, name: str, body: dict[str, Any]
) -> None:
    response = http.post(URL, json=body)
    assert response.status_code == 200, response.text
    # Every spec example is already canonical: the engine must get it verbatim.
    assert engine.executed[0].params == body["params"]


# --------------------------------------------------------------------------- the 4xx table

T = "calling."
# (case id, command, params, expected status, [(code, attribute), ...] for 422)
INVALID: list[tuple[str, str, Any, int, list[tuple[str, str]]]] = [
    # dial
    (
        "dial-no-from",
        "dial",
        {"to": "+1", "url": "https://x"},
        422,
        [("missing_required_parameter", "from")],
    ),
    (
        "dial-blank-from",
        "dial",
        {"from": " ", "to": "+1", "url": "https://x"},
        422,
        [("missing_required_parameter", "from")],
    ),
    (
        "dial-no-to",
        "dial",
        {"from": "+1", "url": "https://x"},
        422,
        [("missing_required_parameter", "to")],
    ),
    (
        "dial-neither",
        "dial",
        {"from": "+1", "to": "+2"},
        422,
        [("inline_swml_or_swml_webhook_required", "url")],
    ),
    (
        "dial-both",
        "dial",
        {"from": "+1", "to": "+2", "url": "https://x", "swml": SWML},
        422,
        [("incompatible_parameters", "swml")],
    ),
    (
        "dial-ftp-url",
        "dial",
        {"from": "+1", "to": "+2", "url": "ftp://x"},
        422,
        [("not_an_http_url", "url")],
    ),
    (
        "dial-relative-url",
        "dial",
        {"from": "+1", "to": "+2", "url": "/swml"},
        422,
        [("not_an_http_url", "url")],
    ),
    (
        "dial-bad-port-url",
        "dial",
        {"from": "+1", "to": "+2", "url": "http://h:99999/"},
        422,
        [("url_failed_to_parse", "url")],
    ),
    (
        "dial-status-url",
        "dial",
        {"from": "+1", "to": "+2", "url": "https://x", "status_url": "mailto:a@b"},
        422,
        [("not_an_http_url", "status_url")],
    ),
    (
        "dial-from-int",
        "dial",
        {"from": 15551234567, "to": "+2", "url": "https://x"},
        422,
        [("not_a_string", "from")],
    ),
    (
        "dial-timeout-0",
        "dial",
        {"from": "+1", "to": "+2", "url": "https://x", "timeout": 0},
        422,
        [("invalid_parameter", "timeout")],
    ),
    (
        "dial-timeout-601",
        "dial",
        {"from": "+1", "to": "+2", "url": "https://x", "timeout": 601},
        422,
        [("invalid_parameter", "timeout")],
    ),
    (
        "dial-timeout-float",
        "dial",
        {"from": "+1", "to": "+2", "url": "https://x", "timeout": 1.5},
        422,
        [("invalid_parameter", "timeout")],
    ),
    (
        "dial-timeout-str",
        "dial",
        {"from": "+1", "to": "+2", "url": "https://x", "timeout": "30"},
        422,
        [("invalid_parameter", "timeout")],
    ),
    (
        "dial-price",
        "dial",
        {"from": "+1", "to": "+2", "url": "https://x", "max_price_per_minute": -1},
        422,
        [("invalid_parameter", "max_price_per_minute")],
    ),
    (
        "dial-status-events",
        "dial",
        {"from": "+1", "to": "+2", "url": "https://x", "status_events": ["queued"]},
        422,
        [("invalid_parameter", "status_events.0")],
    ),
    (
        "dial-status-events-str",
        "dial",
        {"from": "+1", "to": "+2", "url": "https://x", "status_events": "ended"},
        422,
        [("not_an_array_of_strings", "status_events")],
    ),
    (
        "dial-url-method",
        "dial",
        {"from": "+1", "to": "+2", "url": "https://x", "url_method": "PUT"},
        422,
        [("invalid_parameter", "url_method")],
    ),
    (
        "dial-codecs-shape",
        "dial",
        {"from": "+1", "to": "+2", "url": "https://x", "codecs": 5},
        422,
        [("invalid_codecs_format", "codecs")],
    ),
    (
        "dial-codecs-mixed",
        "dial",
        {"from": "+1", "to": "+2", "url": "https://x", "codecs": ["PCMU", 8]},
        422,
        [("invalid_codecs_format", "codecs")],
    ),
    (
        "dial-codecs-empty",
        "dial",
        {"from": "+1", "to": "+2", "url": "https://x", "codecs": ""},
        422,
        [("invalid_codecs_format", "codecs")],
    ),
    (
        "dial-codecs-unknown",
        "dial",
        {"from": "+1", "to": "+2", "url": "https://x", "codecs": "PCMU,GSM"},
        422,
        [("invalid_parameter", "codecs.1")],
    ),
    (
        "dial-send-digits",
        "dial",
        {"from": "+1", "to": "+2", "url": "https://x", "send_digits": "12x"},
        422,
        [("invalid_parameter", "send_digits")],
    ),
    (
        "dial-region",
        "dial",
        {"from": "+1", "to": "+2", "url": "https://x", "region": 3},
        422,
        [("invalid_parameter", "region")],
    ),
    (
        "dial-cv-object",
        "dial",
        {"from": "+1", "to": "+2", "url": "https://x", "custom_variables": ["a"]},
        422,
        [("must_be_object", "custom_variables")],
    ),
    (
        "dial-cv-too-many",
        "dial",
        {
            "from": "+1",
            "to": "+2",
            "url": "https://x",
            "custom_variables": {f"k{i}": "v" for i in range(21)},
        },
        422,
        [("too_many_custom_variables", "custom_variables")],
    ),
    (
        "dial-cv-name",
        "dial",
        {"from": "+1", "to": "+2", "url": "https://x", "custom_variables": {"a-b": "v"}},
        422,
        [("invalid_custom_variable_name", "custom_variables.a-b")],
    ),
    (
        "dial-cv-reserved",
        "dial",
        {"from": "+1", "to": "+2", "url": "https://x", "custom_variables": {"SignalWire_x": "v"}},
        422,
        [("reserved_custom_variable_name", "custom_variables.SignalWire_x")],
    ),
    (
        "dial-cv-empty",
        "dial",
        {"from": "+1", "to": "+2", "url": "https://x", "custom_variables": {"a": ""}},
        422,
        [("invalid_custom_variable_value", "custom_variables.a")],
    ),
    (
        "dial-cv-nonstring",
        "dial",
        {"from": "+1", "to": "+2", "url": "https://x", "custom_variables": {"a": 1}},
        422,
        [("invalid_custom_variable_value", "custom_variables.a")],
    ),
    (
        "dial-cv-long",
        "dial",
        {"from": "+1", "to": "+2", "url": "https://x", "custom_variables": {"a": "é" * 513}},
        422,
        [("custom_variable_value_too_long", "custom_variables.a")],
    ),
    (
        "dial-swml-garbage",
        "dial",
        {"from": "+1", "to": "+2", "swml": "::: not yaml: ["},
        422,
        [("not_json_or_yaml", "swml")],
    ),
    (
        "dial-swml-no-main",
        "dial",
        {"from": "+1", "to": "+2", "swml": {"sections": {"other": []}}},
        422,
        [("invalid_parameter", "swml.sections.main")],
    ),
    (
        "dial-swml-list",
        "dial",
        {"from": "+1", "to": "+2", "swml": [1]},
        422,
        [("must_be_object", "swml")],
    ),
    # update
    ("update-no-id", "update", {"url": "https://x"}, 422, [("missing_required_parameter", "id")]),
    (
        "update-bad-id",
        "update",
        {"id": "nope", "url": "https://x"},
        422,
        [("invalid_parameter", "id")],
    ),
    (
        "update-nothing",
        "update",
        {"id": CALL_ID},
        422,
        [("inline_swml_or_swml_webhook_required", "url")],
    ),
    (
        "update-status",
        "update",
        {"id": CALL_ID, "status": "busy"},
        422,
        [("invalid_parameter", "status")],
    ),
    (
        "update-both",
        "update",
        {"id": CALL_ID, "url": "https://x", "swml": SWML},
        422,
        [("incompatible_parameters", "swml")],
    ),
    # end / transfer
    ("end-reason", T + "end", {"reason": "no_answer"}, 422, [("invalid_parameter", "reason")]),
    ("transfer-missing", T + "transfer", {}, 422, [("missing_required_parameter", "dest")]),
    ("transfer-number", T + "transfer", {"dest": 5}, 422, [("invalid_parameter", "dest")]),
    ("transfer-object", T + "transfer", {"dest": {"foo": 1}}, 422, [("invalid_parameter", "dest")]),
    # play
    ("play-missing", T + "play", {}, 422, [("missing_required_parameter", "play")]),
    ("play-empty", T + "play", {"play": []}, 422, [("invalid_parameter", "play")]),
    ("play-not-list", T + "play", {"play": {"type": "tts"}}, 422, [("invalid_parameter", "play")]),
    (
        "play-item-type",
        T + "play",
        {"play": [{"type": "video"}]},
        422,
        [("invalid_parameter", "play.0.type")],
    ),
    (
        "play-item-no-type",
        T + "play",
        {"play": [{"text": "hi"}]},
        422,
        [("missing_required_parameter", "play.0.type")],
    ),
    ("play-item-not-obj", T + "play", {"play": ["say:hi"]}, 422, [("must_be_object", "play.0")]),
    (
        "play-audio-url",
        T + "play",
        {"play": [{"type": "audio", "params": {"url": "file:///etc/passwd"}}]},
        422,
        [("not_an_http_url", "play.0.params.url")],
    ),
    (
        "play-tts-blank",
        T + "play",
        {"play": [{"type": "tts", "text": ""}]},
        422,
        [("missing_required_parameter", "play.0.params.text")],
    ),
    (
        "play-tts-gender",
        T + "play",
        {"play": [{"type": "tts", "text": "a", "gender": "x"}]},
        422,
        [("invalid_parameter", "play.0.params.gender")],
    ),
    (
        "play-tts-voice",
        T + "play",
        {"play": [{"type": "tts", "text": "a", "voice": "bad voice!"}]},
        422,
        [("invalid_parameter", "play.0.params.voice")],
    ),
    (
        "play-silence-0",
        T + "play",
        {"play": [{"type": "silence", "duration": 0}]},
        422,
        [("invalid_parameter", "play.0.params.duration")],
    ),
    (
        "play-silence-missing",
        T + "play",
        {"play": [{"type": "silence"}]},
        422,
        [("missing_required_parameter", "play.0.params.duration")],
    ),
    (
        "play-ringtone",
        T + "play",
        {"play": [{"type": "ringtone", "name": "xx"}]},
        422,
        [("invalid_parameter", "play.0.params.name")],
    ),
    (
        "play-params-type",
        T + "play",
        {"play": [{"type": "tts", "params": "hi"}]},
        422,
        [("must_be_object", "play.0.params")],
    ),
    (
        "play-volume-hi",
        T + "play",
        {"play": [{"type": "silence", "duration": 1}], "volume": 40.5},
        422,
        [("invalid_parameter", "volume")],
    ),
    (
        "play-volume-lo",
        T + "play",
        {"play": [{"type": "silence", "duration": 1}], "volume": -41},
        422,
        [("invalid_parameter", "volume")],
    ),
    (
        "play-volume-bool",
        T + "play",
        {"play": [{"type": "silence", "duration": 1}], "volume": True},
        422,
        [("invalid_parameter", "volume")],
    ),
    (
        "play-loop",
        T + "play",
        {"play": [{"type": "silence", "duration": 1}], "loop": -1},
        422,
        [("invalid_parameter", "loop")],
    ),
    (
        "play-direction",
        T + "play",
        {"play": [{"type": "silence", "duration": 1}], "direction": "up"},
        422,
        [("invalid_parameter", "direction")],
    ),
    (
        "play-control-id",
        T + "play",
        {"play": [{"type": "silence", "duration": 1}], "control_id": 1},
        422,
        [("not_a_string", "control_id")],
    ),
    (
        "play.pause-missing",
        T + "play.pause",
        {},
        422,
        [("missing_required_parameter", "control_id")],
    ),
    (
        "play.stop-blank",
        T + "play.stop",
        {"control_id": ""},
        422,
        [("missing_required_parameter", "control_id")],
    ),
    (
        "play.volume-missing",
        T + "play.volume",
        {"control_id": "c"},
        422,
        [("missing_required_parameter", "volume")],
    ),
    (
        "play.volume-range",
        T + "play.volume",
        {"control_id": "c", "volume": 100},
        422,
        [("invalid_parameter", "volume")],
    ),
    # record
    (
        "record-missing",
        T + "record",
        {"control_id": "r"},
        422,
        [("missing_required_parameter", "record")],
    ),
    (
        "record-no-audio",
        T + "record",
        {"control_id": "r", "record": {}},
        422,
        [("missing_required_parameter", "record.audio")],
    ),
    (
        "record-flat-bad",
        T + "record",
        {"control_id": "r", "audio": "wav"},
        422,
        [("must_be_object", "audio")],
    ),
    (
        "record-format",
        T + "record",
        {"record": {"audio": {"format": "ogg"}}},
        422,
        [("invalid_parameter", "record.audio.format")],
    ),
    (
        "record-beep",
        T + "record",
        {"audio": {"beep": "yes"}},
        422,
        [("not_a_boolean", "record.audio.beep")],
    ),
    (
        "record-terminators",
        T + "record",
        {"audio": {"terminators": "#x"}},
        422,
        [("invalid_parameter", "record.audio.terminators")],
    ),
    (
        "record-sensitivity",
        T + "record",
        {"audio": {"input_sensitivity": 101}},
        422,
        [("invalid_parameter", "record.audio.input_sensitivity")],
    ),
    (
        "record-max-length",
        T + "record",
        {"audio": {"max_length": -1}},
        422,
        [("invalid_parameter", "record.audio.max_length")],
    ),
    (
        "record.pause-behavior",
        T + "record.pause",
        {"control_id": "r", "behavior": "drop"},
        422,
        [("invalid_parameter", "behavior")],
    ),
    # collect
    ("collect-neither", T + "collect", {"control_id": "c"}, 400, []),
    ("collect-nulls", T + "collect", {"control_id": "c", "digits": None, "speech": None}, 400, []),
    (
        "collect-digits-max",
        T + "collect",
        {"digits": {"max": 0}},
        422,
        [("invalid_parameter", "digits.max")],
    ),
    (
        "collect-digits-nomax",
        T + "collect",
        {"digits": {}},
        422,
        [("missing_required_parameter", "digits.max")],
    ),
    (
        "collect-terminators",
        T + "collect",
        {"digits": {"max": 2, "terminators": "abc!"}},
        422,
        [("invalid_parameter", "digits.terminators")],
    ),
    (
        "collect-engine",
        T + "collect",
        {"speech": {"engine": "google"}},
        422,
        [("invalid_parameter", "speech.engine")],
    ),
    (
        "collect-hints",
        T + "collect",
        {"speech": {"hints": "yes"}},
        422,
        [("not_an_array_of_strings", "speech.hints")],
    ),
    (
        "collect-continuous",
        T + "collect",
        {"speech": {}, "continuous": 1},
        422,
        [("not_a_boolean", "continuous")],
    ),
    (
        "collect-initial",
        T + "collect",
        {"speech": {}, "initial_timeout": 0},
        422,
        [("invalid_parameter", "initial_timeout")],
    ),
    # detect
    (
        "detect-missing",
        T + "detect",
        {"control_id": "d"},
        422,
        [("missing_required_parameter", "detect")],
    ),
    (
        "detect-type",
        T + "detect",
        {"detect": {"type": "human"}},
        422,
        [("invalid_parameter", "detect.type")],
    ),
    (
        "detect-tone",
        T + "detect",
        {"detect": {"type": "fax", "params": {"tone": "XYZ"}}},
        422,
        [("invalid_parameter", "detect.params.tone")],
    ),
    (
        "detect-digits",
        T + "detect",
        {"detect": {"type": "digit", "params": {"digits": "12e"}}},
        422,
        [("invalid_parameter", "detect.params.digits")],
    ),
    (
        "detect-timeout",
        T + "detect",
        {"detect": {"type": "machine"}, "timeout": -1},
        422,
        [("invalid_parameter", "timeout")],
    ),
    # tap
    (
        "tap-missing",
        T + "tap",
        {"control_id": "t"},
        422,
        [("missing_required_parameter", "device"), ("missing_required_parameter", "tap")],
    ),
    (
        "tap-direction",
        T + "tap",
        {
            "tap": {"type": "audio", "params": {}},
            "device": {"type": "ws", "params": {"uri": "wss://x"}},
        },
        422,
        [("missing_required_parameter", "tap.params.direction")],
    ),
    (
        "tap-addr",
        T + "tap",
        {
            "tap": {"direction": "both"},
            "device": {"type": "rtp", "params": {"addr": "example.com", "port": 1}},
        },
        422,
        [("invalid_parameter", "device.params.addr")],
    ),
    (
        "tap-port",
        T + "tap",
        {
            "tap": {"direction": "both"},
            "device": {"type": "rtp", "params": {"addr": "1.2.3.4", "port": 65536}},
        },
        422,
        [("invalid_parameter", "device.params.port")],
    ),
    (
        "tap-ptime",
        T + "tap",
        {
            "tap": {"direction": "both"},
            "device": {"type": "rtp", "params": {"addr": "1.2.3.4", "port": 5, "ptime": 25}},
        },
        422,
        [("invalid_parameter", "device.params.ptime")],
    ),
    (
        "tap-codec",
        T + "tap",
        {"tap": {"direction": "both"}, "device": {"addr": "1.2.3.4", "port": 5, "codec": "G729"}},
        422,
        [("invalid_parameter", "device.params.codec")],
    ),
    (
        "tap-ws-uri",
        T + "tap",
        {"tap": {"direction": "both"}, "device": {"type": "ws", "uri": "https://x"}},
        422,
        [("invalid_parameter", "device.params.uri")],
    ),
    (
        "tap-device-type",
        T + "tap",
        {"tap": {"direction": "both"}, "device": {"type": "sip"}},
        422,
        [("invalid_parameter", "device.type")],
    ),
    # stream
    (
        "stream-missing",
        T + "stream",
        {"control_id": "s"},
        422,
        [("missing_required_parameter", "url")],
    ),
    ("stream-ws", T + "stream", {"url": "ws://example.com/s"}, 422, [("invalid_parameter", "url")]),
    (
        "stream-track",
        T + "stream",
        {"url": "wss://x", "track": "left"},
        422,
        [("invalid_parameter", "track")],
    ),
    (
        "stream-custom",
        T + "stream",
        {"url": "wss://x", "custom_parameters": "a=b"},
        422,
        [("must_be_object", "custom_parameters")],
    ),
    (
        "stream-method",
        T + "stream",
        {"url": "wss://x", "status_url_method": "PATCH"},
        422,
        [("invalid_parameter", "status_url_method")],
    ),
    # transcribe / AI
    (
        "transcribe-status-url",
        T + "transcribe",
        {"control_id": "t", "status_url": "example.com"},
        422,
        [("not_an_http_url", "status_url")],
    ),
    (
        "transcribe.stop-missing",
        T + "transcribe.stop",
        {},
        422,
        [("missing_required_parameter", "control_id")],
    ),
    (
        "ai_message-empty",
        T + "ai_message",
        {"role": "user"},
        422,
        [("missing_required_parameter", "message_text")],
    ),
    (
        "ai_message-role",
        T + "ai_message",
        {"role": "bot", "message_text": "x"},
        422,
        [("invalid_parameter", "role")],
    ),
    (
        "ai_message-reset",
        T + "ai_message",
        {"reset": {"full_reset": "yes"}},
        422,
        [("not_a_boolean", "reset.full_reset")],
    ),
    (
        "ai_hold-timeout",
        T + "ai_hold",
        {"timeout": "soon"},
        422,
        [("invalid_parameter", "timeout")],
    ),
    ("ai_hold-negative", T + "ai_hold", {"timeout": -5}, 422, [("invalid_parameter", "timeout")]),
    (
        "live_transcribe-missing",
        T + "live_transcribe",
        {},
        422,
        [("missing_required_parameter", "action")],
    ),
    (
        "live_transcribe-action",
        T + "live_transcribe",
        {"action": "pause"},
        422,
        [("invalid_parameter", "action")],
    ),
    (
        "live_transcribe-no-lang",
        T + "live_transcribe",
        {"action": "start"},
        422,
        [("missing_required_parameter", "action.start.lang")],
    ),
    (
        "live_transcribe-nested-no-direction",
        T + "live_transcribe",
        {"action": {"start": {"lang": "en"}}},
        422,
        [("missing_required_parameter", "action.start.direction")],
    ),
    (
        "live_transcribe-direction",
        T + "live_transcribe",
        {"action": "start", "lang": "en", "direction": ["both"]},
        422,
        [("invalid_parameter", "action.start.direction.0")],
    ),
    (
        "live_transcribe-vad",
        T + "live_transcribe",
        {"action": "start", "lang": "en", "vad_thresh": 1801},
        422,
        [("invalid_parameter", "action.start.vad_thresh")],
    ),
    (
        "live_transcribe-debug",
        T + "live_transcribe",
        {"action": "start", "lang": "en", "debug_level": 3},
        422,
        [("invalid_parameter", "action.start.debug_level")],
    ),
    (
        "live_transcribe-engine",
        T + "live_transcribe",
        {"action": "start", "lang": "en", "speech_engine": "whisper"},
        422,
        [("invalid_parameter", "action.start.speech_engine")],
    ),
    (
        "live_transcribe-two",
        T + "live_transcribe",
        {"action": {"start": {}, "summarize": {}}},
        422,
        [("invalid_parameter", "action")],
    ),
    (
        "live_translate-langs",
        T + "live_translate",
        {"action": "start"},
        422,
        [
            ("missing_required_parameter", "action.start.from_lang"),
            ("missing_required_parameter", "action.start.to_lang"),
        ],
    ),
    (
        "live_translate-filter",
        T + "live_translate",
        {"action": "start", "from_lang": "en", "to_lang": "es", "filter_to": "angry"},
        422,
        [("invalid_parameter", "action.start.filter_to")],
    ),
    (
        "live_translate-inject",
        T + "live_translate",
        {"action": {"inject": {"message": "x"}}},
        422,
        [("missing_required_parameter", "action.inject.direction")],
    ),
    ("refer-missing", T + "refer", {}, 422, [("missing_required_parameter", "device")]),
    (
        "refer-to",
        T + "refer",
        {"device": {"to": "tel:+1555"}},
        422,
        [("invalid_parameter", "device.params.to")],
    ),
    (
        "refer-from",
        T + "refer",
        {"device": {"to": "sip:a@b", "from": "a@b"}},
        422,
        [("invalid_parameter", "device.params.from")],
    ),
    (
        "refer-type",
        T + "refer",
        {"device": {"type": "pstn", "to": "sip:a@b"}},
        422,
        [("invalid_parameter", "device.type")],
    ),
    ("user_event-missing", T + "user_event", {}, 422, [("missing_required_parameter", "event")]),
    ("user_event-string", T + "user_event", {"event": "ping"}, 422, [("must_be_object", "event")]),
    (
        "sidecar-lang",
        T + "ai_sidecar",
        {"prompt": "x"},
        422,
        [("missing_required_parameter", "lang")],
    ),
    (
        "sidecar-direction",
        T + "ai_sidecar",
        {"lang": "en", "direction": ["remote-caller"]},
        422,
        [("invalid_parameter", "direction")],
    ),
    (
        "sidecar-idle",
        T + "ai_sidecar",
        {"lang": "en", "params": {"idle_timeout_ms": 10}},
        422,
        [("invalid_parameter", "params.idle_timeout_ms")],
    ),
    (
        "sidecar-hints",
        T + "ai_sidecar",
        {"lang": "en", "hints": []},
        422,
        [("invalid_parameter", "hints")],
    ),
    (
        "sidecar-url",
        T + "ai_sidecar",
        {"lang": "en", "url": "x"},
        422,
        [("not_an_http_url", "url")],
    ),
    (
        "sidecar-prompt",
        T + "ai_sidecar",
        {"lang": "en", "prompt": 5},
        422,
        [("invalid_parameter", "prompt")],
    ),
    (
        "sidecar.poke-missing",
        T + "ai_sidecar.poke",
        {},
        422,
        [("missing_required_parameter", "text")],
    ),
    ("sidecar.ask-type", T + "ai_sidecar.ask", {"text": ["q"]}, 422, [("not_a_string", "text")]),
    ("fax-missing", T + "send_fax.stop", {}, 422, [("missing_required_parameter", "control_id")]),
    (
        "fax-receive-missing",
        T + "receive_fax.stop",
        {"control_id": None},
        422,
        [("missing_required_parameter", "control_id")],
    ),
]


@pytest.mark.parametrize(
    ("command", "params", "status", "expected"),
    [c[1:] for c in INVALID],
    ids=[c[0] for c in INVALID],
)
def test_invalid_params(
    http: httpx.Client,
    engine: RecordingEngine,
    command: str,
    params: Any,
    status: int,
    expected: list[tuple[str, str]],
) -> None:
    response = http.post(URL, json=envelope(command, params))
    assert response.status_code == status, response.text
    if status == 400:
        assert response.json() == {"error": "Bad Request"}
    else:
        errors = response.json()["errors"]
        assert sorted((e["code"], e["attribute"]) for e in errors) == sorted(expected)
        for item in errors:
            assert item["type"] == "validation_error"
            assert item["url"] == "https://signalwire.com/docs/apis/error-codes"
            assert item["message"].startswith(item["attribute"])
    assert engine.executed == []
