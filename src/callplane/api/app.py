"""The HTTP edge: an ASGI (Starlette) app in front of the call engine.

Routes
    POST /api/calling/calls                   every command (reference §1), Idempotency-Key aware
    GET  /api/calling/calls/{id}              extension: the CallLeg, or 404
    GET  /api/calling/calls/{id}/events       extension: ``{"data": [event, ...]}``, or 404
    GET  /health                              unauthenticated; 503 until ``ready()`` is true

Everything under ``/api`` needs HTTP Basic ``project_id:token`` of any project, and sees only
that project's calls (the edge puts the project id in the request's state).  More routes (recording
downloads) can be added with ``extra_routes=`` or ``app.mount("/api/...", other_app)`` later; a
mount under ``/api`` is behind the same auth.

Failure policy: malformed input is a 400/422 in the reference's shapes; an engine
``CommandError`` maps to its status; only a bug reaches the 500 path, which logs it and answers
``{"error": "Internal Server Error"}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from callplane.api.auth import EdgeMiddleware, FailureLimiter, TokenLookup, project_of
from callplane.api.commands import Command, validate_request
from callplane.api.errors import (
    for_command_error,
    for_problems,
    item,
    json_response,
    simple,
)
from callplane.api.idempotency import (
    MAX_KEY_LENGTH,
    IdempotencyGate,
    IdempotencyStore,
    fingerprint,
)
from callplane.api.schema import UUID_RE
from callplane.engine.facade import CommandError, Engine
from callplane.netpolicy import TargetPolicy

log = logging.getLogger("callplane.api")

MAX_BODY_BYTES: Final = 1024 * 1024  # a SWML document is the biggest legitimate body
# A body trickled in slowly would hold its connection (and a slot of the connection cap,
# api.limits) forever: the whole body must arrive within this many seconds.
BODY_TIMEOUT: Final = 30.0
MAX_JSON_DEPTH: Final = 64


@dataclass(frozen=True)
class Outcome:
    """What answering one command was: whether the engine ran it (only then is the answer
    remembered for its Idempotency-Key), and the seconds a refused client should wait."""

    engine_ran: bool
    retry_after: int | None = None

    @property
    def headers(self) -> dict[str, str] | None:
        return None if self.retry_after is None else {"Retry-After": str(self.retry_after)}


class _BodyTooLarge(Exception):
    pass


class _Unparseable(Exception):
    pass


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN/Infinity; they are not JSON and no engine param wants them.
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400: valid JSON syntax, but no double holds it
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _depth(value: Any, limit: int) -> bool:
    """True if ``value`` nests deeper than ``limit`` (iterative: deep input cannot overflow us)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if level > limit:
            return True
        if isinstance(node, dict):
            stack.extend((v, level + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, level + 1) for v in node)
    return False


def parse_json(raw: bytes) -> Any:
    try:
        value = json.loads(
            raw.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
        )
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise _Unparseable from exc
    if _depth(value, MAX_JSON_DEPTH):
        raise _Unparseable
    return value


