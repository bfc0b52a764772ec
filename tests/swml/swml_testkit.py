"""Shared helpers for the SWML tests: a recording SwmlHost and a real local HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette

from callplane.engine.swml import SwmlInterpreter, SwmlMethodNotSupported, SwmlOutcome

CALL = {
    "call_id": "c0ffee00-0000-4000-8000-000000000001",
    "node_id": "node-1",
    "segment_id": "seg-1",
    "call_state": "answered",
    "direction": "inbound",
    "type": "phone",
    "from": "+15551230000",
    "to": "+15559870000",
    "headers": [{"name": "X-Account", "value": "acme"}],
    "project_id": "p-1",
    "space_id": "s-1",
}


class RecordingHost:
    """The contract boundary of the interpreter: records calls, answers with canned variables.

    `results[name]` is a dict of variables to return, or a callable(params) -> dict.
    `delays[name]` makes the method take that long (seconds) so cancellation can be tested.
    """

    def __init__(
        self,
        results: dict[str, Any] | None = None,
        *,
        unsupported: set[str] | None = None,
        delays: dict[str, float] | None = None,
    ) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.results = results or {}
        self.unsupported = unsupported or set()
        self.delays = delays or {}
        self.cancelled: list[str] = []
        self.started = asyncio.Event()

    async def run_method(self, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
        self.calls.append((name, params))
        self.started.set()
        if name in self.unsupported:
            raise SwmlMethodNotSupported(name)
        delay = self.delays.get(name)
        if delay:
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                self.cancelled.append(name)
                raise
        result = self.results.get(name)
        if callable(result):
            produced: dict[str, Any] | None = result(params)
            return produced
        return result

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def params_of(self, name: str) -> list[dict[str, Any]]:
        return [params for n, params in self.calls if n == name]


async def run_script(
    document: Any,
    host: RecordingHost | None = None,
    **kwargs: Any,
) -> tuple[SwmlOutcome, RecordingHost, SwmlInterpreter]:
    host = host or RecordingHost()
    kwargs.setdefault("call", CALL)
    interpreter = SwmlInterpreter(document, host, **kwargs)
    outcome = await asyncio.wait_for(interpreter.run(), timeout=10)
    return outcome, host, interpreter


def main(*methods: Any, **sections: list[Any]) -> dict[str, Any]:
    """A document whose main section is `methods`, plus named `sections`."""
    return {"version": "1.0.0", "sections": {"main": list(methods), **sections}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serve(app_factory: Callable[[], Starlette]) -> AsyncIterator[str]:
    """Run a Starlette app on a real 127.0.0.1 socket for the duration of the block."""
    port = _free_port()
    config = uvicorn.Config(
        app_factory(),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    else:  # pragma: no cover
        raise RuntimeError("test HTTP server did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=5)
