"""Nothing accepted is lost: webhooks survive a receiver outage and a server restart mid-call,
and SIGTERM ends live calls with a BYE."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import httpx
import soundfile
from conftest import requires_sipp
from harness import Receiver, Server, Sipp, free_port, wait_until

from callplane import RestClient
from callplane.webhooks import verify_signature

pytestmark = [requires_sipp]

ALL_STATES = ["created", "ringing", "answered", "ended"]
LONG_CALL = {"version": "1.0.0", "sections": {"main": [{"play": {"url": "ring:us"}}]}}


def test_webhooks_survive_a_receiver_that_is_down_for_10_seconds(
    server: Server, tmp_path: Path
) -> None:
    port = free_port()
    receiver = Receiver(port=port)
    sipp = Sipp(["-sn", "uas", "-m", "1"]).start(tmp_path)
    try:
        leg = RestClient(server.project, server.token, server.host).calling.dial(
            from_="+15559876543",
            to=f"sip:bob@{sipp.uri_host}",
            swml={"version": "1.0.0", "sections": {"main": [{"play": {"url": "silence:1"}}]}},
            status_url=receiver.url("/status"),
            status_events=ALL_STATES,
        )
        outage_started = time.monotonic()
        assert server.wait_status(leg["id"], "ended") == "ended"
        time.sleep(max(0.0, 10 - (time.monotonic() - outage_started)))
        receiver.start()  # up again 10 s after the first event was accepted
        receiver.wait_call_state("/status", leg["id"], "ended", timeout=75)
        assert receiver.call_states("/status", leg["id"]) == ALL_STATES
    finally:
        receiver.stop()
        sipp.stop()


def test_restart_mid_call_ends_the_call_with_bye_and_loses_no_event(
    make_server: Any, tmp_path: Path
) -> None:
    server: Server = make_server()
    receiver = Receiver(port=free_port())  # down while the call happens
    sipp = Sipp(["-sn", "uas", "-m", "1"]).start(tmp_path)
    try:
        client = RestClient(server.project, server.token, server.host)
        leg = client.calling.dial(
            from_="+15559876543",
            to=f"sip:bob@{sipp.uri_host}",
            swml=LONG_CALL,
            status_url=receiver.url("/status"),
            status_events=ALL_STATES,
        )
        server.wait_status(leg["id"], "answered")
        started = time.monotonic()
        assert server.stop() == 0  # SIGTERM: BYE the call, write its events, exit cleanly
        assert time.monotonic() - started < 10
        assert sipp.wait(timeout=5) == 0  # sipp received our BYE and answered it

        receiver.start()
        restarted = Server(
            data_dir=server.data_dir,
            project=server.project,
            token=server.token,
            http_port=server.http_port,
            sip_port=server.sip_port,
        ).start()
        try:
            receiver.wait_call_state("/status", leg["id"], "ended", timeout=20)
            assert receiver.call_states("/status", leg["id"]) == ALL_STATES
            deliveries = [
                int(h.headers["x-callplane-delivery"]) for h in receiver.hits if h.path == "/status"
            ]
            assert deliveries == sorted(deliveries)
            signing_key = server.signing_key
            for hit in receiver.hits:
                raw = _canonical(hit.body)
                signature = hit.headers["x-signalwire-signature"]
                assert verify_signature(signing_key, receiver.url("/status"), raw, signature)
                # The token controls calls; receivers hold only the signing key.
                assert not verify_signature(server.token, receiver.url("/status"), raw, signature)
            after = restarted.get(f"/api/calling/calls/{leg['id']}").json()
            assert after["status"] == "ended"
            events = restarted.get(f"/api/calling/calls/{leg['id']}/events").json()["data"]
            states = [
                e["params"]["call_state"] for e in events if e["event_type"] == "calling.call.state"
            ]
            assert states == ["created", "ringing", "answered", "ending", "ended"]
        finally:
            restarted.stop()
    finally:
        receiver.stop()
        sipp.stop()


def test_a_killed_server_ends_orphaned_calls_on_restart(
    make_server: Any, receiver: Receiver, tmp_path: Path
) -> None:
    server: Server = make_server()
    sipp = Sipp(["-sn", "uas", "-m", "1"]).start(tmp_path)
    try:
        leg = RestClient(server.project, server.token, server.host).calling.dial(
            from_="+15559876543",
            to=f"sip:bob@{sipp.uri_host}",
            swml=LONG_CALL,
            status_url=receiver.url("/status"),
            status_events=ALL_STATES,
        )
        receiver.wait_call_state("/status", leg["id"], "answered")
        server.kill()  # no chance to hang up
        restarted = Server(
            data_dir=server.data_dir,
            project=server.project,
            token=server.token,
            http_port=server.http_port,
            sip_port=server.sip_port,
        ).start()
        try:
            receiver.wait_call_state("/status", leg["id"], "ended")
            assert receiver.call_states("/status", leg["id"]) == ALL_STATES
            ended = receiver.events("/status")[-1]
            assert ended["params"]["end_reason"] == "error"
            assert restarted.call_status(leg["id"]) == "ended"
        finally:
            restarted.stop()
    finally:
        sipp.stop()


def _canonical(body: Any) -> bytes:
    import json

    return json.dumps(body, separators=(",", ":")).encode()


def test_a_recording_cut_by_a_crash_is_repaired_and_served_after_restart(
    make_server: Any, receiver: Receiver, tmp_path: Path
) -> None:
    server: Server = make_server()
    sipp = Sipp(["-sn", "uas", "-m", "1"]).start(tmp_path)
    try:
        leg = RestClient(server.project, server.token, server.host).calling.dial(
            from_="+15559876543",
            to=f"sip:bob@{sipp.uri_host}",
            swml={
                "version": "1.0.0",
                "sections": {
                    "main": [
                        {"record_call": {"format": "wav", "status_url": receiver.url("/rec")}},
                        {"play": {"url": "ring:us"}},
                    ]
                },
            },
        )
        server.wait_status(leg["id"], "answered")
        started = wait_until(lambda: receiver.events("/rec"), 10, "recording started")
        url = started[0]["params"]["url"]
        time.sleep(1.5)
        server.kill()
        restarted = Server(
            data_dir=server.data_dir,
            project=server.project,
            token=server.token,
            http_port=server.http_port,
            sip_port=server.sip_port,
        ).start()
        try:
            response = httpx.get(url, auth=(server.project, server.token), timeout=10)
            assert response.status_code == 200
            data, rate = soundfile.read(io.BytesIO(response.content))
            assert rate == 8000
            assert 1.0 <= len(data) / rate <= 3.0
        finally:
            restarted.stop()
    finally:
        sipp.stop()
