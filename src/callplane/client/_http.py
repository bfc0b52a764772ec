"""I/O-free pieces shared by the sync and async clients.

Configuration, request encoding, response decoding and the retry policy live here; the two clients
only add the network call and the sleep.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from callplane._version import __version__
from callplane.client._errors import RestError, TransportError, describe_body, request_id_of

COMMANDS_PATH = "/api/calling/calls"
METHOD = "POST"
# Only statuses that promise the command was not executed are retried: a command is a POST.
RETRY_STATUSES = frozenset({429, 503})

USER_AGENT = f"callplane-python/{__version__} httpx/{httpx.__version__}"

_ENV_PROJECT = "SIGNALWIRE_PROJECT_ID"
_ENV_TOKEN = "SIGNALWIRE_API_TOKEN"
_ENV_SPACE = "SIGNALWIRE_SPACE"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a client needs, resolved and validated once at construction."""

    project: str
    base_url: str
    headers: Mapping[str, str]
    timeout: float
    retries: int
    retry_backoff: float
    retry_max_delay: float
    max_connections: int

    @property
    def url(self) -> str:
        return self.base_url + COMMANDS_PATH

    def httpx_options(self) -> dict[str, Any]:
        """Keyword arguments for ``httpx.Client``."""
        return {
            "base_url": self.base_url,
            "headers": dict(self.headers),
            "timeout": self.timeout,
            # Idle connections are kept up to the pool size, so a burst of concurrent commands
            # does not close and reopen connections on every round.
            "limits": httpx.Limits(
                max_connections=self.max_connections,
                max_keepalive_connections=self.max_connections,
            ),
        }

    def retry_delay(
        self, attempt: int, status: int | None, headers: Mapping[str, str] | None = None
    ) -> float | None:
        """Seconds to wait before retrying, or ``None`` when this outcome is final.

        ``attempt`` counts from 0; ``status`` is ``None`` for a transport failure.
        """
        if attempt >= self.retries:
            return None
        if status is not None:
            if status not in RETRY_STATUSES:
                return None
            requested = parse_retry_after((headers or {}).get("retry-after"))
            if requested is not None:
                # Retrying sooner than the server asked would only be refused again.
                return requested if requested <= self.retry_max_delay else None
        ceiling = min(self.retry_max_delay, self.retry_backoff * 2**attempt)
        return random.uniform(ceiling / 2, ceiling)


def resolve_settings(
    project: str | None,
    token: str | None,
    host: str | None,
    *,
    timeout: float,
    retries: int,
    retry_backoff: float,
    retry_max_delay: float,
    max_connections: int,
) -> Settings:
    project = project or os.environ.get(_ENV_PROJECT)
    token = token or os.environ.get(_ENV_TOKEN)
    host = host or os.environ.get(_ENV_SPACE)
    if not (project and token and host):
        missing = [
            f"{what} (argument `{arg}` or env {env})"
            for value, what, arg, env in (
                (project, "project ID", "project", _ENV_PROJECT),
                (token, "API token", "token", _ENV_TOKEN),
                (host, "space host", "host", _ENV_SPACE),
            )
            if not value
        ]
        raise ValueError("callplane client is missing " + ", ".join(missing))
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries!r}")
    if retry_backoff < 0 or retry_max_delay < 0:
        raise ValueError("retry_backoff and retry_max_delay must be >= 0")
    if max_connections < 1:
        raise ValueError(f"max_connections must be >= 1, got {max_connections!r}")
    credentials = base64.b64encode(f"{project}:{token}".encode()).decode("ascii")
    return Settings(
        project=project,
        base_url=base_url_for(host),
        headers={
            "Authorization": f"Basic {credentials}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        },
        timeout=timeout,
        retries=retries,
        retry_backoff=retry_backoff,
        retry_max_delay=retry_max_delay,
        max_connections=max_connections,
    )


def base_url_for(host: str) -> str:
    """The base URL for ``host``: a full ``http(s)://`` URL, or a bare ``host[:port]``.

    A bare loopback host (``localhost``, ``127.x.x.x``, ``::1``) is a local server and gets plain
    ``http``; every other bare host is a hosted space and gets ``https``.
    """
    host = host.strip()
    if "://" in host:
        if host.split("://", 1)[0].lower() not in ("http", "https"):
            raise ValueError(f"host must be http(s)://… or a bare host[:port], got {host!r}")
        url = host.rstrip("/")
    elif not host or any(c in host for c in "/?#@ "):
        raise ValueError(
            f"host must be a bare host[:port] like 'example.signalwire.com', got {host!r}"
        )
    else:
        if host.startswith("["):
            hostname, netloc = host[1 : host.find("]")], host
        elif host.count(":") > 1:
            hostname, netloc = host, f"[{host}]"  # a bare IPv6 address, no port
        else:
            hostname, netloc = host.partition(":")[0], host
        url = f"{'http' if _is_loopback(hostname) else 'https'}://{netloc}"
    try:
        valid = bool(httpx.URL(url).host)
    except httpx.InvalidURL:
        valid = False
    if not valid:
        raise ValueError(f"host {host!r} does not make a valid URL ({url!r})")
    return url


def _is_loopback(hostname: str) -> bool:
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` value (delta-seconds or HTTP-date); ``None`` if unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def encode_command(command: str, call_id: str | None, params: Mapping[str, Any]) -> bytes:
    body: dict[str, Any] = {"command": command}
    if call_id is not None:
        body["id"] = call_id
    body["params"] = params
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def decode_response(
    status: int, headers: Mapping[str, str], content: bytes, url: str, command: str
) -> dict[str, Any]:
    """The JSON object of a 2xx response (``{}`` when empty); raises `RestError` otherwise.

    ``headers`` must answer lower-case names.
    """
    if not 200 <= status < 300:
        raise _response_error(status, headers, _error_body(content), url, command)
    if status == 204 or not content:
        return {}
    if command == "calling.ai_sidecar.status" and content.startswith(b"+OK"):
        return _status_counters(content.decode("utf-8", "replace"))
    try:
        data = json.loads(content)
    except ValueError:
        text = content.decode("utf-8", "replace")
        raise _response_error(
            status, headers, text, url, command, "with a body that is not JSON"
        ) from None
    if not isinstance(data, dict):
        raise _response_error(
            status, headers, data, url, command, "with JSON that is not an object"
        )
    return data


def transport_error(reason: str, command: str, url: str, attempts: int) -> TransportError:
    return TransportError(reason, url=url, method=METHOD, command=command, attempts=attempts)


def _status_counters(line: str) -> dict[str, Any]:
    # Reference §1.2: ai_sidecar.status answers "+OK running=1 ticks=42 ..." rather than JSON.
    counters: dict[str, Any] = {}
    for field in line.split()[1:]:
        key, sep, value = field.partition("=")
        if sep:
            counters[key] = int(value) if value.lstrip("-").isdigit() else value
    return counters


def _error_body(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return content.decode("utf-8", "replace")


def _response_error(
    status: int,
    headers: Mapping[str, str],
    body: Any,
    url: str,
    command: str,
    problem: str | None = None,
) -> RestError:
    message = f"{METHOD} {url} ({command}) returned {status}"
    if problem:
        message += f" {problem}"
    detail = describe_body(body)
    if detail:
        message += f": {detail}"
    request_id = request_id_of(headers)
    if request_id:
        message += f" (request-id: {request_id})"
    return RestError(
        message,
        status_code=status,
        body=body,
        url=url,
        method=METHOD,
        headers=headers,
        command=command,
    )
