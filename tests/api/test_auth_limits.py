"""The edge with several projects: each project's credentials work and scope the request to it;
repeated wrong credentials from one source are slowed down with 429, other sources are not."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest
from api_harness import RecordingEngine, ServerThread

from callplane.api import create_app
from callplane.api.auth import FailureLimiter, authenticate

TOKENS = {"proj-a": "token-a", "proj-b": "token-b"}
URL = "/api/calling/calls"
CALL_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
END = {"command": "calling.end", "id": CALL_ID, "params": {"reason": "hangup"}}


@pytest.fixture
def server() -> Iterator[tuple[ServerThread, RecordingEngine]]:
    engine = RecordingEngine()
    app = create_app(engine, tokens=TOKENS.get)
    with ServerThread(app) as running:
        yield running, engine


def client(base_url: str, auth: tuple[str, str] | None, source: str = "127.0.0.1") -> httpx.Client:
    # Another loopback source address is another client as far as the server can tell.
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(
        base_url=base_url, auth=auth, timeout=10, trust_env=False, transport=transport
    )


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_every_project_is_served_and_commands_run_in_its_own_project(
    server: tuple[ServerThread, RecordingEngine],
) -> None:
    running, engine = server
    for project, token in TOKENS.items():
        engine.reset()
        with client(running.base_url, (project, token)) as http:
            assert http.post(URL, json=END).status_code == 200
        assert [e.project_id for e in engine.executed] == [project]


def test_a_token_is_only_good_for_its_own_project(
    server: tuple[ServerThread, RecordingEngine],
) -> None:
    running, engine = server
    engine.reset()
    with client(running.base_url, ("proj-a", "token-b")) as http:
        response = http.post(URL, json=END)
    assert response.status_code == 401
    assert response.json() == {"error": "Unauthorized"}
    assert engine.executed == []


def test_ten_wrong_credentials_from_one_source_get_429_and_other_sources_keep_working(
    server: tuple[ServerThread, RecordingEngine],
) -> None:
    running, _ = server
    with client(running.base_url, ("proj-a", "guess")) as attacker:
        for _ in range(10):
            assert attacker.post(URL, json=END).status_code == 401
        blocked = attacker.post(URL, json=END)
        assert blocked.status_code == 429
        assert blocked.json() == {"error": "Too Many Requests"}
        assert 1 <= int(blocked.headers["retry-after"]) <= 60
    # The blocked source learns nothing more, even with the right token.
    with client(running.base_url, ("proj-a", "token-a")) as same_source:
        assert same_source.post(URL, json=END).status_code == 429
    # Right credentials from elsewhere are unaffected.
    with client(running.base_url, ("proj-b", "token-b"), source="127.0.0.2") as elsewhere:
        assert elsewhere.post(URL, json=END).status_code == 200
    # /health is not behind auth, so it is not throttled either.
    with client(running.base_url, None) as probe:
        assert probe.get("/health").status_code == 200


def test_requests_without_credentials_do_not_count_as_guesses(
    server: tuple[ServerThread, RecordingEngine],
) -> None:
    running, _ = server
    with client(running.base_url, None) as anonymous:
        for _ in range(20):
            assert anonymous.post(URL, json=END).status_code == 401
    with client(running.base_url, ("proj-a", "token-a")) as http:
        assert http.post(URL, json=END).status_code == 200


def test_the_limiter_forgets_failures_after_the_window() -> None:
    limiter = FailureLimiter(max_failures=3, window=60.0)
    for t in (0.0, 10.0, 20.0):
        assert limiter.retry_after("s", t) is None
        limiter.failed("s", t)
    assert limiter.retry_after("s", 20.0) == pytest.approx(40.0)
    assert limiter.retry_after("other", 20.0) is None
    assert limiter.retry_after("s", 59.9) == pytest.approx(0.1)
    assert limiter.retry_after("s", 60.0) is None  # the first failure aged out
    limiter.failed("s", 60.0)
    assert limiter.retry_after("s", 61.0) == pytest.approx(9.0)


def test_the_limiter_remembers_a_bounded_number_of_sources() -> None:
    limiter = FailureLimiter(max_failures=1, window=60.0, max_sources=100)
    for i in range(1000):
        limiter.failed(f"10.0.{i // 256}.{i % 256}", 1.0)
    assert len(limiter._failures) == 100
    assert limiter.retry_after("10.0.3.231", 2.0) is not None  # the most recent are kept
    assert limiter.retry_after("10.0.0.0", 2.0) is None


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        basic("proj-a", "token-b"),
        basic("proj-c", "token-a"),
        basic("", "token-a"),
        basic("proj-a", "token-a") + "=",
        "Basic " + base64.b64encode(b"\xff\xfe:token-a").decode(),
        "Bearer token-a",
    ],
)
def test_authenticate_refuses(header: str | None) -> None:
    assert authenticate(header, TOKENS.get) is None


def test_authenticate_names_the_project() -> None:
    assert authenticate(basic("proj-b", "token-b"), TOKENS.get) == "proj-b"
    assert authenticate(basic("proj-a", "token-a:x"), TOKENS.get) is None
