"""The official `signalwire-sdk` client, pointed at callplane with SIGNALWIRE_SPACE, drives a real
call to sipp: code written for the hosted API runs unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import requires_sipp
from harness import Receiver, Server, Sipp

pytestmark = [requires_sipp]

signalwire_rest = pytest.importorskip("signalwire.rest")


def test_signalwire_sdk_dials_plays_and_ends(
    server: Server, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGNALWIRE_PROJECT_ID", server.project)
    monkeypatch.setenv("SIGNALWIRE_API_TOKEN", server.token)
    monkeypatch.setenv("SIGNALWIRE_SPACE", server.host)
    sipp = Sipp(["-sn", "uas", "-m", "1"]).start(tmp_path)
    try:
        client = signalwire_rest.RestClient()
        leg = client.calling.dial(
            from_="+15559876543",
            to=f"sip:bob@{sipp.uri_host}",
            swml={"version": "1.0.0", "sections": {"main": [{"sleep": -1}]}},
            status_url=receiver.url("/status"),
            status_events=["ringing", "answered", "ended"],
        )
        assert leg["status"] == "queued"
        receiver.wait_call_state("/status", leg["id"], "answered")
        played = client.calling.play(
            leg["id"],
            control_id="sdk-1",
            play=[{"type": "ringtone", "params": {"name": "uk", "duration": 1.0}}],
            status_url=receiver.url("/play"),
        )
        assert played["id"] == leg["id"] and played["status"] == "answered"
        client.calling.play_volume(leg["id"], control_id="sdk-1", volume=-3.0)
        with pytest.raises(signalwire_rest.SignalWireRestError) as refused:
            client.calling.play_volume(leg["id"], control_id="sdk-1", volume=99.0)
        assert refused.value.status_code == 422
        with pytest.raises(signalwire_rest.SignalWireRestError) as no_agent:
            client.calling.ai_message(leg["id"], role="system", message_text="Be brief.")
        assert no_agent.value.status_code == 422
        assert "no AI agent runs" in str(no_agent.value.body)
        client.calling.end(leg["id"], reason="hangup")
        receiver.wait_call_state("/status", leg["id"], "ended")
        assert receiver.call_states("/status", leg["id"]) == ["ringing", "answered", "ended"]
        assert sipp.wait() == 0
    finally:
        sipp.stop()
