"""Persistence (SQLite): projects, calls, call events, idempotency keys, recordings, the webhook
outbox.

Imports nothing from the rest of callplane (see docs/architecture.md).
"""

from callplane.store.projects import import_legacy_credentials, new_project, prepare_projects
from callplane.store.rows import (
    CallRow,
    EventRow,
    IdempotencyEntry,
    JsonObject,
    OutboxMethod,
    OutboxRow,
    OutboxStatus,
    ProjectRow,
    RecordingRow,
)
from callplane.store.sqlite import IDEMPOTENCY_TTL, SchemaVersionError, Store

__all__ = [
    "IDEMPOTENCY_TTL",
    "CallRow",
    "EventRow",
    "IdempotencyEntry",
    "JsonObject",
    "OutboxMethod",
    "OutboxRow",
    "OutboxStatus",
    "ProjectRow",
    "RecordingRow",
    "SchemaVersionError",
    "Store",
    "import_legacy_credentials",
    "new_project",
    "prepare_projects",
]
