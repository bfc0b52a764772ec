"""The exception family raised by the client."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

# Header names that carry the server's request id, in preference order (matched case-insensitively).
_REQUEST_ID_HEADERS = ("x-request-id", "x-signalwire-request-id", "request-id", "x-amzn-requestid")
_MAX_DETAIL = 500


class CallplaneError(Exception):
    """Base class of every error raised by the callplane client."""


class RestError(CallplaneError):
    """A command failed: the server answered non-2xx, or a 2xx whose body is not a JSON object.

    Attributes:
        status_code: HTTP status, or ``None`` when no response arrived (see `TransportError`).
        body: the decoded response body: parsed JSON when it parses, else the raw text.
        url: the full URL the request went to.
        method: the HTTP method (``"POST"``).
        headers: response headers, names lower-cased (empty when no response arrived).
        request_id: the server's request id from the response headers, if any.
        command: the Calling API command that was sent, e.g. ``"calling.play"``.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None,
        body: Any,
        url: str,
        method: str,
        headers: Mapping[str, str] | None = None,
        command: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body
        self.url = url
        self.method = method
        self.headers: dict[str, str] = {k.lower(): v for k, v in (headers or {}).items()}
        self.request_id = request_id_of(self.headers)
        self.command = command

    @property
    def errors(self) -> list[dict[str, Any]]:
        """The validation items of a 422 body (``{"errors": [{type, code, message, attribute}]}``).

        Empty when the body has no ``errors`` list.
        """
        if isinstance(self.body, dict):
            items = self.body.get("errors")
            if isinstance(items, list):
                return [item for item in items if isinstance(item, dict)]
        return []


class TransportError(RestError):
    """The request never got a response: connection refused, DNS, TLS, reset or timeout.

    ``status_code`` is ``None``, ``body`` describes the failure and ``headers`` is empty.
    """

    def __init__(
        self, reason: str, *, url: str, method: str, command: str | None = None, attempts: int = 1
    ) -> None:
        what = f"{method} {url}"
        if command:
            what += f" ({command})"
        message = f"{what} failed to reach the server: {reason}"
        if attempts > 1:
            message += f" (after {attempts} attempts)"
        super().__init__(
            message, status_code=None, body=reason, url=url, method=method, command=command
        )
        self.attempts = attempts


def request_id_of(headers: Mapping[str, str]) -> str | None:
    """The first request-id header present (names matched case-insensitively)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return next((lowered[name] for name in _REQUEST_ID_HEADERS if name in lowered), None)


def describe_body(body: Any) -> str:
    """A one-line summary of an error body for exception messages."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors:
        parts = []
        for item in errors:
            if not isinstance(item, dict):
                parts.append(str(item))
                continue
            part = str(item.get("message") or item.get("code") or item)
            code, attribute = item.get("code"), item.get("attribute")
            if code and code != part:
                part = f"{code}: {part}"
            if attribute:
                part += f" [{attribute}]"
            parts.append(part)
        text = "; ".join(parts)
    elif isinstance(body, dict) and isinstance(body.get("error"), str):
        text = body["error"]
    elif isinstance(body, str):
        text = body.strip()
    else:
        text = json.dumps(body, ensure_ascii=False, default=str)
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"
