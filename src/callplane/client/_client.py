"""`RestClient` and `AsyncRestClient`: configuration, connection pool, retries."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self

import httpx

from callplane._http1 import ConnectionFailed, ConnectionPool
from callplane.client._calling import Calling
from callplane.client._http import (
    COMMANDS_PATH,
    Settings,
    decode_response,
    encode_command,
    resolve_settings,
    transport_error,
)


class _ClientBase:
    __slots__ = ("_settings",)

    def __init__(
        self,
        project: str | None,
        token: str | None,
        host: str | None,
        *,
        timeout: float,
        retries: int,
        retry_backoff: float,
        retry_max_delay: float,
        max_connections: int,
    ) -> None:
        self._settings: Settings = resolve_settings(
            project,
            token,
            host,
            timeout=timeout,
            retries=retries,
            retry_backoff=retry_backoff,
            retry_max_delay=retry_max_delay,
            max_connections=max_connections,
        )

    @property
    def base_url(self) -> str:
        """Where commands go: ``<base_url>/api/calling/calls``."""
        return self._settings.base_url

    @property
    def project(self) -> str:
        return self._settings.project

    def __repr__(self) -> str:
        return f"{type(self).__name__}(project={self.project!r}, base_url={self.base_url!r})"


def _request(
    command: str, call_id: str | None, params: dict[str, Any]
) -> tuple[bytes, dict[str, str]]:
    # One key per logical command, reused by its retries, so the server can deduplicate them.
    return encode_command(command, call_id, params), {"Idempotency-Key": str(uuid.uuid4())}


class RestClient(_ClientBase):
    """Synchronous client for the Calling API of a hosted space or a local callplane server.

    Args:
        project: project ID (Basic auth user); default env ``SIGNALWIRE_PROJECT_ID``.
        token: API token (Basic auth password); default env ``SIGNALWIRE_API_TOKEN``.
        host: ``example.signalwire.com``, ``127.0.0.1:8080`` (loopback hosts use plain http) or a
            full ``http(s)://`` base URL; default env ``SIGNALWIRE_SPACE``.
        timeout: seconds allowed for each network step of an attempt (connect, write, read).
        retries: extra attempts after a 429, a 503 or a transport failure (default none).
        retry_backoff: base of the exponential backoff between retries, in seconds.
        retry_max_delay: longest wait between retries; a longer ``Retry-After`` ends the retries.
        max_connections: size of the connection pool.

    Raises:
        ValueError: a credential or the host is missing, or a setting is invalid.

    Use it as a context manager, or call `close` when done. Commands live on ``client.calling``.
    """

    __slots__ = ("_http", "calling")

    def __init__(
        self,
        project: str | None = None,
        token: str | None = None,
        host: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 0,
        retry_backoff: float = 0.5,
        retry_max_delay: float = 60.0,
        max_connections: int = 100,
    ) -> None:
        super().__init__(
            project,
            token,
            host,
            timeout=timeout,
            retries=retries,
            retry_backoff=retry_backoff,
            retry_max_delay=retry_max_delay,
            max_connections=max_connections,
        )
        self._http = httpx.Client(**self._settings.httpx_options())
        self.calling: Calling[dict[str, Any]] = Calling(self._send)

    def _send(self, command: str, call_id: str | None, params: dict[str, Any]) -> dict[str, Any]:
        content, headers = _request(command, call_id, params)
        settings = self._settings
        attempt = 0
        while True:
            try:
                response = self._http.post(COMMANDS_PATH, content=content, headers=headers)
            except httpx.RequestError as exc:
                delay = settings.retry_delay(attempt, None)
                if delay is None:
                    reason = f"{type(exc).__name__}: {exc or 'no details'}"
                    raise transport_error(reason, command, settings.url, attempt + 1) from exc
            else:
                delay = settings.retry_delay(attempt, response.status_code, response.headers)
                if delay is None:
                    return decode_response(
                        response.status_code,
                        response.headers,
                        response.content,
                        str(response.url),
                        command,
                    )
            time.sleep(delay)
            attempt += 1

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncRestClient(_ClientBase):
    """Asynchronous client for the Calling API; ``await client.calling.play(...)``.

    Takes the same arguments as `RestClient`; ``timeout`` bounds each attempt as a whole. Use
    ``async with``, or ``await client.aclose()``. Commands may run concurrently (e.g. with
    ``asyncio.gather``): up to ``max_connections`` are in flight, the rest wait for a connection.
    It speaks HTTP/1.1 over asyncio directly for throughput (see ``callplane._http1``), so it does
    not use HTTP proxies from the environment; the sync client does.
    """

    __slots__ = ("_pool", "calling")

    def __init__(
        self,
        project: str | None = None,
        token: str | None = None,
        host: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 0,
        retry_backoff: float = 0.5,
        retry_max_delay: float = 60.0,
        max_connections: int = 100,
    ) -> None:
        super().__init__(
            project,
            token,
            host,
            timeout=timeout,
            retries=retries,
            retry_backoff=retry_backoff,
            retry_max_delay=retry_max_delay,
            max_connections=max_connections,
        )
        self._pool = ConnectionPool(
            self._settings.base_url,
            headers=dict(self._settings.headers),
            max_connections=self._settings.max_connections,
            timeout=self._settings.timeout,
        )
        self.calling: Calling[Coroutine[Any, Any, dict[str, Any]]] = Calling(self._send)

    async def _send(
        self, command: str, call_id: str | None, params: dict[str, Any]
    ) -> dict[str, Any]:
        content, headers = _request(command, call_id, params)
        settings = self._settings
        attempt = 0
        while True:
            try:
                response = await self._pool.post(COMMANDS_PATH, content, headers)
            except ConnectionFailed as exc:
                delay = settings.retry_delay(attempt, None)
                if delay is None:
                    raise transport_error(str(exc), command, settings.url, attempt + 1) from exc
            else:
                delay = settings.retry_delay(attempt, response.status, response.headers)
                if delay is None:
                    return decode_response(
                        response.status, response.headers, response.content, settings.url, command
                    )
            await asyncio.sleep(delay)
            attempt += 1

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._pool.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
