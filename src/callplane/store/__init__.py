"""Persistence (SQLite): calls, call events, idempotency keys, recordings, the webhook outbox.

Imports nothing from the rest of callplane (see docs/architecture.md).
"""

from callplane.store.rows import (
    CallRow,
    EventRow,
    IdempotencyEntry,
    JsonObject,
    OutboxRow,
    OutboxStatus,
    RecordingRow,
)
from callplane.store.sqlite import IDEMPOTENCY_TTL, SchemaVersionError, Store

__all__ = [
    "IDEMPOTENCY_TTL",
    "CallRow",
    "EventRow",
    "IdempotencyEntry",
    "JsonObject",
    "OutboxRow",
    "OutboxStatus",
    "RecordingRow",
    "SchemaVersionError",
    "Store",
]
