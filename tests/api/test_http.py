"""Transport-level behaviour of the HTTP edge: auth, bad bodies, error mapping, extra routes."""

from __future__ import annotations

import base64
import logging
from typing import Any

import httpx
import pytest
from api_harness import (
    CALL_ID,
    PROJECT,
    TOKEN,
    RecordingEngine,
    ServerThread,
    call_leg,
    client_for,
)

from callplane.api import create_app
from callplane.engine.facade import CommandError
from callplane.netpolicy import TargetPolicy

URL = "/api/calling/calls"
END = {"command": "calling.end", "id": CALL_ID, "params": {"reason": "hangup"}}
DOCS = "https://signalwire.com/docs/apis/error-codes"


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    "auth_header",
    [
        None,
        "Basic " + base64.b64encode(f"{PROJECT}:wrong".encode()).decode(),
        "Basic " + base64.b64encode(f"other:{TOKEN}".encode()).decode(),
        "Basic " + base64.b64encode(PROJECT.encode()).decode(),  # no colon
        "Basic not-base64!!",
        "Bearer " + TOKEN,
        "Basic " + base64.b64encode(f"{PROJECT}:{TOKEN}x".encode()).decode(),
    ],
)
def test_bad_credentials_are_401_with_challenge(
    server: ServerThread, engine: RecordingEngine, auth_header: str | None
) -> None:
    engine.reset()
    headers = {"Authorization": auth_header} if auth_header else {}
    with client_for(server.base_url, auth=None) as client:
        for method, path in (("POST", URL), ("GET", f"{URL}/{CALL_ID}"), ("GET", "/api/nope")):
            response = client.request(method, path, json=END, headers=headers)
            assert response.status_code == 401
            assert response.json() == {"error": "Unauthorized"}
            assert response.headers["www-authenticate"] == 'Basic realm="callplane"'
    assert engine.executed == []


def test_good_credentials_reach_the_engine(http: httpx.Client, engine: RecordingEngine) -> None:
    response = http.post(URL, json=END)
    assert response.status_code == 200
    assert response.json() == call_leg()
    assert response.headers["content-type"].startswith("application/json")
    assert [(e.project_id, e.command, e.call_id) for e in engine.executed] == [
        (PROJECT, "calling.end", CALL_ID)
    ]


# --------------------------------------------------------------------------- health


def test_health_is_open_and_ok(server: ServerThread) -> None:
    with client_for(server.base_url, auth=None) as client:
        response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_health_is_503_until_ready() -> None:
    state = {"ready": False}
    app = create_app(
        RecordingEngine(), project_id=PROJECT, token=TOKEN, ready=lambda: state["ready"]
    )
    with ServerThread(app) as running, client_for(running.base_url, auth=None) as client:
        assert client.get("/health").status_code == 503
        state["ready"] = True
        assert client.get("/health").json() == {"status": "ok"}


