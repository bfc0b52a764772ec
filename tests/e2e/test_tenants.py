"""Projects on one server: each project sees, controls, downloads and is signed for only its own
calls; inbound SIP calls belong to the default project; secrets and files stay private."""

from __future__ import annotations

import io
import json
import stat
import uuid
from pathlib import Path
from typing import Any

import httpx
import soundfile
from conftest import requires_sipp
from harness import Receiver, Server, Sipp, projects_cli, wait_until

from callplane.api.commands import COMMANDS
from callplane.engine.core import NOT_YET
from callplane.webhooks import verify_signature

pytestmark = [requires_sipp]

ALL_STATES = ["created", "ringing", "answered", "ended"]
HOLD = {"version": "1.0.0", "sections": {"main": [{"play": {"url": "silence:60"}}]}}
HOOK = "http://127.0.0.1:9/never"  # nothing listens: if a command leaked, nothing would be sent

# One valid body per command that names a call (every command but dial); every address is
# loopback so that a leak could not send traffic anywhere else.
ON_A_CALL: list[tuple[str, dict[str, Any]]] = [
    ("update", {"url": HOOK}),
    ("calling.end", {"reason": "hangup"}),
    ("calling.transfer", {"dest": HOOK}),
    ("calling.disconnect", {}),
    ("calling.play", {"control_id": "p1", "play": [{"type": "silence", "duration": 1}]}),
    ("calling.play.pause", {"control_id": "p1"}),
    ("calling.play.resume", {"control_id": "p1"}),
    ("calling.play.stop", {"control_id": "p1"}),
    ("calling.play.volume", {"control_id": "p1", "volume": -3.0}),
    ("calling.record", {"control_id": "r1", "record": {"audio": {"format": "wav"}}}),
    ("calling.record.pause", {"control_id": "rec-b"}),
    ("calling.record.resume", {"control_id": "rec-b"}),
    ("calling.record.stop", {"control_id": "rec-b"}),
    ("calling.collect", {"control_id": "c1", "digits": {"max": 4}}),
    ("calling.collect.stop", {"control_id": "c1"}),
    ("calling.collect.start_input_timers", {"control_id": "c1"}),
    ("calling.detect", {"control_id": "d1", "detect": {"type": "machine", "params": {}}}),
    ("calling.detect.stop", {"control_id": "d1"}),
    (
        "calling.tap",
        {
            "control_id": "t1",
            "tap": {"type": "audio", "params": {"direction": "both"}},
            "device": {"type": "rtp", "params": {"addr": "127.0.0.1", "port": 9}},
        },
    ),
    ("calling.tap.stop", {"control_id": "t1"}),
    ("calling.stream", {"control_id": "s1", "url": "wss://127.0.0.1:9/x", "codec": "PCMU"}),
    ("calling.stream.stop", {"control_id": "s1"}),
    ("calling.denoise", {}),
    ("calling.denoise.stop", {}),
    ("calling.transcribe", {"control_id": "x1", "status_url": HOOK}),
    ("calling.transcribe.stop", {"control_id": "x1"}),
    ("calling.ai_message", {"role": "user", "message_text": "hi"}),
    ("calling.ai_hold", {"timeout": 60}),
    ("calling.ai_unhold", {}),
    ("calling.ai.stop", {"control_id": "a1"}),
    ("calling.live_transcribe", {"action": "start", "lang": "en"}),
    ("calling.live_translate", {"action": "start", "from_lang": "en", "to_lang": "es"}),
    ("calling.send_fax.stop", {"control_id": "f1"}),
    ("calling.receive_fax.stop", {"control_id": "f1"}),
    ("calling.refer", {"device": {"type": "sip", "params": {"to": "sip:x@127.0.0.1:9"}}}),
    ("calling.user_event", {"event": {"type": "custom"}}),
    ("calling.ai_sidecar", {"control_id": "s1", "lang": "en"}),
    ("calling.ai_sidecar.poke", {"control_id": "s1", "text": "hi"}),
    ("calling.ai_sidecar.ask", {"control_id": "s1", "text": "?"}),
    ("calling.ai_sidecar.stop", {"control_id": "s1"}),
    ("calling.ai_sidecar.status", {"control_id": "s1"}),
]


def body(command: str, call_id: str, params: dict[str, Any]) -> dict[str, Any]:
    if command == "update":
        return {"command": command, "params": {"id": call_id, **params}}
    return {"command": command, "id": call_id, "params": params}


