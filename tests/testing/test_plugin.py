"""The pytest plugin the way a user runs it: pytester runs test files that use only the public
fixtures (callplane_server, phone, webhooks) against a real `callplane serve`."""

from __future__ import annotations

import os
import shutil
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import callplane

pytest_plugins = ["pytester"]


def _load_plugin() -> list[str]:
    """An installed callplane registers the plugin through its pytest11 entry point, and naming
    it again with -p registers it twice; a source tree whose metadata predates the entry point
    needs the -p."""
    installed = any(ep.value == "callplane.testing.plugin" for ep in entry_points(group="pytest11"))
    return [] if installed else ["-p", "callplane.testing.plugin"]


pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("flite") is None, reason="the IVR speaks with flite"),
]

USER_TESTS = """
import time

IVR = {"version": "1.0.0", "sections": {"main": [
    {"answer": {}},
    {"prompt": {"play": "say:Welcome. Press one for sales, two for support.", "max_digits": 1}},
    {"switch": {"variable": "prompt_value", "case": {
        "1": [{"play": {"url": "say:Connecting you to sales."}}],
        "2": [{"play": {"url": "say:Connecting you to support."}}]},
        "default": [{"play": {"url": "say:Sorry, I did not get that."}}]}},
    {"hangup": {}},
]}}
WRONG_MENU = {"version": "1.0.0", "sections": {"main": [
    {"answer": {}},
    {"play": {"url": "say:Our offices are closed. Please call again tomorrow."}},
    {"hangup": {}},
]}}


def test_ivr(callplane_server, phone):
    callplane_server.add_route("ivr", IVR)
    started = time.monotonic()
    phone.call("ivr")
    phone.expect_said("press one for sales", timeout=8)
    phone.press("1")
    phone.expect_said("sales", timeout=8)
    phone.expect_hangup(timeout=10)
    elapsed = time.monotonic() - started
    print(f"IVR TEST TOOK {elapsed:.2f} s")
    assert elapsed < 10
    assert phone.recording().stat().st_size > 44
    [call] = [c for c in callplane_server.calls() if c["to"] == "ivr"]
    assert call["status"] == "ended"
    types = [e.get("event_type") for e in callplane_server.events(call["id"])]
    assert "calling.call.state" in types


def test_wrong_menu(callplane_server, phone):
    callplane_server.add_route("closed", WRONG_MENU)
    phone.call("closed")
    phone.expect_said("press one for sales", timeout=6)


def test_rest_flow(callplane_server, phone, webhooks):
    client = callplane_server.client
    leg = client.calling.dial(
        from_="sip:app@127.0.0.1", to=phone.uri,
        swml={"version": "1.0.0", "sections": {"main": [{"sleep": -1}]}},
    )
    phone.answer(timeout=10)
    client.calling.play(leg["id"], play=[
        {"type": "tts", "params": {"text": "Please enter your account number."}}])
    client.calling.collect(
        leg["id"], control_id="acct", digits={"max": 4, "terminators": "#"},
        status_url=webhooks.url,
    )
    phone.expect_said("enter your account number", timeout=8)
    phone.press("42#")
    hook = webhooks.wait_for("calling.call.collect", lambda h: "result" in h.params, timeout=10)
    assert hook.params["result"]["params"]["digits"] == "42"
    assert hook.verify(callplane_server.signing_key)
    phone.hangup()


def test_inbound_flow_both_phones(callplane_server, phone):
    callee = phone("callee")
    callplane_server.add_route("desk", {"version": "1.0.0", "sections": {"main": [
        {"connect": {"to": callee.uri}}]}})
    phone.call("desk")
    callee.answer(timeout=10)
    callee.say("Hello, this is the front desk.")
    phone.expect_said("this is the front desk", timeout=8)
    phone.press("5", inband=True)
    phone.hangup()
    callee.expect_hangup(timeout=10)
"""


def test_the_plugin_as_a_user_runs_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The subprocess runs in another directory: it must import this callplane, not another.
    source = str(Path(callplane.__file__).parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([source, os.environ.get("PYTHONPATH", "")]))
    pytester.makepyfile(test_voice_app=USER_TESTS)
    result = pytester.runpytest_subprocess(*_load_plugin(), "-s", "-q")
    result.assert_outcomes(passed=3, failed=1)
    text = result.stdout.str()
    # The wrong menu fails, and its error shows what was heard and where the recording is.
    assert "test_wrong_menu" in text
    assert "expected to hear 'press one for sales'" in text
    assert "transcript so far:" in text
    assert "recording: " in text and "-call1.wav" in text
    assert "IVR TEST TOOK" in text


def test_the_entry_point_is_registered() -> None:
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert '[project.entry-points.pytest11]\ncallplane = "callplane.testing.plugin"' in pyproject
