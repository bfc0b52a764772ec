"""Crash recovery completes what it started: after kill -9 and a restart (even with another
--project), every project's orphaned calls end at their last sign of life, recordings cut short
are repaired and reported `finished`, and queued webhooks keep their project's signature."""

from __future__ import annotations

import io
import json
import stat
import time
import wave
from pathlib import Path
from typing import Any

import httpx
from conftest import requires_sipp
from harness import SCENARIOS, Receiver, Server, Sipp, projects_cli, wait_until

from callplane.webhooks import verify_signature

pytestmark = [requires_sipp]

ALL_STATES = ["created", "ringing", "answered", "ended"]
HEARTBEAT = 2.0  # callplane.server.HEARTBEAT_INTERVAL
DOWNTIME = 5.0


def dial(server: Server, auth: tuple[str, str], to: str, swml: dict[str, Any], hook: str) -> str:
    response = httpx.post(
        f"{server.base_url}/api/calling/calls",
        json={
            "command": "dial",
            "params": {
                "from": "+15559876543",
                "to": to,
                "swml": swml,
                "status_url": hook,
                "status_events": ALL_STATES,
            },
        },
        auth=auth,
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def signed_by(receiver: Receiver, path: str, key: str, others: list[str]) -> None:
    hits = [h for h in receiver.hits if h.path == path]
    assert hits
    for hit in hits:
        raw = json.dumps(hit.body, separators=(",", ":")).encode()
        signature = hit.headers["x-signalwire-signature"]
        assert verify_signature(key, receiver.url(path), raw, signature), (path, hit.body)
        assert not any(verify_signature(k, receiver.url(path), raw, signature) for k in others)


def test_kill_9_mid_call_then_restart_with_another_project_completes_every_project_s_calls(
    tmp_path: Path, receiver: Receiver
) -> None:
    data = tmp_path / "data"
    beta = json.loads(projects_cli(data, "add", "beta", "--json").stdout)
    server = Server(data_dir=data).start()
    alpha = next(p for p in server.projects() if p["id"] == server.project)
    sipp_a = Sipp(["-sn", "uas", "-m", "1"]).start(tmp_path)
    sipp_b = Sipp(["-sn", "uas", "-m", "1"]).start(tmp_path)
    restarted: Server | None = None
    try:
        recorded = {
            "version": "1.0.0",
            "sections": {
                "main": [
                    {"record_call": {"format": "wav", "status_url": receiver.url("/rec")}},
                    {"play": {"url": "silence:60"}},
                ]
            },
        }
        hold = {"version": "1.0.0", "sections": {"main": [{"play": {"url": "silence:60"}}]}}
        leg_a = dial(
            server,
            (alpha["id"], alpha["token"]),
            f"sip:alice@{sipp_a.uri_host}",
            recorded,
            receiver.url("/status-a"),
        )
        leg_b = dial(
            server,
            (beta["id"], beta["token"]),
            f"sip:bob@{sipp_b.uri_host}",
            hold,
            receiver.url("/status-b"),
        )
        receiver.wait_call_state("/status-a", leg_a, "answered")
        receiver.wait_call_state("/status-b", leg_b, "answered")
        started = wait_until(lambda: receiver.events("/rec"), 10, "the recording to start")
        url = started[0]["params"]["url"]
        time.sleep(HEARTBEAT + 0.5)  # at least one heartbeat after the answer
        server.kill()  # kill -9: no BYE, no final events, a WAV header with no sizes
        killed_at = time.time()
        time.sleep(DOWNTIME)

        # The new process serves another default project; the old ones' calls are still its job.
        restarted = Server(
            data_dir=data,
            project="gamma",
            token="gamma-token",
            http_port=server.http_port,
            sip_port=server.sip_port,
        ).start()
        gamma = next(p for p in restarted.projects() if p["id"] == "gamma")
        receiver.wait_call_state("/status-a", leg_a, "ended")
        receiver.wait_call_state("/status-b", leg_b, "ended")
        finished = wait_until(
            lambda: [e for e in receiver.events("/rec") if e["params"]["state"] == "finished"],
            10,
            "the repaired recording's finished event",
        )[0]["params"]

        # The finished event names the same url, and its duration is the file's.
        assert finished["url"] == url and finished["record"]["url"] == url
        assert finished["start_time"] == started[0]["params"]["start_time"]
        assert finished["control_id"] == started[0]["params"]["control_id"]
        assert finished["record"]["audio"] == {
            "format": "wav",
            "direction": "both",
            "stereo": False,
        }
        response = httpx.get(url, auth=(alpha["id"], alpha["token"]), timeout=10)
        assert response.status_code == 200
        with wave.open(io.BytesIO(response.content)) as wav:
            assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
            seconds = wav.getnframes() / 8000
            frames = wav.readframes(wav.getnframes())
        assert len(frames) == len(response.content) - 44  # the header's sizes were repaired
        assert finished["duration"] == finished["record"]["duration"] == round(seconds, 3)
        assert finished["size"] == len(response.content)
        assert HEARTBEAT - 0.5 <= seconds <= HEARTBEAT + 2.0
        assert finished["end_time"] == finished["start_time"] + seconds

        # Durations stop at the last heartbeat, not at the restart: the downtime is excluded.
        for auth, leg, path in (
            ((alpha["id"], alpha["token"]), leg_a, "/status-a"),
            ((beta["id"], beta["token"]), leg_b, "/status-b"),
        ):
            answered = next(
                e["timestamp"]
                for e in receiver.events(path, "calling.call.state")
                if e["params"]["call_state"] == "answered"
            )
            call = httpx.get(f"{restarted.base_url}/api/calling/calls/{leg}", auth=auth).json()
            assert call["status"] == "ended"
            alive = (killed_at - answered) * 1000
            assert alive - HEARTBEAT * 1000 - 500 <= call["duration_ms"] <= alive + 100, call
            assert call["billing_ms"] == call["duration_ms"]
            assert call["duration"] == call["duration_ms"] // 1000
            ended = receiver.events(path, "calling.call.state")[-1]["params"]
            assert ended["call_state"] == "ended" and ended["end_reason"] == "error"

        # The recording's finished comes before the call's ended in the call's own log.
        events = httpx.get(
            f"{restarted.base_url}/api/calling/calls/{leg_a}/events",
            auth=(alpha["id"], alpha["token"]),
        ).json()["data"]
        kinds = [
            e["params"].get("state") or e["params"].get("call_state")
            for e in events
            if e["event_type"] in ("calling.call.record", "calling.call.state")
        ]
        assert kinds[-3:] == ["finished", "ending", "ended"] or kinds[-2:] == ["finished", "ended"]

        # Each project's webhooks carry its own signature, not the new default's.
        keys = {"a": alpha["signing_key"], "b": beta["signing_key"], "g": gamma["signing_key"]}
        tokens = [alpha["token"], beta["token"], gamma["token"]]
        signed_by(receiver, "/status-a", keys["a"], [keys["b"], keys["g"], *tokens])
        signed_by(receiver, "/rec", keys["a"], [keys["b"], keys["g"], *tokens])
        signed_by(receiver, "/status-b", keys["b"], [keys["a"], keys["g"], *tokens])

        recordings = data / "recordings"
        assert stat.S_IMODE(recordings.stat().st_mode) == 0o700
        assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in recordings.iterdir())
    finally:
        sipp_a.stop()
        sipp_b.stop()
        server.kill()
        if restarted is not None:
            restarted.stop()


