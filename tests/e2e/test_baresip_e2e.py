"""baresip, a real SIP user agent, at the far end: its DTMF (`sndcode`) is collected exactly, and
what callplane plays reaches its ears."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from harness import Baresip, Receiver, Server, baresip_available, wait_until

from callplane import RestClient

pytestmark = pytest.mark.skipif(not baresip_available(), reason="baresip is not installed")

HANG_ON = {"version": "1.0.0", "sections": {"main": [{"sleep": -1}]}}


@pytest.fixture
def baresip(tmp_path: Path) -> Baresip:
    # baresip hangs up when its source WAV ends: give it a long one.
    source = tmp_path / "silence.wav"
    soundfile.write(source, np.zeros(8000 * 60, dtype=np.int16), 8000, subtype="PCM_16")
    peer = Baresip(tmp_path / "baresip").start(source)
    yield peer
    peer.stop()


def test_baresip_sndcode_digits_are_collected(
    server: Server, receiver: Receiver, baresip: Baresip
) -> None:
    client = RestClient(server.project, server.token, server.host)
    leg = client.calling.dial(from_="+15559876543", to=baresip.uri, swml=HANG_ON)
    server.wait_status(leg["id"], "answered")
    client.calling.collect(
        leg["id"],
        control_id="pin",
        digits={"max": 6, "terminators": "#", "digit_timeout": 5},
        start_input_timers=True,
        initial_timeout=10,
        status_url=receiver.url("/collect"),
    )
    time.sleep(0.3)
    baresip.command("sndcode", "4071#")
    result = wait_until(lambda: receiver.events("/collect"), 15, "the collect result")[0]
    assert result["params"]["result"] == {
        "type": "digit",
        "params": {"digits": "4071", "terminator": "#"},
    }
    client.calling.end(leg["id"])
    server.wait_status(leg["id"], "ended")


def test_callplane_send_digits_reach_baresip(server: Server, baresip: Baresip) -> None:
    script = {
        "version": "1.0.0",
        "sections": {"main": [{"sleep": 500}, {"send_digits": {"digits": "159#"}}, {"sleep": -1}]},
    }
    client = RestClient(server.project, server.token, server.host)
    leg = client.calling.dial(from_="+15559876543", to=baresip.uri, swml=script)
    server.wait_status(leg["id"], "answered")

    def keys() -> str:
        return "".join(
            str(e.get("param", "")) for e in baresip.events() if e.get("type") == "CALL_DTMF_START"
        )

    wait_until(
        lambda: len(keys()) >= 4, 10, f"baresip to hear 4 digits (events: {baresip.events()})"
    )
    assert keys() == "159#"
    client.calling.end(leg["id"])
