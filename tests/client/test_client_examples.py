"""Every documented ``client.calling`` example, sent for real to a local HTTP server.

Sources: shared/reference/client-calling.txt (all examples) and calling-api.md §8-§9 (the SDK
conventions: ``update(id=…, status="completed")``, ``dial`` with ``from_``/``to``). Each example is
run with the sync and the async client; the test checks the exact request that arrived.
"""

from __future__ import annotations

import base64
import inspect
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from callplane import __version__

CALL_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
AUTH = "Basic " + base64.b64encode(b"proj-1234:tok-secret").decode()
USER_AGENT = f"callplane-python/{__version__} httpx/{httpx.__version__}"

Example = tuple[str, Callable[[Any], Any], dict[str, Any]]


def cmd(command: str, params: dict[str, Any], call_id: str | None = CALL_ID) -> dict[str, Any]:
    body: dict[str, Any] = {"command": command}
    if call_id is not None:
        body["id"] = call_id
    body["params"] = params
    return body


EXAMPLES: list[Example] = [
    # -- client-calling.txt: call lifecycle
    (
        "dial",
        lambda c: c.dial(
            from_="+15559876543", to="+15551234567", url="https://example.com/call-handler"
        ),
        cmd(
            "dial",
            {
                "from": "+15559876543",
                "to": "+15551234567",
                "url": "https://example.com/call-handler",
            },
            None,
        ),
    ),
    (
        "update",
        lambda c: c.update(id=CALL_ID, url="https://example.com/new-handler"),
        cmd("update", {"id": CALL_ID, "url": "https://example.com/new-handler"}, None),
    ),
    (
        "end",
        lambda c: c.end(CALL_ID, reason="hangup"),
        cmd("calling.end", {"reason": "hangup"}),
    ),
    (
        "transfer",
        lambda c: c.transfer(CALL_ID, dest="sip:agent@example.com"),
        cmd("calling.transfer", {"dest": "sip:agent@example.com"}),
    ),
    ("disconnect", lambda c: c.disconnect(CALL_ID), cmd("calling.disconnect", {})),
    # -- playback
    (
        "play",
        lambda c: c.play(CALL_ID, play=[{"type": "tts", "text": "Hello!"}], volume=5.0),
        cmd("calling.play", {"play": [{"type": "tts", "text": "Hello!"}], "volume": 5.0}),
    ),
    (
        "play_pause",
        lambda c: c.play_pause(CALL_ID, control_id="ctrl-1"),
        cmd("calling.play.pause", {"control_id": "ctrl-1"}),
    ),
    (
        "play_resume",
        lambda c: c.play_resume(CALL_ID, control_id="ctrl-1"),
        cmd("calling.play.resume", {"control_id": "ctrl-1"}),
    ),
    (
        "play_stop",
        lambda c: c.play_stop(CALL_ID, control_id="ctrl-1"),
        cmd("calling.play.stop", {"control_id": "ctrl-1"}),
    ),
    (
        "play_volume",
        lambda c: c.play_volume(CALL_ID, control_id="ctrl-1", volume=-3.0),
        cmd("calling.play.volume", {"control_id": "ctrl-1", "volume": -3.0}),
    ),
    # -- recording
    (
        "record",
        lambda c: c.record(
            CALL_ID, control_id="rec-1", audio={"beep": True, "format": "wav", "stereo": True}
        ),
        cmd(
            "calling.record",
            {"control_id": "rec-1", "audio": {"beep": True, "format": "wav", "stereo": True}},
        ),
    ),
    (
        "record_pause",
        lambda c: c.record_pause(CALL_ID, control_id="rec-1"),
        cmd("calling.record.pause", {"control_id": "rec-1"}),
    ),
    (
        "record_resume",
        lambda c: c.record_resume(CALL_ID, control_id="rec-1"),
        cmd("calling.record.resume", {"control_id": "rec-1"}),
    ),
    (
        "record_stop",
        lambda c: c.record_stop(CALL_ID, control_id="rec-1"),
        cmd("calling.record.stop", {"control_id": "rec-1"}),
    ),
    # -- input collection
    (
        "collect",
        lambda c: c.collect(
            CALL_ID,
            control_id="coll-1",
            digits={"max": 4, "terminators": "#"},
            speech={"end_silence_timeout": 2.0},
        ),
        cmd(
            "calling.collect",
            {
                "control_id": "coll-1",
                "digits": {"max": 4, "terminators": "#"},
                "speech": {"end_silence_timeout": 2.0},
            },
        ),
    ),
    (
        "collect_stop",
        lambda c: c.collect_stop(CALL_ID, control_id="coll-1"),
        cmd("calling.collect.stop", {"control_id": "coll-1"}),
    ),
    (
        "collect_start_input_timers",
        lambda c: c.collect_start_input_timers(CALL_ID, control_id="coll-1"),
        cmd("calling.collect.start_input_timers", {"control_id": "coll-1"}),
    ),
    # -- detection
    (
        "detect",
        lambda c: c.detect(
            CALL_ID,
            control_id="det-1",
            detect={"type": "machine", "params": {"initial_timeout": 4.5}},
        ),
        cmd(
            "calling.detect",
            {
                "control_id": "det-1",
                "detect": {"type": "machine", "params": {"initial_timeout": 4.5}},
            },
        ),
    ),
    (
        "detect_stop",
        lambda c: c.detect_stop(CALL_ID, control_id="det-1"),
        cmd("calling.detect.stop", {"control_id": "det-1"}),
    ),
    # -- tap & stream
    (
        "tap",
        lambda c: c.tap(
            CALL_ID,
            control_id="tap-1",
            tap={"type": "audio", "params": {"direction": "both"}},
            device={"type": "rtp", "params": {"addr": "192.168.1.1", "port": 1234}},
        ),
        cmd(
            "calling.tap",
            {
                "control_id": "tap-1",
                "tap": {"type": "audio", "params": {"direction": "both"}},
                "device": {"type": "rtp", "params": {"addr": "192.168.1.1", "port": 1234}},
            },
        ),
    ),
    (
        "tap_stop",
        lambda c: c.tap_stop(CALL_ID, control_id="tap-1"),
        cmd("calling.tap.stop", {"control_id": "tap-1"}),
    ),
    (
        "stream",
        lambda c: c.stream(
            CALL_ID, control_id="str-1", url="wss://example.com/audio-stream", codec="PCMU"
        ),
        cmd(
            "calling.stream",
            {"control_id": "str-1", "url": "wss://example.com/audio-stream", "codec": "PCMU"},
        ),
    ),
    (
        "stream_stop",
        lambda c: c.stream_stop(CALL_ID, control_id="str-1"),
        cmd("calling.stream.stop", {"control_id": "str-1"}),
    ),
    # -- denoise
    ("denoise", lambda c: c.denoise(CALL_ID), cmd("calling.denoise", {})),
    ("denoise_stop", lambda c: c.denoise_stop(CALL_ID), cmd("calling.denoise.stop", {})),
    # -- transcription
    (
        "transcribe",
        lambda c: c.transcribe(CALL_ID, control_id="tx-1", status_url="https://example.com/hook"),
        cmd("calling.transcribe", {"control_id": "tx-1", "status_url": "https://example.com/hook"}),
    ),
    (
        "transcribe_stop",
        lambda c: c.transcribe_stop(CALL_ID, control_id="tx-1"),
        cmd("calling.transcribe.stop", {"control_id": "tx-1"}),
    ),
    # -- AI
    (
        "ai_message",
        lambda c: c.ai_message(CALL_ID, role="user", message_text="Transfer me to billing"),
        cmd("calling.ai_message", {"role": "user", "message_text": "Transfer me to billing"}),
    ),
    (
        "ai_hold",
        lambda c: c.ai_hold(CALL_ID, timeout=60, prompt="Please wait while I transfer you."),
        cmd("calling.ai_hold", {"timeout": 60, "prompt": "Please wait while I transfer you."}),
    ),
    (
        "ai_unhold",
        lambda c: c.ai_unhold(CALL_ID, prompt="I'm back, how can I help?"),
        cmd("calling.ai_unhold", {"prompt": "I'm back, how can I help?"}),
    ),
    (
        "ai_stop",
        lambda c: c.ai_stop(CALL_ID, control_id="ai-1"),
        cmd("calling.ai.stop", {"control_id": "ai-1"}),
    ),
    # -- live transcribe & translate
    (
        "live_transcribe",
        lambda c: c.live_transcribe(CALL_ID, action="start", lang="en"),
        cmd("calling.live_transcribe", {"action": "start", "lang": "en"}),
    ),
    (
        "live_translate",
        lambda c: c.live_translate(CALL_ID, action="start", from_lang="en", to_lang="es"),
        cmd("calling.live_translate", {"action": "start", "from_lang": "en", "to_lang": "es"}),
    ),
    # -- fax
    (
        "send_fax_stop",
        lambda c: c.send_fax_stop(CALL_ID, control_id="fax-1"),
        cmd("calling.send_fax.stop", {"control_id": "fax-1"}),
    ),
    (
        "receive_fax_stop",
        lambda c: c.receive_fax_stop(CALL_ID, control_id="fax-1"),
        cmd("calling.receive_fax.stop", {"control_id": "fax-1"}),
    ),
    # -- SIP & custom events
    (
        "refer",
        lambda c: c.refer(CALL_ID, device={"to": "sip:agent@example.com"}),
        cmd("calling.refer", {"device": {"to": "sip:agent@example.com"}}),
    ),
    (
        "user_event",
        lambda c: c.user_event(CALL_ID, event={"type": "custom", "data": {"key": "value"}}),
        cmd("calling.user_event", {"event": {"type": "custom", "data": {"key": "value"}}}),
    ),
    # -- calling-api.md §8.2 / §9 #11: status-only update
    (
        "update_status_only",
        lambda c: c.update(id=CALL_ID, status="completed"),
        cmd("update", {"id": CALL_ID, "status": "completed"}, None),
    ),
    # -- calling-api.md §8.2: dial's typed keywords, None values dropped
    (
        "dial_sdk_keywords",
        lambda c: c.dial(
            from_="+15559876543",
            to="sip:alice@example.com",
            caller_id="+15559876543",
            fallback_url=None,
            status_url="https://example.com/status",
            status_events=["answered", "ended"],
            url_method="GET",
            swml={"version": "1.0.0", "sections": {"main": [{"play": {"url": "say:Hi"}}]}},
            codecs=["PCMU", "OPUS"],
        ),
        cmd(
            "dial",
            {
                "from": "+15559876543",
                "to": "sip:alice@example.com",
                "swml": {"version": "1.0.0", "sections": {"main": [{"play": {"url": "say:Hi"}}]}},
                "caller_id": "+15559876543",
                "status_url": "https://example.com/status",
                "status_events": ["answered", "ended"],
                "url_method": "GET",
                "codecs": ["PCMU", "OPUS"],
            },
            None,
        ),
    ),
]


