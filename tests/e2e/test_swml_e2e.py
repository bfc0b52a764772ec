"""SWML fetching and execution on real calls."""

from __future__ import annotations

import uuid
from pathlib import Path

from conftest import requires_sipp
from harness import Receiver, Server, Sipp, wait_until

from callplane import RestClient

pytestmark = [requires_sipp]


def _swml(*methods: dict[str, object]) -> dict[str, object]:
    return {"version": "1.0.0", "sections": {"main": list(methods)}}


def test_fallback_url_custom_variables_and_script_variables(
    server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.serve_swml(
        "/fallback",
        _swml(
            {"set": {"who": "${envs.customer}"}},
            {"request": {"url": receiver.url("/report?who=${who}"), "method": "GET"}},
            {"hangup": {}},
        ),
    )
    sipp = Sipp(["-sn", "uas", "-m", "1"]).start(tmp_path)
    try:
        leg = RestClient(server.project, server.token, server.host).calling.dial(
            from_="+15559876543",
            to=f"sip:bob@{sipp.uri_host}",
            url="http://127.0.0.1:1/broken",  # nothing listens there
            fallback_url=receiver.url("/fallback"),
            custom_variables={"customer": "acme"},
        )
        report = wait_until(
            lambda: next((h for h in receiver.hits if h.path == "/report"), None), 10, "request"
        )
        assert report.method == "GET"
        fetch = next(h for h in receiver.hits if h.path == "/fallback")
        assert fetch.body["envs"] == {"customer": "acme"}
        assert fetch.body["call"]["call_id"] == leg["id"]
        assert fetch.body["call"]["direction"] == "outbound"
        assert server.wait_status(leg["id"], "ended") == "ended"
        assert sipp.wait() == 0
    finally:
        sipp.stop()


def test_unsupported_swml_method_ends_the_call_with_a_logged_error(
    server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    sipp = Sipp(["-sn", "uas", "-m", "1"]).start(tmp_path)
    try:
        leg = RestClient(server.project, server.token, server.host).calling.dial(
            from_="+15559876543",
            to=f"sip:bob@{sipp.uri_host}",
            swml=_swml({"pay": {"payment_connector_url": "https://example.com/pay"}}),
            status_url=receiver.url("/status"),
        )
        receiver.wait_call_state("/status", leg["id"], "ended")
        assert receiver.events("/status")[-1]["params"]["end_reason"] == "error"
        events = server.get(f"/api/calling/calls/{leg['id']}/events").json()["data"]
        errors = [e for e in events if e["event_type"] == "calling.swml.error"]
        assert len(errors) == 1 and errors[0]["params"]["method"] == "pay"
        assert "SWML method pay is not supported by callplane yet" in server.log()
        assert sipp.wait() == 0
    finally:
        sipp.stop()


def test_idempotency_key_replays_a_dial_without_a_second_call(
    server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    sipp = Sipp(["-sn", "uas", "-m", "1"]).start(tmp_path)
    try:
        body = {
            "command": "dial",
            "params": {
                "from": "+15559876543",
                "to": f"sip:bob@{sipp.uri_host}",
                "swml": _swml({"play": {"url": "silence:1"}}),
            },
        }
        key = str(uuid.uuid4())
        first = server.post(body, **{"Idempotency-Key": key})
        second = server.post(body, **{"Idempotency-Key": key})
        assert first.status_code == second.status_code == 200
        assert first.json() == second.json()
        assert second.headers.get("idempotent-replayed") == "true"
        assert server.wait_status(first.json()["id"], "ended") == "ended"
        assert sipp.wait() == 0  # exactly one call reached sipp (-m 1 would fail on a second)
        body["params"]["from"] = "+15550000000"  # type: ignore[index]
        reused = server.post(body, **{"Idempotency-Key": key})
        assert reused.status_code == 422
        assert reused.json()["errors"][0]["code"] == "idempotency_key_reused"
    finally:
        sipp.stop()
