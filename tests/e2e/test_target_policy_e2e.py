"""`callplane serve --private-targets deny` refuses every outbound target that is not public.

Everything here is on 127.0.0.1, so every target a caller names is refused: the test checks that
each kind is refused (at validation or when connecting), that the refusal is a clear error
naming the policy, and that the target never saw a connection. The operator's own `--route`
SWML server stays reachable (a trusted origin), which is how the call gets answered at all.
Names that resolve to loopback come from /etc/hosts (the machine's host name), so no DNS query
leaves the machine.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from harness import LOOPBACK, Receiver, Server, swml, wait_until

FROM = "+15559876543"
POLICY = "--private-targets deny"


def _hosts_loopback_name() -> str | None:
    """A name /etc/hosts maps to loopback, other than the localhost names (refused by name)."""
    try:
        lines = Path("/etc/hosts").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and (fields[0].startswith("127.") or fields[0] == "::1"):
            for name in fields[1:]:
                lowered = name.lower()
                if "localhost" not in lowered and "loopback" not in lowered:
                    return name
    return None


LOOPBACK_NAME = _hosts_loopback_name()


@pytest.fixture
def trusted() -> Any:
    r = Receiver().start()
    r.serve_swml("/bob", swml({"answer": {}}, {"sleep": 20000}))
    yield r
    r.stop()


@pytest.fixture
def deny_server(make_server: Any, trusted: Receiver) -> Server:
    server: Server = make_server(
        routes={"bob": trusted.url("/bob")}, extra_args=["--private-targets", "deny"]
    )
    return server


def _events(server: Server, call_id: str) -> list[dict[str, Any]]:
    return list(server.get(f"/api/calling/calls/{call_id}/events").json()["data"])


def _wait_text(server: Server, call_id: str, text: str, timeout: float = 15) -> None:
    wait_until(
        lambda: text in json.dumps(_events(server, call_id)),
        timeout,
        f"{text!r} in the events of {call_id}",
    )


def test_literal_targets_are_refused_at_validation(deny_server: Server, receiver: Receiver) -> None:
    target = receiver.url("/x")
    for params in (
        {"to": "bob", "url": target},
        {"to": "bob", "swml": swml({"answer": {}}), "status_url": target},
        {"to": f"sip:alice@{LOOPBACK}:5070", "swml": swml({"answer": {}})},
        {"to": "sip:alice@2130706433", "swml": swml({"answer": {}})},
        {"to": "bob", "url": "http://169.254.169.254/latest/meta-data/"},
    ):
        response = deny_server.post({"command": "dial", "params": {"from": FROM, **params}})
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["code"] == "url_is_unsafe"
    assert receiver.hits == []


def test_swml_embedded_targets_are_refused_when_connecting(
    deny_server: Server, receiver: Receiver, trusted: Receiver
) -> None:
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind((LOOPBACK, 0))
    rtp.settimeout(0.5)
    script = swml(
        {"answer": {}},
        {"play": {"url": receiver.url("/a.wav")}},
        {"request": {"url": receiver.url("/request"), "method": "GET"}},
        {"tap": {"uri": f"ws://{LOOPBACK}:{receiver.port}/tap", "control_id": "ws-tap"}},
        {"tap": {"uri": f"rtp://{LOOPBACK}:{rtp.getsockname()[1]}", "control_id": "rtp-tap"}},
        {"execute": {"dest": receiver.url("/more-swml")}},
    )
    response = deny_server.post(
        {"command": "dial", "params": {"from": FROM, "to": "bob", "swml": script}}
    )
    assert response.status_code == 200, response.text
    call_id = response.json()["id"]
    _wait_text(deny_server, call_id, "calling.swml.error")
    events = _events(deny_server, call_id)
    text = json.dumps(events)
    play = [e for e in events if e.get("event_type") == "calling.call.play"]
    assert any(e["params"].get("state") == "error" for e in play), play
    taps = [e for e in events if e.get("event_type") == "calling.call.tap"]
    assert {e["params"]["control_id"] for e in taps} >= {"ws-tap", "rtp-tap"}
    assert all(e["params"].get("state") == "finished" for e in taps), taps
    [error] = [e for e in events if e.get("event_type") == "calling.swml.error"]
    assert POLICY in json.dumps(error) and "more-swml" in json.dumps(error)
    assert text.count(POLICY) >= 3  # play, taps, execute
    assert receiver.hits == []
    with pytest.raises(TimeoutError):
        rtp.recv(2048)
    rtp.close()
    log = deny_server.log()
    assert f"SWML request GET {receiver.url('/request')} failed" in log and POLICY in log
    assert [h.path for h in trusted.hits] == ["/bob"]  # the operator's route was reachable


@pytest.mark.skipif(LOOPBACK_NAME is None, reason="no /etc/hosts name for loopback")
def test_names_resolving_to_loopback_are_refused_when_connecting(
    deny_server: Server, receiver: Receiver
) -> None:
    def at(path: str) -> str:
        return f"http://{LOOPBACK_NAME}:{receiver.port}{path}"

    # The SWML URL, its fallback and the status webhook: valid names, refused when connecting.
    response = deny_server.post(
        {
            "command": "dial",
            "params": {
                "from": FROM,
                "to": "bob",
                "url": at("/swml"),
                "fallback_url": at("/fallback"),
                "status_url": at("/status"),
            },
        }
    )
    assert response.status_code == 200, response.text
    wait_until(
        lambda: (
            "cannot fetch its SWML" in deny_server.log()
            and "fallback also failed" in deny_server.log()
        ),
        15,
        "the SWML fetch and its fallback to be refused",
    )
    wait_until(
        lambda: f"to {at('/status')} given up" in deny_server.log(), 15, "the webhook given up"
    )

    # A dialled sip: URI whose name resolves to loopback: the call fails before any INVITE.
    sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sip.bind((LOOPBACK, 0))
    sip.settimeout(1)
    to = f"sip:alice@{LOOPBACK_NAME}:{sip.getsockname()[1]}"
    dial = {"from": FROM, "to": to, "swml": swml({"answer": {}})}
    response = deny_server.post({"command": "dial", "params": dial})
    assert response.status_code == 200, response.text
    assert deny_server.wait_status(response.json()["id"], "failed") == "failed"
    with pytest.raises(TimeoutError):
        sip.recv(4096)
    sip.close()

    # REST play, tap and transfer on an answered call.
    script = swml({"answer": {}}, {"sleep": 20000})
    response = deny_server.post(
        {"command": "dial", "params": {"from": FROM, "to": "bob", "swml": script}}
    )
    call_id = response.json()["id"]
    deny_server.wait_status(call_id, "answered")
    play = {"play": [{"type": "audio", "url": at("/a.wav")}], "control_id": "p1"}
    assert deny_server.post({"command": "calling.play", "id": call_id, "params": play}).is_success
    tap = {
        "control_id": "t1",
        "tap": {"type": "audio", "direction": "both"},
        "device": {"type": "ws", "uri": f"ws://{LOOPBACK_NAME}:{receiver.port}/tap"},
    }
    assert deny_server.post({"command": "calling.tap", "id": call_id, "params": tap}).is_success
    transfer = {"command": "calling.transfer", "id": call_id, "params": {"dest": at("/t")}}
    response = deny_server.post(transfer)
    assert response.status_code == 422 and POLICY in response.text
    _wait_text(deny_server, call_id, "t1")
    time.sleep(0.5)
    events = _events(deny_server, call_id)
    [play_error] = [
        e
        for e in events
        if e.get("event_type") == "calling.call.play" and e["params"].get("state") == "error"
    ]
    assert POLICY in json.dumps(play_error)
    assert any(
        e.get("event_type") == "calling.call.tap" and e["params"].get("state") == "finished"
        for e in events
    )
    assert receiver.hits == []
    deny_server.post({"command": "calling.end", "id": call_id, "params": {}})


def test_allow_is_the_default_and_reaches_loopback(
    make_server: Any, trusted: Receiver, receiver: Receiver
) -> None:
    server: Server = make_server(routes={"bob": trusted.url("/bob")})
    script = swml(
        {"answer": {}},
        {"request": {"url": receiver.url("/request"), "method": "GET"}},
        {"hangup": {}},
    )
    params = {"from": FROM, "to": "bob", "swml": script, "status_url": receiver.url("/status")}
    assert server.post({"command": "dial", "params": params}).status_code == 200
    wait_until(
        lambda: {"/request", "/status"} <= {h.path for h in receiver.hits},
        15,
        "the SWML request and the status webhook to reach loopback",
    )
    assert "private targets allow" in server.log()
