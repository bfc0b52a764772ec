"""`callplane call` and `callplane calls` as a user runs them, against a real server."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import phonekit
import pytest
from phonekit import IVR, cli, requires_flite

from callplane.testing.server import CallplaneServer

pytestmark = pytest.mark.e2e
server = phonekit.server  # this module's server (a fixture)


@requires_flite
def test_call_expect_exits_0_when_heard_and_1_when_not(
    server: CallplaneServer, tmp_path: Path
) -> None:
    server.add_route("menu", IVR)
    wav = tmp_path / "call.wav"
    heard = cli(
        "call", "menu", "--sip", server.sip,
        "--expect", "press one for sales", "--press", "1", "--expect", "sales",
        "--record", str(wav),
    )  # fmt: skip
    assert heard.returncode == 0, heard.stdout + heard.stderr
    assert "heard 'press one for sales'" in heard.stdout
    assert "[DTMF 1]" in heard.stdout  # the live transcript
    with wave.open(str(wav)) as recording:
        assert recording.getnchannels() == 2
        assert recording.getnframes() > 8000

    missed = cli(
        "call", "menu", "--sip", server.sip, "--expect", "our offices are closed",
        "--timeout", "4",
    )  # fmt: skip
    assert missed.returncode == 1
    assert "expected to hear 'our offices are closed'" in missed.stderr
    assert "transcript so far:" in missed.stderr


def test_call_to_an_unknown_route_fails_cleanly(server: CallplaneServer) -> None:
    result = cli("call", "nobody", "--sip", server.sip, "--expect", "hello")
    assert result.returncode == 1
    assert "404" in result.stderr
    assert "Traceback" not in result.stderr


def test_calls_list_show_events(server: CallplaneServer) -> None:
    server.add_route("hangs-up", {"version": "1.0.0", "sections": {"main": [{"hangup": {}}]}})
    leg = server.client.calling.dial(from_="+15550001111", to="hangs-up", swml={
        "version": "1.0.0", "sections": {"main": [{"hangup": {}}]}})  # fmt: skip
    env = {"CALLPLANE_PROJECT": server.project, "CALLPLANE_TOKEN": server.token}
    url = ["--url", server.url]
    listing = cli("calls", "list", "--json", *url, env=env)
    assert listing.returncode == 0, listing.stderr
    ids = [c["id"] for c in json.loads(listing.stdout)]
    assert leg["id"] in ids
    table = cli("calls", "list", *url, env=env)
    assert table.stdout.splitlines()[0].split()[:3] == ["ID", "STATUS", "DIRECTION"]
    assert leg["id"] in table.stdout
    shown = cli("calls", "show", leg["id"], "--json", *url, env=env)
    assert json.loads(shown.stdout)["id"] == leg["id"]
    events = cli("calls", "events", leg["id"], "--json", *url, env=env)
    assert any(e["event_type"] == "calling.call.state" for e in json.loads(events.stdout))
    wrong = cli("calls", "show", leg["id"], *url, env={**env, "CALLPLANE_TOKEN": "nope"})
    assert wrong.returncode == 1 and "401" in wrong.stderr
