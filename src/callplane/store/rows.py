"""Row types exchanged with :class:`callplane.store.Store`.

They are TypedDicts rather than dataclasses because the engine already works with plain dicts
(the CallLeg of reference §2.1 is a dict it returns to the api verbatim); a TypedDict gives mypy
the shape without a conversion layer on every read.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

JsonObject = dict[str, Any]


class CallRow(TypedDict):
    """One call leg.

    ``leg`` is the public CallLeg object (reference §2.1) exactly as the api returns it; the store
    copies ``leg["status"]``, ``leg["created_at"]`` and ``leg["parent_id"]`` into indexed columns
    so that listing by status does not have to parse JSON. ``private`` is engine-only state that
    must survive a restart but never reaches the wire (status_url, status_events, SWML, ...).
    """

    id: str
    project_id: str
    leg: JsonObject
    private: NotRequired[JsonObject]


class EventRow(TypedDict):
    """One event of a call, in the order the engine appended it."""

    call_id: str
    seq: int  # 1, 2, 3 ... per call, strictly increasing, never reused
    event_type: str
    payload: JsonObject
    created_at: float  # Unix seconds


class IdempotencyEntry(TypedDict):
    """The stored outcome of a request made with an idempotency key (24 h window)."""

    project_id: str
    key: str
    request_hash: str  # lets the api tell a replay from a different request reusing the key
    status: int  # HTTP status of the stored response
    body: Any  # JSON value of the stored response body
    created_at: float  # Unix seconds


class RecordingRow(TypedDict):
    """A recording file produced by ``calling.record`` / SWML ``record_call``."""

    id: str
    call_id: str
    control_id: str | None
    path: str
    format: str  # "wav" | "mp3"
    duration: float | None  # seconds; None while recording
    size: int | None  # bytes; None while recording
    created_at: float  # Unix seconds
    # Engine-owned facts needed to report the recording if a crash cuts it short (status_url,
    # url, audio settings, start time). Read back only when non-empty.
    meta: NotRequired[JsonObject]


class ProjectRow(TypedDict):
    """A tenant: its calls, recordings and webhooks are visible only with its own token.

    ``token`` authenticates API requests (HTTP Basic ``id:token``); ``signing_key`` signs its
    webhooks. They differ so that a webhook receiver, which holds the key, cannot control calls.
    """

    id: str
    name: str
    token: str
    signing_key: str
    created_at: float  # Unix seconds


OutboxStatus = Literal["pending", "dead"]
OutboxMethod = Literal["GET", "POST"]


class OutboxRow(TypedDict):
    """A webhook delivery waiting in (or given up by) the durable outbox.

    Delivered rows are deleted, so only ``pending`` and ``dead`` exist. ``body`` holds the exact
    bytes that are POSTed (and signed), so a redelivery after a restart is byte-identical; a GET
    row's query string is derived from the same bytes, deterministically.
    """

    id: int  # AUTOINCREMENT: never reused, so it is a stable delivery id for receivers
    ordering_key: str
    url: str
    body: bytes
    created_at: float
    attempts: int
    next_attempt_at: float
    last_error: str | None
    status: OutboxStatus
    # The project whose signing key signs the row when it is sent; None for rows that belong to
    # no project (signed with the outbox's default key).
    project_id: str | None
    method: OutboxMethod  # POST: the body as JSON; GET: the body's fields as a query string