def assert_request(server: Any, expected_body: dict[str, Any]) -> None:
    assert len(server.requests) == 1
    request = server.last
    assert request.method == "POST"
    assert request.path == "/api/calling/calls"
    assert request.headers["authorization"] == AUTH
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT
    assert uuid.UUID(request.headers["idempotency-key"]).version == 4
    assert request.json == expected_body
    # Key order too: command, [id], params - as documented.
    assert list(request.json) == list(expected_body)


def test_examples_cover_the_documented_methods() -> None:
    documented = {
        "dial", "update", "end", "transfer", "disconnect", "play", "play_pause", "play_resume",
        "play_stop", "play_volume", "record", "record_pause", "record_resume", "record_stop",
        "collect", "collect_stop", "collect_start_input_timers", "detect", "detect_stop", "tap",
        "tap_stop", "stream", "stream_stop", "denoise", "denoise_stop", "transcribe",
        "transcribe_stop", "ai_message", "ai_hold", "ai_unhold", "ai_stop", "live_transcribe",
        "live_translate", "send_fax_stop", "receive_fax_stop", "refer", "user_event",
    }  # fmt: skip
    assert len(documented) == 37
    assert documented <= {name for name, _, _ in EXAMPLES}


@pytest.mark.parametrize(("name", "call", "expected"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_sync_example(client: Any, server: Any, name: str, call: Any, expected: Any) -> None:
    result = call(client.calling)
    assert result == server.call_leg
    assert_request(server, expected)


@pytest.mark.parametrize(("name", "call", "expected"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
async def test_async_example(
    aclient: Any, server: Any, name: str, call: Any, expected: Any
) -> None:
    pending = call(aclient.calling)
    assert inspect.iscoroutine(pending)
    assert await pending == server.call_leg
    assert_request(server, expected)
