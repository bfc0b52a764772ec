"""A request body trickled in slowly is cut off (408) instead of holding its connection."""

from __future__ import annotations

import base64
import socket
import time
from urllib.parse import urlsplit

from api_harness import PROJECT, TOKEN, RecordingEngine, ServerThread

from callplane.api import create_app


def test_slow_body_gets_408_and_the_connection_closes() -> None:
    engine = RecordingEngine()
    app = create_app(engine, project_id=PROJECT, token=TOKEN, body_timeout=1.0)
    auth = base64.b64encode(f"{PROJECT}:{TOKEN}".encode()).decode()
    with ServerThread(app) as running:
        port = urlsplit(running.base_url).port
        assert port is not None
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(
                b"POST /api/calling/calls HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Authorization: Basic {auth}\r\nContent-Length: 100\r\n\r\n".encode()
                + b'{"command"'
            )
            start = time.monotonic()
            received = b""
            while chunk := sock.recv(4096):
                received += chunk
            elapsed = time.monotonic() - start
    assert received.startswith(b"HTTP/1.1 408 ")
    assert 0.5 < elapsed < 4
    assert engine.executed == []
