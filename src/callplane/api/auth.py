"""The outer edge, as one pure ASGI middleware: request ids, HTTP Basic auth, last-resort 500.

Everything under ``/api`` is protected — including apps mounted later (recording downloads),
so they inherit auth by living under ``/api``.  ``/health`` stays open for probes.

Unexpected exceptions are answered here with ``{"error": "Internal Server Error"}`` and logged
once.  (Starlette's own ServerErrorMiddleware re-raises after answering, which makes uvicorn
log the error a second time and drop the keep-alive connection under the client.)
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import re
import uuid
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from callplane.api.errors import json_response, simple

log = logging.getLogger("callplane.api")

PROTECTED_PREFIX: Final = "/api"
REALM_HEADER: Final = {"WWW-Authenticate": 'Basic realm="callplane"'}
# An incoming request id is echoed only when it looks harmless in a header and a log line.
SAFE_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def credentials_ok(header: str | None, project_id: str, token: str) -> bool:
    """Constant-time check of an ``Authorization: Basic ...`` header.

    Both halves are always compared (no early exit) so timing reveals neither which half was
    wrong nor how much of it matched.
    """
    if not header:
        return False
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    user, sep, password = decoded.partition(b":")
    if not sep:
        return False
    user_ok = hmac.compare_digest(user, project_id.encode("utf-8"))
    password_ok = hmac.compare_digest(password, token.encode("utf-8"))
    return user_ok & password_ok


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, *, project_id: str, token: str) -> None:
        self.app = app
        self.project_id = project_id
        self.token = token

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
        if protected and not credentials_ok(
            headers.get("authorization"), self.project_id, self.token
        ):
            response = json_response(401, simple(401), headers=REALM_HEADER)
            await response(scope, receive, send_with_id)
            return
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception(
                "unhandled error on %s %s (request id %s)", scope.get("method"), path, request_id
            )
            if started:
                raise  # too late for a clean answer; let the server close the connection
            await json_response(500, simple(500))(scope, receive, send_with_id)
