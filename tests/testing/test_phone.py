"""The virtual phone against a real server, without the plugin: tones, silence, rejecting a
call, and what a failed call reports."""

from __future__ import annotations

from collections.abc import Iterator

import phonekit
import pytest

from callplane.testing.phone import CallFailed, Phone, PhoneError, PhoneRuntime
from callplane.testing.server import CallplaneServer

pytestmark = pytest.mark.e2e
server = phonekit.server  # this module's server (a fixture)


@pytest.fixture(scope="module")
def runtime() -> Iterator[PhoneRuntime]:
    running = PhoneRuntime()
    yield running
    running.close()


@pytest.fixture
def phone(runtime: PhoneRuntime, server: CallplaneServer) -> Iterator[Phone]:
    made = Phone(runtime, server_sip=server.sip)
    yield made
    made.close()


def test_tone_then_silence(server: CallplaneServer, phone: Phone) -> None:
    server.add_route("tones", {"version": "1.0.0", "sections": {"main": [
        {"answer": {}},
        {"play": {"urls": ["ring:1:uk", "silence:3", "ring:5:us"]}},
    ]}})  # fmt: skip
    phone.call("tones")
    phone.expect_tone(400, timeout=3)  # the UK ringback is 400+450 Hz
    with pytest.raises(PhoneError, match="expected a 1000 Hz tone"):
        phone.expect_tone(1000, timeout=0.5)
    phone.expect_silence(1.5, timeout=5)
    phone.expect_tone(440, timeout=5)  # the US ringback is 440+480 Hz
    phone.hangup()
    assert not phone.in_call
    assert phone.transcript[-1].text == "[hangup]"


def test_silence_that_never_comes_fails(server: CallplaneServer, phone: Phone) -> None:
    server.add_route("ringing", {"version": "1.0.0", "sections": {"main": [
        {"answer": {}}, {"play": {"url": "ring:10:us"}},
    ]}})  # fmt: skip
    phone.call("ringing")
    with pytest.raises(PhoneError) as failed:
        phone.expect_silence(1, timeout=2)
    assert "expected 1 s of silence within 2 s" in str(failed.value)
    assert "recording: " in str(failed.value)


def test_reject_and_no_route(server: CallplaneServer, phone: Phone) -> None:
    leg = server.client.calling.dial(from_="+15550003333", to=phone.uri, swml={
        "version": "1.0.0", "sections": {"main": [{"hangup": {}}]}})  # fmt: skip
    phone.reject(486)
    for _ in range(100):
        status = server.call(leg["id"])["status"]
        if status not in ("queued", "created", "ringing", "initiated"):
            break
        phone.wait(0.05)
    assert status == "ended"
    assert any(e.get("params", {}).get("call_state") == "ended" for e in server.events(leg["id"]))
    with pytest.raises(CallFailed) as failed:
        phone.call("no-such-route")
    assert failed.value.code == 404