HOLD = {"version": "1.0.0", "sections": {"main": [{"play": {"url": "silence:60"}}]}}


def test_kill_9_then_restart_sends_the_outbound_orphan_s_far_end_a_bye(
    tmp_path: Path, receiver: Receiver
) -> None:
    data = tmp_path / "data"
    server = Server(data_dir=data).start()
    sipp = Sipp(["-sf", str(SCENARIOS / "answer_await_bye.xml"), "-m", "1"]).start(tmp_path)
    restarted: Server | None = None
    try:
        auth = (server.project, server.token)
        leg = dial(server, auth, f"sip:alice@{sipp.uri_host}", HOLD, receiver.url("/status"))
        receiver.wait_call_state("/status", leg, "answered")
        server.kill()  # kill -9: the dialog is left to sipp, which waits for a BYE
        time.sleep(1.0)
        assert sipp.proc is not None and sipp.proc.poll() is None
        restarted = Server(
            data_dir=data, http_port=server.http_port, sip_port=server.sip_port
        ).start()
        assert sipp.wait(timeout=20) == 0  # the BYE came, in the dialog sipp knows, and got 200
        receiver.wait_call_state("/status", leg, "ended")
        line = f"call {leg}: BYE to its far end answered 200"
        wait_until(lambda: line in server.log_path.read_text(), 5, "the BYE's 200 in the log")
    finally:
        sipp.stop()
        server.kill()
        if restarted is not None:
            restarted.stop()


def test_kill_9_then_restart_sends_the_inbound_orphan_s_caller_a_bye(
    tmp_path: Path, receiver: Receiver
) -> None:
    data = tmp_path / "data"
    route = receiver.serve_swml(
        "/route",
        {"version": "1.0.0", "sections": {"main": [{"answer": {}}, *HOLD["sections"]["main"]]}},
    )
    server = Server(data_dir=data, routes={"alice": route}).start()
    sipp = Sipp(
        [
            "-sf",
            str(SCENARIOS / "call_await_bye.xml"),
            "-s",
            "alice",
            f"127.0.0.1:{server.sip_port}",
            "-m",
            "1",
        ]
    ).start(tmp_path)
    restarted: Server | None = None
    try:
        fetch = wait_until(
            lambda: next((h for h in receiver.hits if h.path == "/route"), None), 10, "fetch"
        )
        call_id = fetch.body["call"]["call_id"]
        wait_until(
            lambda: server.get(f"/api/calling/calls/{call_id}").json()["status"] == "answered",
            10,
            "the answer",
        )
        time.sleep(0.5)  # sipp's ACK
        server.kill()
        time.sleep(1.0)
        assert sipp.proc is not None and sipp.proc.poll() is None
        restarted = Server(
            data_dir=data,
            routes={"alice": route},
            http_port=server.http_port,
            sip_port=server.sip_port,
        ).start()
        assert sipp.wait(timeout=20) == 0
        assert restarted.wait_status(call_id, "ended") == "ended"
    finally:
        sipp.stop()
        server.kill()
        if restarted is not None:
            restarted.stop()
