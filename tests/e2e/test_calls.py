"""Real calls: `callplane serve` as a subprocess, sipp as the far end, real webhooks."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from conftest import requires_sipp
from harness import SCENARIOS, Receiver, Server, Sipp, swml, wait_until

import callplane
from callplane import RestClient

pytestmark = [requires_sipp]

ALL_STATES = ["created", "ringing", "answered", "ended"]


LONG_CALL = swml({"play": {"url": "ring:us"}})  # rings back until something ends the call


def client_for(server: Server) -> RestClient:
    return RestClient(server.project, server.token, server.host)


def test_dial_sipp_answering_reports_states_in_order(
    server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    sipp = Sipp(["-sn", "uas", "-m", "1"]).start(tmp_path)
    try:
        with client_for(server) as client:
            leg = client.calling.dial(
                from_="+15559876543",
                to=f"sip:bob@{sipp.uri_host}",
                swml=swml({"play": {"url": "silence:1"}}),
                status_url=receiver.url("/status"),
                status_events=ALL_STATES,
            )
        assert leg["status"] == "queued"
        assert leg["direction"] == "outbound-api"
        assert leg["type"] == "relay_sip_call"
        receiver.wait_call_state("/status", leg["id"], "ended")
        assert receiver.call_states("/status", leg["id"]) == ALL_STATES
        ended = receiver.events("/status")[-1]
        assert ended["params"]["end_reason"] == "hangup"
        assert ended["project_id"] == server.project
        assert "X-SignalWire-Signature".lower() in {
            k.lower() for h in receiver.hits for k in h.headers
        }
        assert sipp.wait() == 0  # sipp saw INVITE, ACK and our BYE
        final = server.get(f"/api/calling/calls/{leg['id']}").json()
        assert final["status"] == "ended"
        assert final["duration_ms"] >= 900
        types = [
            e["event_type"]
            for e in server.get(f"/api/calling/calls/{leg['id']}/events").json()["data"]
        ]
        assert types.count("calling.call.play") == 2  # playing, finished
    finally:
        sipp.stop()


def test_default_subscription_is_ended_only(
    server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    sipp = Sipp(["-sn", "uas", "-m", "1"]).start(tmp_path)
    try:
        leg = client_for(server).calling.dial(
            from_="+15559876543",
            to=f"sip:bob@{sipp.uri_host}",
            swml=swml({"hangup": {}}),
            status_url=receiver.url("/status"),
        )
        receiver.wait_call_state("/status", leg["id"], "ended")
        time.sleep(0.3)
        assert receiver.call_states("/status", leg["id"]) == ["ended"]
    finally:
        sipp.stop()


def test_busy_callee(server: Server, receiver: Receiver, tmp_path: Path) -> None:
    sipp = Sipp(["-sf", str(SCENARIOS / "busy.xml"), "-m", "1"]).start(tmp_path)
    try:
        leg = client_for(server).calling.dial(
            from_="+15559876543",
            to=f"sip:bob@{sipp.uri_host}",
            swml=LONG_CALL,
            status_url=receiver.url("/status"),
            status_events=ALL_STATES,
        )
        receiver.wait_call_state("/status", leg["id"], "ended")
        assert receiver.call_states("/status", leg["id"]) == ["created", "ended"]
        assert receiver.events("/status")[-1]["params"]["end_reason"] == "busy"
        assert server.call_status(leg["id"]) == "ended"
        assert sipp.wait() == 0
    finally:
        sipp.stop()


def test_no_answer_times_out_with_cancel(
    server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    sipp = Sipp(["-sf", str(SCENARIOS / "ring_forever.xml"), "-m", "1"]).start(tmp_path)
    try:
        started = time.monotonic()
        leg = client_for(server).calling.dial(
            from_="+15559876543",
            to=f"sip:bob@{sipp.uri_host}",
            swml=LONG_CALL,
            status_url=receiver.url("/status"),
            status_events=ALL_STATES,
            timeout=2,
        )
        receiver.wait_call_state("/status", leg["id"], "ended")
        elapsed = time.monotonic() - started
        assert 1.8 <= elapsed < 6
        assert receiver.call_states("/status", leg["id"]) == ["created", "ringing", "ended"]
        assert receiver.events("/status")[-1]["params"]["end_reason"] == "noAnswer"
        assert sipp.wait() == 0  # sipp got our CANCEL and the ACK for its 487
    finally:
        sipp.stop()


def test_far_end_hangs_up(server: Server, receiver: Receiver, tmp_path: Path) -> None:
    sipp = Sipp(["-sf", str(SCENARIOS / "answer_then_bye.xml"), "-m", "1", "-d", "800"]).start(
        tmp_path
    )
    try:
        leg = client_for(server).calling.dial(
            from_="+15559876543",
            to=f"sip:bob@{sipp.uri_host}",
            swml=LONG_CALL,
            status_url=receiver.url("/status"),
            status_events=ALL_STATES,
        )
        receiver.wait_call_state("/status", leg["id"], "ended")
        assert receiver.call_states("/status", leg["id"]) == ALL_STATES
        assert server.call_status(leg["id"]) == "ended"
        assert sipp.wait() == 0
    finally:
        sipp.stop()


def test_update_redirects_to_new_swml_mid_call(
    server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    sipp = Sipp(["-sn", "uas", "-m", "1"]).start(tmp_path)
    try:
        client = client_for(server)
        leg = client.calling.dial(
            from_="+15559876543",
            to=f"sip:bob@{sipp.uri_host}",
            url=receiver.serve_swml("/first", LONG_CALL),
            status_url=receiver.url("/status"),
            status_events=ALL_STATES,
        )
        receiver.wait_call_state("/status", leg["id"], "answered")
        first = wait_until(
            lambda: next((h for h in receiver.hits if h.path == "/first"), None), 5, "SWML fetch"
        )
        assert first.method == "POST"
        assert first.body["call"]["call_id"] == leg["id"]
        assert set(first.body) == {"call", "vars", "envs", "params"}
        second = receiver.serve_swml(
            "/second", swml({"set": {"greeting": "bye"}}, {"play": {"url": "silence:0.5"}})
        )
        client.calling.update(id=leg["id"], url=second)
        receiver.wait_call_state("/status", leg["id"], "ended")
        assert [h.path for h in receiver.hits if h.path in ("/first", "/second")] == [
            "/first",
            "/second",
        ]
        assert server.get(f"/api/calling/calls/{leg['id']}").json()["url"] == second
    finally:
        sipp.stop()


def test_update_completed_and_canceled_follow_the_state_rules(
    server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    ringing = Sipp(["-sf", str(SCENARIOS / "ring_forever.xml"), "-m", "1"]).start(tmp_path)
    answering = Sipp(["-sn", "uas", "-m", "1"]).start(tmp_path)
    try:
        client = client_for(server)
        a = client.calling.dial(
            from_="+15550000001",
            to=f"sip:ring@{ringing.uri_host}",
            swml=LONG_CALL,
            status_url=receiver.url("/status"),
            status_events=ALL_STATES,
        )
        receiver.wait_call_state("/status", a["id"], "ringing")
        with pytest.raises(callplane.RestError) as refused:
            client.calling.update(id=a["id"], status="completed")
        assert refused.value.status_code == 422
        client.calling.update(id=a["id"], status="canceled")
        assert server.wait_status(a["id"], "canceled") == "canceled"
        assert ringing.wait() == 0

        b = client.calling.dial(
            from_="+15550000001",
            to=f"sip:answer@{answering.uri_host}",
            swml=LONG_CALL,
            status_url=receiver.url("/status"),
            status_events=ALL_STATES,
        )
        receiver.wait_call_state("/status", b["id"], "answered")
        with pytest.raises(callplane.RestError) as refused:
            client.calling.update(id=b["id"], status="canceled")
        assert refused.value.status_code == 422
        assert refused.value.errors[0]["code"] == "cannot_cancel_in_progress"
        client.calling.update(id=b["id"], status="completed")
        assert server.wait_status(b["id"], "completed") == "completed"
        assert answering.wait() == 0
        with pytest.raises(callplane.RestError) as refused:
            client.calling.update(id=b["id"], status="completed")
        assert refused.value.errors[0]["code"] == "cannot_update_completed"
    finally:
        ringing.stop()
        answering.stop()


def test_calling_end_hangs_up(server: Server, receiver: Receiver, tmp_path: Path) -> None:
    sipp = Sipp(["-sn", "uas", "-m", "1"]).start(tmp_path)
    try:
        client = client_for(server)
        leg = client.calling.dial(
            from_="+15559876543",
            to=f"sip:bob@{sipp.uri_host}",
            swml=LONG_CALL,
            status_url=receiver.url("/status"),
            status_events=ALL_STATES,
        )
        receiver.wait_call_state("/status", leg["id"], "answered")
        result = client.calling.end(leg["id"], reason="hangup")
        assert result["id"] == leg["id"]
        receiver.wait_call_state("/status", leg["id"], "ended")
        assert sipp.wait() == 0
        with pytest.raises(callplane.RestError) as gone:
            client.calling.end(leg["id"])
        assert gone.value.status_code == 422
        with pytest.raises(callplane.RestError) as unknown:
            client.calling.end("00000000-0000-4000-8000-000000000000")
        assert unknown.value.status_code == 404
    finally:
        sipp.stop()


def test_dial_to_local_route_makes_two_legs(make_server: Any, receiver: Receiver) -> None:
    inbound_swml = receiver.serve_swml(
        "/inbound", swml({"answer": {}}, {"play": {"url": "silence:1"}}, {"hangup": {}})
    )
    server: Server = make_server(routes={"+15551234567": inbound_swml})
    client = client_for(server)
    leg = client.calling.dial(
        from_="+15559876543",
        to="+15551234567",
        swml=LONG_CALL,
        status_url=receiver.url("/status"),
        status_events=ALL_STATES,
    )
    assert leg["type"] == "relay_pstn_call"
    receiver.wait_call_state("/status", leg["id"], "ended")
    assert receiver.call_states("/status", leg["id"]) == ALL_STATES
    fetch = next(h for h in receiver.hits if h.path == "/inbound")
    inbound_id = fetch.body["call"]["call_id"]
    assert fetch.body["call"]["direction"] == "inbound"
    assert fetch.body["call"]["to"] == "+15551234567"
    inbound = server.get(f"/api/calling/calls/{inbound_id}").json()
    assert inbound["direction"] == "inbound"
    assert wait_until(lambda: server.call_status(inbound_id) == "ended", 5, "inbound leg ended")
    states = [
        e["params"]["call_state"]
        for e in server.get(f"/api/calling/calls/{inbound_id}/events").json()["data"]
        if e["event_type"] == "calling.call.state"
    ]
    assert states == ["created", "ringing", "answered", "ending", "ended"]


def test_inbound_call_from_sipp_runs_the_route(
    make_server: Any, receiver: Receiver, tmp_path: Path
) -> None:
    url = receiver.serve_swml("/route", swml({"answer": {}}, {"play": {"url": "silence:5"}}))
    server: Server = make_server(routes={"alice": url})
    sipp = Sipp(
        ["-sn", "uac", "-s", "alice", f"127.0.0.1:{server.sip_port}", "-m", "1", "-d", "500"]
    ).start(tmp_path)
    try:
        assert sipp.wait() == 0  # INVITE answered with SDP, ACK, BYE after 0.5 s, 200
        fetch = wait_until(
            lambda: next((h for h in receiver.hits if h.path == "/route"), None), 5, "fetch"
        )
        call_id = fetch.body["call"]["call_id"]
        assert server.wait_status(call_id, "ended") == "ended"
        leg = server.get(f"/api/calling/calls/{call_id}").json()
        assert leg["direction"] == "inbound" and leg["to"] == "alice"
    finally:
        sipp.stop()


def test_unknown_route_is_rejected(server: Server, tmp_path: Path) -> None:
    sipp = Sipp(["-sn", "uac", "-s", "nobody", f"127.0.0.1:{server.sip_port}", "-m", "1"]).start(
        tmp_path
    )
    try:
        assert sipp.wait() == 1  # the call failed: 404
    finally:
        sipp.stop()