async def _read_body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    engine: Engine,
    *,
    project_id: str = "",
    token: str = "",
    tokens: TokenLookup | None = None,
    limiter: FailureLimiter | None = None,
    idempotency: IdempotencyStore | None = None,
    ready: Callable[[], bool] | None = None,
    targets: TargetPolicy | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    body_timeout: float = BODY_TIMEOUT,
) -> Starlette:
    """Build the ASGI app.

    ``idempotency``: where Idempotency-Key responses are remembered; without one the header is
    ignored.  ``ready``: readiness probe for ``/health`` (e.g. "SIP endpoint bound").
    ``tokens`` maps a project id to its token (None if unknown): every project is served. Without
    it, ``project_id``/``token`` is the only project. ``limiter``: how wrong credentials are
    slowed down (default: 10 per source per minute, then 429).
    ``targets``: the outbound target policy (`callplane.netpolicy`); when it denies private
    targets, tap RTP addresses must be public IPv4 and URLs and sip: URIs whose host is a
    non-public address (in any spelling) or a localhost name are ``url_is_unsafe``.
    """
    if tokens is None:
        if not project_id or not token:
            raise ValueError("project_id and token must be non-empty")
        tokens = {project_id: token}.get
    gate = IdempotencyGate(idempotency) if idempotency is not None else None

    async def run_command(project_id: str, parsed: Any) -> tuple[int, dict[str, Any], Outcome]:
        """(status, body, what it was) for one parsed body."""
        outcome = validate_request(parsed, targets=targets)
        if not isinstance(outcome, Command):
            status, body = for_problems(outcome)
            return status, body, Outcome(engine_ran=False)
        try:
            leg = await engine.execute(project_id, outcome.command, outcome.call_id, outcome.params)
        except CommandError as err:
            status, body = for_command_error(err)
            return status, body, Outcome(engine_ran=True, retry_after=err.retry_after)
        if not isinstance(leg, dict):
            raise TypeError(f"engine returned {type(leg).__name__} for {outcome.command}")
        return 200, leg, Outcome(engine_ran=True)

    async def commands(request: Request) -> Response:
        project_id = project_of(request)
        try:
            async with asyncio.timeout(body_timeout):
                raw = await _read_body(request)
        except _BodyTooLarge:
            return json_response(413, simple(413))
        except TimeoutError:
            return json_response(408, simple(408), headers={"Connection": "close"})
        try:
            parsed: Any = parse_json(raw)
        except _Unparseable:
            parsed = _Unparseable

        key = (request.headers.get("idempotency-key") or "").strip()
        if gate is None or not key:
            if parsed is _Unparseable:
                return json_response(400, simple(400))
            status, body, result = await run_command(project_id, parsed)
            return json_response(status, body, headers=result.headers)

        if len(key) > MAX_KEY_LENGTH:
            rule = f"Idempotency-Key must be at most {MAX_KEY_LENGTH} characters"
            bad = item(422, "invalid_parameter", rule, "Idempotency-Key")
            return json_response(422, {"errors": [bad]})

        print_ = fingerprint(None if parsed is _Unparseable else parsed, raw)
        async with gate.hold(project_id, key):
            prior = gate.recall(project_id, key)
            if prior is not None:
                if prior.fingerprint != print_:
                    rule = "Idempotency-Key was already used with a different request body"
                    reused = item(422, "idempotency_key_reused", rule, "Idempotency-Key")
                    return json_response(422, {"errors": [reused]})
                return json_response(
                    prior.status, prior.body, headers={"Idempotent-Replayed": "true"}
                )
            if parsed is _Unparseable:
                return json_response(400, simple(400))
            status, body, result = await run_command(project_id, parsed)
            # A 5xx refusal (callplane full, shutting down) did nothing: the client's retry
            # under the same key must run the command, not replay the refusal.
            if result.engine_ran and status < 500:
                try:
                    gate.remember(project_id, key, status, body, print_)
                except Exception:
                    # The command did run: answering its real result beats a 500 the client
                    # would retry into a second execution.
                    log.exception("idempotency store failed to save key %r", key)
            return json_response(status, body, headers=result.headers)

    async def get_call(request: Request) -> Response:
        call_id = str(request.path_params["call_id"])
        if not UUID_RE.fullmatch(call_id):
            return json_response(404, simple(404))
        leg = await engine.get_call(project_of(request), call_id.lower())
        return json_response(200, leg) if leg is not None else json_response(404, simple(404))

    async def get_call_events(request: Request) -> Response:
        call_id = str(request.path_params["call_id"])
        if not UUID_RE.fullmatch(call_id):
            return json_response(404, simple(404))
        events = await engine.get_call_events(project_of(request), call_id.lower())
        if events is None:
            return json_response(404, simple(404))
        return json_response(200, {"data": events})

    async def health(request: Request) -> Response:
        if ready is not None and not ready():
            return json_response(503, {"status": "starting"})
        return json_response(200, {"status": "ok"})

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        headers = getattr(exc, "headers", None)
        return json_response(status, simple(status), headers=headers)

    routes: list[BaseRoute] = [
        Route("/api/calling/calls", commands, methods=["POST"]),
        Route("/api/calling/calls/{call_id}", get_call, methods=["GET"]),
        Route("/api/calling/calls/{call_id}/events", get_call_events, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        *extra_routes,
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(EdgeMiddleware, tokens=tokens, limiter=limiter)],
        exception_handlers={HTTPException: http_error},
    )
    app.state.engine = engine
    return app
