"""Idempotency-Key handling for ``POST /api/calling/calls``.

A request carrying an ``Idempotency-Key`` header that this project already used in the last 24 h
gets the original response (status and body) replayed, without the engine running again.
Extension (not in the reference): reusing a key with a *different* request body answers 422 with
code ``idempotency_key_reused``, because silently replaying the response of another command would
be worse than an error.

Only responses the engine produced are remembered (200 and engine ``CommandError`` s below 500):
validation failures, auth failures and 5xx answers are not, so a client can fix its request, or
retry a crash or a 503 (callplane full: no RTP ports; it comes with ``Retry-After``) with the
same key, as the client's retries do.

The store sees an opaque record per (project, key): ``status`` and a ``body`` that wraps the
response body with the request fingerprint, ``{"fingerprint": <sha256 hex>, "body": {...}}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

WINDOW_SECONDS: Final = 24 * 3600
MAX_KEY_LENGTH: Final = 255


class IdempotencyStore(Protocol):
    """Where remembered responses live. The SQLite store (``store.idempotency_*``) fits this."""

    def get(self, project_id: str, key: str) -> tuple[int, dict[str, Any]] | None:
        """The stored (status, body) if ``key`` was used by ``project_id`` in the last 24 h."""
        ...

    def put(self, project_id: str, key: str, status: int, body: dict[str, Any]) -> None: ...


@dataclass
class MemoryIdempotencyStore:
    """In-process store for tests and single-process development; entries expire after 24 h."""

    window: float = WINDOW_SECONDS
    clock: Callable[[], float] = time.monotonic
    _rows: dict[tuple[str, str], tuple[float, int, dict[str, Any]]] = field(default_factory=dict)

    def get(self, project_id: str, key: str) -> tuple[int, dict[str, Any]] | None:
        row = self._rows.get((project_id, key))
        if row is None:
            return None
        stored_at, status, body = row
        if self.clock() - stored_at > self.window:
            del self._rows[(project_id, key)]
            return None
        return status, body

    def put(self, project_id: str, key: str, status: int, body: dict[str, Any]) -> None:
        self._rows[(project_id, key)] = (self.clock(), status, body)


def fingerprint(parsed_body: Any, raw: bytes) -> str:
    """Hash of the request *meaning*: key order and whitespace do not make two bodies differ."""
    if parsed_body is not None:
        try:
            text = json.dumps(parsed_body, sort_keys=True, separators=(",", ":"))
            return hashlib.sha256(text.encode("utf-8")).hexdigest()
        except (TypeError, ValueError, RecursionError):
            pass
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class Remembered:
    status: int
    body: dict[str, Any]
    fingerprint: str


class IdempotencyGate:
    """Serialises requests that share (project, key) and reads/writes the store.

    Concurrent duplicates: the first holder of the per-key lock runs the command; the others
    wait on the lock and then find its stored response.  Locks are dropped when nobody holds or
    waits for them, so the table does not grow with the number of keys ever seen.
    """

    def __init__(self, store: IdempotencyStore) -> None:
        self.store = store
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, project_id: str, key: str) -> AsyncIterator[None]:
        slot = (project_id, key)
        lock, users = self._locks.get(slot, (asyncio.Lock(), 0))
        self._locks[slot] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[slot]
            if users <= 1:
                del self._locks[slot]
            else:
                self._locks[slot] = (lock, users - 1)

    def recall(self, project_id: str, key: str) -> Remembered | None:
        found = self.store.get(project_id, key)
        if found is None:
            return None
        status, wrapped = found
        body = wrapped.get("body") if isinstance(wrapped, dict) else None
        if not isinstance(body, dict):
            return None  # not written by us (or corrupted): behave as if unseen
        return Remembered(status, body, str(wrapped.get("fingerprint", "")))

    def remember(
        self, project_id: str, key: str, status: int, body: dict[str, Any], print_: str
    ) -> None:
        self.store.put(project_id, key, status, {"fingerprint": print_, "body": body})
