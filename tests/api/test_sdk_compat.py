"""The public Python SDK (signalwire-sdk, a test dependency) driven against this server.

Each call is an example from ../shared/reference/client-calling.txt, run verbatim where the SDK's
signature allows it; keywords the SDK has no parameter for go through ``extras`` — which produces
the same wire body the client document shows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from api_harness import CALL_ID, PROJECT, TOKEN, RecordingEngine, ServerThread

rest = pytest.importorskip("signalwire.rest")

Example = Callable[[Any], Any]

EXAMPLES: list[tuple[str, Example]] = [
    (
        "dial",
        lambda c: c.dial(
            from_="+15559876543", to="+15551234567", url="https://example.com/call-handler"
        ),
    ),
    ("update", lambda c: c.update(id=CALL_ID, url="https://example.com/new-handler")),
    ("calling.end", lambda c: c.end(CALL_ID, reason="hangup")),
    ("calling.transfer", lambda c: c.transfer(CALL_ID, dest="sip:agent@example.com")),
    ("calling.disconnect", lambda c: c.disconnect(CALL_ID)),
    (
        "calling.play",
        lambda c: c.play(CALL_ID, play=[{"type": "tts", "text": "Hello!"}], volume=5.0),
    ),
    ("calling.play.pause", lambda c: c.play_pause(CALL_ID, control_id="ctrl-1")),
    ("calling.play.resume", lambda c: c.play_resume(CALL_ID, control_id="ctrl-1")),
    ("calling.play.stop", lambda c: c.play_stop(CALL_ID, control_id="ctrl-1")),
    ("calling.play.volume", lambda c: c.play_volume(CALL_ID, control_id="ctrl-1", volume=-3.0)),
    (
        "calling.record",
        lambda c: c.record(
            CALL_ID, control_id="rec-1", audio={"beep": True, "format": "wav", "stereo": True}
        ),
    ),
    ("calling.record.pause", lambda c: c.record_pause(CALL_ID, control_id="rec-1")),
    ("calling.record.resume", lambda c: c.record_resume(CALL_ID, control_id="rec-1")),
    ("calling.record.stop", lambda c: c.record_stop(CALL_ID, control_id="rec-1")),
    (
        "calling.collect",
        lambda c: c.collect(
            CALL_ID,
            control_id="coll-1",
            digits={"max": 4, "terminators": "#"},
            speech={"end_silence_timeout": 2.0},
        ),
    ),
    ("calling.collect.stop", lambda c: c.collect_stop(CALL_ID, control_id="coll-1")),
    (
        "calling.collect.start_input_timers",
        lambda c: c.collect_start_input_timers(CALL_ID, control_id="coll-1"),
    ),
    (
        "calling.detect",
        lambda c: c.detect(
            CALL_ID,
            control_id="det-1",
            detect={"type": "machine", "params": {"initial_timeout": 4.5}},
        ),
    ),
    ("calling.detect.stop", lambda c: c.detect_stop(CALL_ID, control_id="det-1")),
    (
        "calling.tap",
        lambda c: c.tap(
            CALL_ID,
            control_id="tap-1",
            tap={"type": "audio", "params": {"direction": "both"}},
            device={"type": "rtp", "params": {"addr": "192.168.1.1", "port": 1234}},
        ),
    ),
    ("calling.tap.stop", lambda c: c.tap_stop(CALL_ID, control_id="tap-1")),
    (
        "calling.stream",
        lambda c: c.stream(
            CALL_ID, control_id="str-1", url="wss://example.com/audio-stream", codec="PCMU"
        ),
    ),
    ("calling.stream.stop", lambda c: c.stream_stop(CALL_ID, control_id="str-1")),
    ("calling.denoise", lambda c: c.denoise(CALL_ID)),
    ("calling.denoise.stop", lambda c: c.denoise_stop(CALL_ID)),
    (
        "calling.transcribe",
        lambda c: c.transcribe(CALL_ID, control_id="tx-1", status_url="https://example.com/hook"),
    ),
    ("calling.transcribe.stop", lambda c: c.transcribe_stop(CALL_ID, control_id="tx-1")),
    (
        "calling.ai_message",
        lambda c: c.ai_message(CALL_ID, role="user", message_text="Transfer me to billing"),
    ),
    (
        "calling.ai_hold",
        lambda c: c.ai_hold(CALL_ID, timeout=60, prompt="Please wait while I transfer you."),
    ),
    ("calling.ai_unhold", lambda c: c.ai_unhold(CALL_ID, prompt="I'm back, how can I help?")),
    ("calling.ai.stop", lambda c: c.ai_stop(CALL_ID, control_id="ai-1")),
    (
        "calling.live_transcribe",
        lambda c: c.live_transcribe(CALL_ID, action="start", extras={"lang": "en"}),
    ),
    (
        "calling.live_translate",
        lambda c: c.live_translate(
            CALL_ID, action="start", extras={"from_lang": "en", "to_lang": "es"}
        ),
    ),
    ("calling.send_fax.stop", lambda c: c.send_fax_stop(CALL_ID, control_id="fax-1")),
    ("calling.receive_fax.stop", lambda c: c.receive_fax_stop(CALL_ID, control_id="fax-1")),
    ("calling.refer", lambda c: c.refer(CALL_ID, device={"to": "sip:agent@example.com"})),
    (
        "calling.user_event",
        lambda c: c.user_event(CALL_ID, event={"type": "custom", "data": {"key": "value"}}),
    ),
]


@pytest.fixture(scope="module")
def sdk_calling(server: ServerThread) -> Any:
    host = server.base_url.removeprefix("http://")  # the SDK picks http:// for 127.0.0.1:port
    return rest.RestClient(project=PROJECT, token=TOKEN, host=host).calling


@pytest.mark.parametrize(("command", "example"), EXAMPLES, ids=[c for c, _ in EXAMPLES])
def test_sdk_example_round_trip(
    sdk_calling: Any, engine: RecordingEngine, command: str, example: Example
) -> None:
    engine.reset()
    result = example(sdk_calling)
    assert result["id"] == CALL_ID
    assert [e.command for e in engine.executed] == [command]


def test_sdk_sees_422_as_its_error(sdk_calling: Any, engine: RecordingEngine) -> None:
    engine.reset()
    with pytest.raises(rest.SignalWireRestError) as caught:
        sdk_calling.play_volume(CALL_ID, control_id="c", volume=99)
    assert caught.value.status_code == 422
    assert caught.value.body["errors"][0]["attribute"] == "volume"
    assert engine.executed == []
