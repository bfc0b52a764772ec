"""The outer edge, as one pure ASGI middleware: request ids, HTTP Basic auth, last-resort 500.

Everything under ``/api`` is protected — including apps mounted later (recording downloads),
so they inherit auth by living under ``/api``.  ``/health`` stays open for probes.

Projects: the Basic user is a project id and the password its token; ``tokens(project_id)``
gives the token of a project (None if unknown), so every project's credentials are accepted and
a project added or removed while serving counts at once. The authenticated project id is put in
``scope["state"]["project_id"]``: everything behind the edge is scoped to it.

Guessing: a source (client address) that sends :data:`MAX_FAILURES` wrong credentials within
:data:`FAILURE_WINDOW` seconds gets 429 with ``Retry-After`` for every ``/api`` request until
the oldest failure ages out, whatever credentials it sends (otherwise the 429 would still let it
tell a right guess from a wrong one). Other sources are not affected.

Unexpected exceptions are answered here with ``{"error": "Internal Server Error"}`` and logged
once.  (Starlette's own ServerErrorMiddleware re-raises after answering, which makes uvicorn
log the error a second time and drop the keep-alive connection under the client.)
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import math
import re
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Final

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from callplane.api.errors import json_response, simple

log = logging.getLogger("callplane.api")

PROTECTED_PREFIX: Final = "/api"
REALM_HEADER: Final = {"WWW-Authenticate": 'Basic realm="callplane"'}
# An incoming request id is echoed only when it looks harmless in a header and a log line.
SAFE_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


MAX_FAILURES: Final = 10
FAILURE_WINDOW: Final = 60.0
# Sources remembered at once; beyond that the least recently failing is forgotten, so a flood
# from many addresses cannot grow memory without bound.
MAX_SOURCES: Final = 10_000
# Compared against when the project is unknown, so an unknown project costs the same time as a
# wrong token.
_NO_TOKEN: Final = b"\x00" * 50

TokenLookup = Callable[[str], str | None]


def authenticate(header: str | None, tokens: TokenLookup) -> str | None:
    """The project id an ``Authorization: Basic ...`` header proves, or None.

    The token comparison is constant-time and runs for an unknown project too, so timing does
    not tell how much of a token matched, nor (beyond one indexed lookup) whether the project
    exists.
    """
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw_user, sep, password = base64.b64decode(value.strip(), validate=True).partition(b":")
        user = raw_user.decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    if not sep or not user:
        return None
    token = tokens(user)
    expected = _NO_TOKEN if token is None else token.encode("utf-8")
    password_ok = hmac.compare_digest(password, expected)
    return user if password_ok and token is not None else None


def credentials_ok(header: str | None, project_id: str, token: str) -> bool:
    """Constant-time check of an ``Authorization: Basic ...`` header against one project."""
    return authenticate(header, {project_id: token}.get) == project_id


def project_of(request: Request) -> str:
    """The project the edge authenticated for this request (routes under ``/api`` only)."""
    return str(request.scope["state"]["project_id"])


class FailureLimiter:
    """Counts wrong credentials per source in a sliding window (sans-IO: times are passed in)."""

    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window: float = FAILURE_WINDOW,
        max_sources: int = MAX_SOURCES,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.max_sources = max_sources
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, source: str, now: float) -> float | None:
        """Seconds the source must wait before it may try again, or None if it may now."""
        times = self._failures.get(source)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[source]
            return None
        if len(times) < self.max_failures:
            return None
        return times[0] + self.window - now

    def failed(self, source: str, now: float) -> None:
        times = self._failures.pop(source, None)
        if times is None:
            times = deque(maxlen=self.max_failures)
            while len(self._failures) >= self.max_sources:
                del self._failures[next(iter(self._failures))]
        times.append(now)
        self._failures[source] = times  # re-inserted: dict order is least recently failing first


class EdgeMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: TokenLookup,
        limiter: FailureLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.limiter = limiter if limiter is not None else FailureLimiter()
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        incoming = headers.get("x-request-id", "")
        request_id = incoming if SAFE_REQUEST_ID.fullmatch(incoming) else str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = request_id

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode("latin-1")),
                ]
            await send(message)

        path: str = scope.get("path", "")
        protected = path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/")
        if protected:
            client = scope.get("client")
            source = str(client[0]) if client else ""
            now = self.clock()
            wait = self.limiter.retry_after(source, now)
            if wait is not None:
                retry = {"Retry-After": str(max(1, math.ceil(wait)))}
                await json_response(429, simple(429), headers=retry)(scope, receive, send_with_id)
                return
            header = headers.get("authorization")
            project_id = authenticate(header, self.tokens)
            if project_id is None:
                if header:  # no credentials at all is not a guess
                    self.limiter.failed(source, now)
                response = json_response(401, simple(401), headers=REALM_HEADER)
                await response(scope, receive, send_with_id)
                return
            scope["state"]["project_id"] = project_id
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception(
                "unhandled error on %s %s (request id %s)", scope.get("method"), path, request_id
            )
            if started:
                raise  # too late for a clean answer; let the server close the connection
            await json_response(500, simple(500))(scope, receive, send_with_id)
