"""Test harness for the HTTP edge: a recording engine and a real uvicorn server on loopback.

A uniquely named module (not conftest) so test modules can import it by name.
"""

from __future__ import annotations

import sys
import types

try:
    import callplane
except ImportError:  # pragma: no cover - only while the client package is still being written
    # callplane/__init__.py re-exports callplane.client, which is developed concurrently; until it
    # lands, stand in for it so the api package (which never uses the client) can be imported.
    for name in [n for n in sys.modules if n == "callplane" or n.startswith("callplane.")]:
        del sys.modules[name]
    _stub = types.ModuleType("callplane.client")
    for _name in ("AsyncRestClient", "CallplaneError", "RestClient", "RestError", "TransportError"):
        setattr(_stub, _name, type(_name, (Exception,), {}))
    sys.modules["callplane.client"] = _stub
    import callplane  # noqa: F401

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette

PROJECT = "b5d4a1b6-0f0a-4c53-9d4b-2f8c3a1e9d70"
TOKEN = "PTtesttoken-secret"
CALL_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


def call_leg(call_id: str = CALL_ID) -> dict[str, Any]:
    """A CallLeg (reference §2.1) as the engine would return it."""
    return {
        "id": call_id,
        "from": "+15559876543",
        "to": "+15551234567",
        "direction": "outbound-api",
        "source": "realtime_api",
        "url": None,
        "charge": 0,
        "created_at": "2024-05-06T12:20:00Z",
        "charge_details": [],
        "status": "queued",
        "duration": None,
        "duration_ms": None,
        "billing_ms": None,
        "type": "relay_sip_call",
        "parent_id": None,
    }


@dataclass
class Executed:
    project_id: str
    command: str
    call_id: str | None
    params: dict[str, Any]


@dataclass
class RecordingEngine:
    """Implements the engine facade by recording what the api hands it.

    ``failures`` maps a command name to the CommandError (or any exception) to raise; ``delay``
    slows execute() down so tests can overlap requests.
    """

    executed: list[Executed] = field(default_factory=list)
    failures: dict[str, BaseException] = field(default_factory=dict)
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    delay: float = 0.0

    async def execute(
        self, project_id: str, command: str, call_id: str | None, params: dict[str, Any]
    ) -> dict[str, Any]:
        self.executed.append(Executed(project_id, command, call_id, params))
        if self.delay:
            await asyncio.sleep(self.delay)
        failure = self.failures.get(command)
        if failure is not None:
            raise failure
        return call_leg(call_id or params.get("id") or CALL_ID)

    async def get_call(self, project_id: str, call_id: str) -> dict[str, Any] | None:
        return self.calls.get(call_id)

    async def get_call_events(self, project_id: str, call_id: str) -> list[dict[str, Any]] | None:
        return self.events.get(call_id)

    def reset(self) -> None:
        self.executed.clear()
        self.failures.clear()
        self.calls.clear()
        self.events.clear()
        self.delay = 0.0


class ServerThread:
    """uvicorn serving ``app`` on 127.0.0.1:<ephemeral> in a background thread."""

    def __init__(self, app: Starlette) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", loop="asyncio"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.base_url = ""

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def client_for(base_url: str, *, auth: tuple[str, str] | None = (PROJECT, TOKEN)) -> httpx.Client:
    return httpx.Client(base_url=base_url, auth=auth, timeout=10, trust_env=False)