class Api:
    """One project's view of the server."""

    def __init__(self, server: Server, project: dict[str, str]) -> None:
        self.server = server
        self.project = project
        self.auth = (project["id"], project["token"])

    def post(self, payload: dict[str, Any]) -> httpx.Response:
        url = f"{self.server.base_url}/api/calling/calls"
        return httpx.post(url, json=payload, auth=self.auth, timeout=10)

    def get(self, url: str) -> httpx.Response:
        if url.startswith("/"):
            url = self.server.base_url + url
        return httpx.get(url, auth=self.auth, timeout=10)

    def dial(self, to: str, receiver: Receiver, path: str) -> str:
        response = self.post(
            {
                "command": "dial",
                "params": {
                    "from": "+15559876543",
                    "to": to,
                    "swml": HOLD,
                    "status_url": receiver.url(path),
                    "status_events": ALL_STATES,
                },
            }
        )
        assert response.status_code == 200, response.text
        return str(response.json()["id"])

    def events(self, call_id: str) -> list[dict[str, Any]]:
        response = self.get(f"/api/calling/calls/{call_id}/events")
        assert response.status_code == 200, response.text
        return list(response.json()["data"])


def _canonical(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def assert_signed_by(receiver: Receiver, path: str, key: str, not_by: list[str]) -> int:
    hits = [h for h in receiver.hits if h.path == path]
    for hit in hits:
        signature = hit.headers["x-signalwire-signature"]
        raw = _canonical(hit.body)
        assert verify_signature(key, receiver.url(path), raw, signature), path
        assert not any(verify_signature(k, receiver.url(path), raw, signature) for k in not_by)
    return len(hits)


def test_the_table_covers_every_command_that_names_a_call() -> None:
    assert {command for command, _ in ON_A_CALL} == set(COMMANDS) - {"dial"}


def test_projects_are_isolated_on_every_endpoint_and_webhook(
    tmp_path: Path, receiver: Receiver
) -> None:
    data = tmp_path / "data"
    beta = json.loads(projects_cli(data, "add", "beta", "--json").stdout)
    route = {"version": "1.0.0", "sections": {"main": [{"answer": {}}, *HOLD["sections"]["main"]]}}
    alice_url = receiver.serve_swml("/alice", route)
    server = Server(data_dir=data, routes={"alice": alice_url}).start()
    sipp_a = Sipp(["-sn", "uas", "-m", "1"]).start(tmp_path)
    sipp_b = Sipp(["-sn", "uas", "-m", "1"]).start(tmp_path)
    try:
        projects = {p["id"]: p for p in server.projects()}
        alpha = projects[server.project]  # named by --project: created, and the default
        assert projects[beta["id"]] == beta
        a, b = Api(server, alpha), Api(server, beta)

        leg_a = a.dial(f"sip:alice@{sipp_a.uri_host}", receiver, "/status-a")
        leg_b = b.dial(f"sip:bob@{sipp_b.uri_host}", receiver, "/status-b")
        receiver.wait_call_state("/status-a", leg_a, "answered")
        receiver.wait_call_state("/status-b", leg_b, "answered")
        started = b.post(
            body(
                "calling.record",
                leg_b,
                {
                    "control_id": "rec-b",
                    "record": {
                        "audio": {"format": "wav", "initial_timeout": 0, "end_silence_timeout": 0}
                    },
                    "status_url": receiver.url("/rec-b"),
                },
            )
        )
        assert started.status_code == 200, started.text
        wait_until(lambda: receiver.events("/rec-b"), 10, "B's recording to start")
        before = b.events(leg_b)

        # A names B's call in every command: the same answer as for a call that does not exist.
        for command, params in ON_A_CALL:
            theirs = a.post(body(command, leg_b, params))
            unknown = a.post(body(command, str(uuid.uuid4()), params))
            assert (theirs.status_code, theirs.json()) == (unknown.status_code, unknown.json())
            assert theirs.status_code == 404 or (
                theirs.status_code == 501 and command in NOT_YET
            ), (command, theirs.text)
        # ... and nothing happened to it.
        assert b.get(f"/api/calling/calls/{leg_b}").json()["status"] == "answered"
        assert b.events(leg_b) == before
        assert [e["params"]["state"] for e in receiver.events("/rec-b")] == ["recording"]

        for mine, other, leg in ((a, b, leg_a), (b, a, leg_b)):
            assert mine.get(f"/api/calling/calls/{leg}").status_code == 200
            for path in (f"/api/calling/calls/{leg}", f"/api/calling/calls/{leg}/events"):
                response = other.get(path)
                assert (response.status_code, response.json()) == (404, {"error": "Not Found"})

        # Inbound SIP calls belong to the default project, whoever placed them.
        via_route = b.dial("alice", receiver, "/status-route")
        fetch = wait_until(
            lambda: next((h for h in receiver.hits if h.path == "/alice"), None), 10, "fetch"
        )
        inbound = fetch.body["call"]["call_id"]
        assert fetch.body["call"]["project_id"] == alpha["id"]
        assert a.get(f"/api/calling/calls/{inbound}").json()["direction"] == "inbound"
        assert b.get(f"/api/calling/calls/{inbound}").status_code == 404
        assert a.get(f"/api/calling/calls/{via_route}").status_code == 404

        # Recordings: only the call's project downloads them.
        assert (
            b.post(body("calling.record.stop", leg_b, {"control_id": "rec-b"})).status_code == 200
        )
        finished = wait_until(
            lambda: [e for e in receiver.events("/rec-b") if e["params"]["state"] == "finished"],
            10,
            "B's recording to finish",
        )
        url = finished[0]["params"]["url"]
        assert finished[0]["project_id"] == beta["id"]
        mine = b.get(url)
        assert mine.status_code == 200
        assert soundfile.read(io.BytesIO(mine.content))[1] == 8000
        theirs = a.get(url)
        unknown = a.get(url.rsplit("/", 1)[0] + f"/{uuid.uuid4()}")
        assert (theirs.status_code, theirs.json()) == (404, {"error": "Not Found"})
        assert (unknown.status_code, unknown.json()) == (404, {"error": "Not Found"})

        # A project added while serving works at once; removed, its token stops working.
        gamma = json.loads(projects_cli(data, "add", "gamma", "--json").stdout)
        g = Api(server, gamma)
        assert g.get(f"/api/calling/calls/{leg_a}").status_code == 404  # in, but not A's
        projects_cli(data, "remove", "gamma")
        assert g.get(f"/api/calling/calls/{leg_a}").status_code == 401

        for api, leg, path in ((a, leg_a, "/status-a"), (b, leg_b, "/status-b")):
            assert api.post(body("calling.end", leg, {"reason": "hangup"})).status_code == 200
            receiver.wait_call_state(path, leg, "ended")
        b.post(body("calling.end", via_route, {"reason": "hangup"}))
        receiver.wait_call_state("/status-route", via_route, "ended")

        # Every webhook verifies with its own project's key only (never a token, never the other's).
        not_a = [beta["signing_key"], alpha["token"], beta["token"]]
        assert assert_signed_by(receiver, "/status-a", alpha["signing_key"], not_a) == 4
        not_b = [alpha["signing_key"], alpha["token"], beta["token"]]
        for path in ("/status-b", "/rec-b", "/status-route"):
            assert assert_signed_by(receiver, path, beta["signing_key"], not_b)
    finally:
        sipp_a.stop()
        sipp_b.stop()
        server.stop()


def test_secrets_are_printed_once_and_files_are_owner_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(data_dir=data, project="", token="").start()  # nothing given: generated
    try:
        [project] = server.projects()
        assert project["name"] == "default"
        server.project, server.token = project["id"], project["token"]
        assert server.get(f"/api/calling/calls/{uuid.uuid4()}").status_code == 404
    finally:
        server.stop()
    restarted = Server(data_dir=data, project="", token="", http_port=server.http_port).start()
    try:
        assert restarted.projects() == [project]  # the same project after a restart
    finally:
        restarted.stop()
    log = server.log()  # both runs append to the same log
    assert log.count(project["token"]) == 1
    assert log.count(project["signing_key"]) == 1
    listing = projects_cli(data, "list").stdout
    assert project["id"] in listing and project["token"] not in listing
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for path in data.iterdir():
        if path.name == "server.log":
            continue  # the test harness's file, not callplane's
        expected = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_projects_cli_refuses_duplicates_and_unknown_names(tmp_path: Path) -> None:
    data = tmp_path / "data"
    added = json.loads(projects_cli(data, "add", "acme", "--json").stdout)
    assert set(added) == {"id", "name", "token", "signing_key"}
    assert projects_cli(data, "add", "acme", check=False).returncode == 1
    assert projects_cli(data, "remove", "nobody", check=False).returncode == 1
    assert json.loads(projects_cli(data, "list", "--json").stdout) == [added]
    projects_cli(data, "remove", "acme")
    assert json.loads(projects_cli(data, "list", "--json").stdout) == []
