"""A webhook receiver on loopback for tests: it records every POST, verifies signatures and
serves SWML documents (what `CallplaneServer.add_route` uses for inline SWML)."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

HOST = "127.0.0.1"
SIGNATURE_HEADER = "x-signalwire-signature"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def signature(signing_key: str, url: str, body: bytes) -> str:
    """``X-SignalWire-Signature``: hex HMAC-SHA256 of the URL followed by the body."""
    return hmac.new(signing_key.encode(), url.encode() + body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Webhook:
    path: str
    url: str
    body: Any
    raw: bytes
    headers: dict[str, str]
    at: float

    @property
    def type(self) -> str | None:
        return self.body.get("event_type") if isinstance(self.body, dict) else None

    @property
    def params(self) -> dict[str, Any]:
        params = self.body.get("params") if isinstance(self.body, dict) else None
        return params if isinstance(params, dict) else {}

    def verify(self, signing_key: str) -> bool:
        given = self.headers.get(SIGNATURE_HEADER, "")
        return hmac.compare_digest(given, signature(signing_key, self.url, self.raw))


class WebhookReceiver:
    """``url`` to give as ``status_url``; ``events(type=...)``; ``wait_for(type, predicate)``.

    With ``signing_key`` (the project's webhook signing key), a POST whose signature does not
    verify is answered 401 and kept in ``rejected`` instead of ``events``."""

    def __init__(self, signing_key: str | None = None) -> None:
        self.signing_key = signing_key
        self.port = free_port()
        self._hooks: list[Webhook] = []
        self.rejected: list[Webhook] = []
        self._documents: dict[str, Any] = {}
        self._cond = threading.Condition()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self.url_for("/webhooks")

    def url_for(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def serve_swml(self, path: str, document: Any) -> str:
        """Serve ``document`` (a dict, or JSON/YAML text) at ``path``; returns its URL."""
        self._documents[path] = document
        return self.url_for(path)

    async def _handle(self, request: Request) -> Response:
        path = request.url.path
        document = self._documents.get(path)
        if document is not None:
            if isinstance(document, str):
                return Response(document, media_type="application/json")
            return JSONResponse(document)
        raw = await request.body()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        hook = Webhook(
            path,
            self.url_for(path) + (f"?{request.url.query}" if request.url.query else ""),
            body,
            raw,
            dict(request.headers),
            time.time(),
        )
        ok = self.signing_key is None or hook.verify(self.signing_key)
        with self._cond:
            (self._hooks if ok else self.rejected).append(hook)
            self._cond.notify_all()
        return JSONResponse({"ok": True}) if ok else JSONResponse({"error": "bad signature"}, 401)

    def start(self) -> WebhookReceiver:
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["GET", "POST"])])
        config = uvicorn.Config(app, host=HOST, port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the webhook receiver did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    def events(self, type: str | None = None, *, call_id: str | None = None) -> list[Webhook]:
        with self._cond:
            hooks = list(self._hooks)
        return [
            h
            for h in hooks
            if (type is None or h.type == type)
            and (call_id is None or h.params.get("call_id") == call_id)
        ]

    def wait_for(
        self,
        type: str | None = None,
        predicate: Callable[[Webhook], bool] | None = None,
        timeout: float = 10.0,
    ) -> Webhook:
        """The first webhook (received before or during the wait) of ``type`` that satisfies
        ``predicate``; AssertionError listing what did arrive after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for hook in self._hooks:
                    if (type is None or hook.type == type) and (
                        predicate is None or predicate(hook)
                    ):
                        return hook
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [f"{h.type} {json.dumps(h.params)[:200]}" for h in self._hooks]
                    raise AssertionError(
                        f"no {type or 'webhook'} matching within {timeout} s; received:\n  "
                        + ("\n  ".join(seen) or "(nothing)")
                    )
                self._cond.wait(remaining)