# --------------------------------------------------------------------------- bad bodies


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b"not json",
        b'{"command": "calling.end", "id": NaN}',
        b'{"command": "calling.end", "params": {"x": 1e400}}',
        b'{"command": "calling.end", "params": {"x": ' + b"9" * 5000 + b"}}",
        b"\xff\xfe{}",
        b"[1, 2]",
        b'"calling.end"',
        b"null",
        b"42",
        b"[" * 5000 + b"]" * 5000,
    ],
)
def test_malformed_or_non_object_json_is_400(
    http: httpx.Client, engine: RecordingEngine, content: bytes
) -> None:
    response = http.post(URL, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {"error": "Bad Request"}
    assert engine.executed == []


def test_oversized_body_is_413(http: httpx.Client) -> None:
    response = http.post(URL, content=b'{"x":"' + b"a" * (1024 * 1024 + 10) + b'"}')
    assert response.status_code == 413
    assert response.json() == {"error": "Payload Too Large"}


def test_unknown_command_is_422_invalid_command_attempted(http: httpx.Client) -> None:
    response = http.post(URL, json={"command": "calling.explode", "id": CALL_ID, "params": {}})
    assert response.status_code == 422
    [item] = response.json()["errors"]
    assert item["type"] == "validation_error"
    assert item["code"] == "invalid_command_attempted"
    assert item["attribute"] == "command"
    assert item["url"] == DOCS
    assert "calling.explode" in item["message"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"id": CALL_ID, "params": {}}, [("missing_required_parameter", "command")]),
        ({"command": 7, "id": CALL_ID, "params": {}}, [("not_a_string", "command")]),
        ({"command": "calling.end", "params": {}}, [("missing_required_parameter", "id")]),
        ({"command": "calling.end", "id": "abc", "params": {}}, [("invalid_parameter", "id")]),
        ({"command": "calling.end", "id": 12, "params": {}}, [("not_a_string", "id")]),
        ({"command": "calling.end", "id": CALL_ID}, [("missing_required_parameter", "params")]),
        (
            {"command": "calling.end", "id": CALL_ID, "params": None},
            [("missing_required_parameter", "params")],
        ),
        ({"command": "calling.end", "id": CALL_ID, "params": []}, [("must_be_object", "params")]),
        (
            {"command": "calling.end", "id": "x", "params": "y"},
            [("invalid_parameter", "id"), ("must_be_object", "params")],
        ),
    ],
)
def test_envelope_problems(
    http: httpx.Client, body: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    response = http.post(URL, json=body)
    assert response.status_code == 422
    assert [(e["code"], e["attribute"]) for e in response.json()["errors"]] == expected


def test_uppercase_call_id_is_canonicalised(http: httpx.Client, engine: RecordingEngine) -> None:
    response = http.post(URL, json={**END, "id": CALL_ID.upper()})
    assert response.status_code == 200
    assert engine.executed[0].call_id == CALL_ID


def test_all_problems_are_reported_at_once(http: httpx.Client) -> None:
    body = {
        "command": "calling.play",
        "id": CALL_ID,
        "params": {
            "play": [{"type": "audio", "url": "ftp://x"}, {"type": "tts"}],
            "volume": 41,
            "loop": -1,
            "direction": "up",
        },
    }
    response = http.post(URL, json=body)
    assert response.status_code == 422
    got = {(e["code"], e["attribute"]) for e in response.json()["errors"]}
    assert got == {
        ("not_an_http_url", "play.0.params.url"),
        ("missing_required_parameter", "play.1.params.text"),
        ("invalid_parameter", "volume"),
        ("invalid_parameter", "loop"),
        ("invalid_parameter", "direction"),
    }
    for item in response.json()["errors"]:
        assert item["attribute"] in item["message"]


# --------------------------------------------------------------------------- engine errors


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        (CommandError(404, "not_found", "no such call"), 404, {"error": "Not Found"}),
        (CommandError(400, "bad", "bad"), 400, {"error": "Bad Request"}),
        (
            CommandError(409, "invalid_state", "a transcription is running", "control_id"),
            409,
            {
                "errors": [
                    {
                        "type": "conflict_error",
                        "code": "invalid_state",
                        "message": "a transcription is running",
                        "attribute": "control_id",
                        "url": DOCS,
                    }
                ]
            },
        ),
        (
            CommandError(422, "cannot_update_completed", "call has ended"),
            422,
            {
                "errors": [
                    {
                        "type": "validation_error",
                        "code": "cannot_update_completed",
                        "message": "call has ended",
                        "attribute": None,
                        "url": DOCS,
                    }
                ]
            },
        ),
        (
            CommandError(501, "not_implemented", "ai_sidecar needs a language model"),
            501,
            {
                "errors": [
                    {
                        "type": "not_implemented_error",
                        "code": "not_implemented",
                        "message": "ai_sidecar needs a language model",
                        "attribute": None,
                        "url": DOCS,
                    }
                ]
            },
        ),
        (RuntimeError("boom"), 500, {"error": "Internal Server Error"}),
        (
            CommandError(200, "weird", "not an error status"),
            500,
            {"error": "Internal Server Error"},
        ),
    ],
)
def test_engine_errors_are_mapped(
    http: httpx.Client,
    engine: RecordingEngine,
    error: BaseException,
    status: int,
    body: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine.failures["calling.end"] = error
    with caplog.at_level(logging.ERROR, logger="callplane.api"):
        response = http.post(URL, json=END)
    assert response.status_code == status
    assert response.json() == body
    if isinstance(error, RuntimeError):
        assert "boom" in caplog.text  # unexpected failures are logged with their traceback


# --------------------------------------------------------------------------- extension routes


def test_get_call(http: httpx.Client, engine: RecordingEngine) -> None:
    engine.calls[CALL_ID] = call_leg()
    assert http.get(f"{URL}/{CALL_ID}").json() == call_leg()
    assert http.get(f"{URL}/{CALL_ID.upper()}").status_code == 200
    missing = http.get(f"{URL}/00000000-0000-4000-8000-000000000000")
    assert (missing.status_code, missing.json()) == (404, {"error": "Not Found"})
    assert http.get(f"{URL}/not-a-uuid").status_code == 404


def test_get_call_events(http: httpx.Client, engine: RecordingEngine) -> None:
    events = [{"event_type": "calling.call.state", "params": {"call_state": "created"}}]
    engine.events[CALL_ID] = events
    response = http.get(f"{URL}/{CALL_ID}/events")
    assert (response.status_code, response.json()) == (200, {"data": events})
    missing = http.get(f"{URL}/00000000-0000-4000-8000-000000000000/events")
    assert (missing.status_code, missing.json()) == (404, {"error": "Not Found"})


def test_unknown_routes_and_methods_answer_json(http: httpx.Client) -> None:
    response = http.get("/api/calling/nothing")
    assert (response.status_code, response.json()) == (404, {"error": "Not Found"})
    response = http.get(URL)
    assert (response.status_code, response.json()) == (405, {"error": "Method Not Allowed"})


def test_request_id_is_echoed_or_generated(http: httpx.Client) -> None:
    assert (
        http.post(URL, json=END, headers={"X-Request-Id": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )
    generated = http.post(URL, json=END, headers={"X-Request-Id": "bad id\twith spaces"})
    assert len(generated.headers["x-request-id"]) == 36


def test_private_targets_can_be_refused() -> None:
    engine = RecordingEngine()
    app = create_app(
        engine, project_id=PROJECT, token=TOKEN, targets=TargetPolicy(allow_private=False)
    )
    tap = {
        "command": "calling.tap",
        "id": CALL_ID,
        "params": {
            "control_id": "t",
            "tap": {"type": "audio", "params": {"direction": "both"}},
            "device": {"type": "rtp", "params": {"addr": "10.0.0.1", "port": 4000}},
            "status_url": "http://127.0.0.1:9/hook",
        },
    }
    with ServerThread(app) as running, client_for(running.base_url) as client:
        response = client.post(URL, json=tap)
    assert response.status_code == 422
    assert {(e["code"], e["attribute"]) for e in response.json()["errors"]} == {
        ("invalid_parameter", "device.params.addr"),
        ("url_is_unsafe", "status_url"),
    }
    assert engine.executed == []


def test_create_app_requires_credentials() -> None:
    with pytest.raises(ValueError):
        create_app(RecordingEngine(), project_id="", token=TOKEN)
