"""A real HTTP server on 127.0.0.1 that records every request and answers from a script."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from callplane import AsyncRestClient, RestClient

PROJECT = "proj-1234"
TOKEN = "tok-secret"

CALL_LEG: dict[str, Any] = {
    "id": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
    "from": "+15559876543",
    "to": "+15551234567",
    "direction": "outbound-api",
    "source": "realtime_api",
    "url": "https://example.com/call-handler",
    "charge": 0,
    "created_at": "2024-05-06T12:20:00Z",
    "charge_details": [],
    "status": "queued",
    "duration": None,
    "duration_ms": None,
    "billing_ms": None,
    "type": "relay_pstn_call",
    "parent_id": None,
}


@dataclass
class Reply:
    status: int = 200
    body: bytes = field(default_factory=lambda: json.dumps(CALL_LEG).encode())
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    delay: float = 0.0
    drop: bool = False  # close the connection without answering
    raw: bytes | None = None  # sent verbatim instead of a generated response
    close: bool = False  # close the connection after answering


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    at: float  # time.monotonic() on arrival
    peer: tuple[str, int]  # the client's address: one per TCP connection

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class RecordingServer:
    call_leg = CALL_LEG  # what every request gets unless a reply is queued

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}/api/calling/calls"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._replies.clear()

    def reply(
        self,
        status: int = 200,
        *,
        json_body: Any = None,
        text: str | None = None,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
        drop: bool = False,
        raw: bytes | None = None,
        close: bool = False,
    ) -> None:
        """Queue the answer to the next request (default: 200 with the CallLeg)."""
        reply = Reply(status=status, delay=delay, drop=drop, raw=raw, close=close)
        if json_body is not None:
            reply.body = json.dumps(json_body).encode()
        elif text is not None:
            reply.body = text.encode()
            reply.headers = {"Content-Type": "text/plain"}
        reply.headers.update(headers or {})
        with self._lock:
            self._replies.append(reply)

    @property
    def last(self) -> Received:
        assert self.requests, "the server received no request"
        return self.requests[-1]

    def _next(self, received: Received) -> Reply:
        with self._lock:
            self.requests.append(received)
            return self._replies.popleft() if self._replies else Reply()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received = Received(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    at=time.monotonic(),
                    peer=self.client_address[:2],
                )
                reply = server._next(received)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.drop:
                    self.close_connection = True
                    return
                if reply.close:
                    self.close_connection = True
                if reply.raw is not None:
                    self.wfile.write(reply.raw)
                    return
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture(scope="session")
def _server() -> Iterator[RecordingServer]:
    server = RecordingServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(_server: RecordingServer) -> RecordingServer:
    _server.reset()
    return _server


@pytest.fixture
def client(server: RecordingServer) -> Iterator[RestClient]:
    with RestClient(PROJECT, TOKEN, server.host, timeout=5.0) as client:
        yield client


@pytest.fixture
async def aclient(server: RecordingServer) -> AsyncIterator[AsyncRestClient]:
    async with AsyncRestClient(PROJECT, TOKEN, server.host, timeout=5.0) as client:
        yield client


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("SIGNALWIRE_PROJECT_ID", "SIGNALWIRE_API_TOKEN", "SIGNALWIRE_SPACE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch
