"""SQLite persistence for projects, calls, call events, idempotency keys, recordings and the webhook
outbox.

Design notes (why it looks like this):

* One connection, used from the asyncio loop thread only. SQLite statements on a small indexed table
  take tens of microseconds, far less than a context switch to a worker thread would cost, so the
  store is synchronous and callers do not ``await`` it.
* Autocommit (``isolation_level=None``): every write method is one statement and therefore one
  committed transaction. Nothing the engine was told is saved can be lost to a process crash.
* The database file is made owner-only (0600) when opened; SQLite gives its -wal and -shm files
  the database's mode. It holds every project's token.
* WAL + ``synchronous=NORMAL``: a commit appends to the WAL without an fsync, which is what makes a
  commit per write cheap (see bench/bench_webhooks.py). WAL content survives ``kill -9`` of the
  process (it is in the OS page cache); only an OS crash or power cut can lose the last commits
  before the next checkpoint. Open with ``synchronous="FULL"`` if that matters more than speed.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Self

from callplane.store import schema
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

IDEMPOTENCY_TTL = 24 * 3600.0
"""Seconds an idempotency key is honoured; older entries are ignored, replaced and pruned."""

# Pruning on every put would be a wasted DELETE per request; once every few minutes keeps the table
# bounded (entries are ignored by age anyway, so pruning late is harmless).
_PRUNE_INTERVAL = 300.0


class SchemaVersionError(RuntimeError):
    """The database was written by a newer callplane (its schema version is unknown here)."""


def _dumps(value: Any) -> str:
    # Compact and UTF-8 (no \\u escapes): smaller rows, and the JSON is only ever read back by us.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _iso_now(clock: Callable[[], float]) -> str:
    return datetime.fromtimestamp(clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_OUTBOX_COLUMNS = (
    "id, ordering_key, url, body, created_at, attempts, next_attempt_at, last_error, status,"
    " project_id, method"
)


def _outbox_row(r: tuple[Any, ...]) -> OutboxRow:
    return OutboxRow(
        id=r[0],
        ordering_key=r[1],
        url=r[2],
        body=bytes(r[3]),
        created_at=r[4],
        attempts=r[5],
        next_attempt_at=r[6],
        last_error=r[7],
        status=r[8],
        project_id=r[9],
        method=r[10],
    )


_RECORDING_COLUMNS = "id, call_id, control_id, path, format, duration, size, created_at, meta"


def _recording_row(r: tuple[Any, ...]) -> RecordingRow:
    row = RecordingRow(
        id=r[0],
        call_id=r[1],
        control_id=r[2],
        path=r[3],
        format=r[4],
        duration=r[5],
        size=r[6],
        created_at=r[7],
    )
    meta = json.loads(r[8])
    if meta:
        row["meta"] = meta
    return row


_PROJECT_COLUMNS = "id, name, token, signing_key, created_at"


def _project_row(r: tuple[Any, ...]) -> ProjectRow:
    return ProjectRow(id=r[0], name=r[1], token=r[2], signing_key=r[3], created_at=r[4])


class Store:
    """The SQLite store. Create it with :meth:`Store.open`; call :meth:`close` when done."""

    def __init__(
        self, conn: sqlite3.Connection, path: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._conn = conn
        self._path = path
        self._clock = clock
        self._last_prune = 0.0

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        clock: Callable[[], float] = time.time,
    ) -> Store:
        """Open (creating if needed) the database at ``path`` and migrate it to the current schema.

        ``clock`` returns Unix seconds; tests pass a fake one to age idempotency keys.
        Raises :class:`SchemaVersionError` if the file comes from a newer schema.
        """
        path_str = os.fspath(path)
        if path_str != ":memory:" and not path_str.startswith("file:"):
            # Owner-only before the first write creates -wal/-shm, which inherit this mode.
            os.close(os.open(path_str, os.O_RDWR | os.O_CREAT, 0o600))
            os.chmod(path_str, 0o600)
        conn = sqlite3.connect(path_str, isolation_level=None)
        try:
            # Another process (a previous instance shutting down, the CLI) may hold the write lock
            # briefly; wait for it rather than failing the open.
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            _migrate(conn)
        except BaseException:
            conn.close()
            raise
        store = cls(conn, path_str, clock)
        store.prune_idempotency()
        return store

    @property
    def path(self) -> str:
        return self._path

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        """Close the connection. Safe to call twice; the store is unusable afterwards."""
        # Cheap, and lets SQLite refresh planner statistics for the next run.
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA optimize")
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ calls

    def save_call(self, row: CallRow) -> None:
        """Insert or replace a call (upsert on ``id``).

        The indexed ``status``/``created_at``/``parent_id`` columns are taken from ``row["leg"]``.
        Raises ``ValueError`` if ``leg["id"]`` disagrees with ``row["id"]`` or if the id already
        belongs to another project (a call never changes project).
        """
        leg = row["leg"]
        call_id = row["id"]
        if leg.get("id", call_id) != call_id:
            raise ValueError(f"call row id {call_id!r} != leg id {leg.get('id')!r}")
        created_at = leg.get("created_at") or _iso_now(self._clock)
        cur = self._conn.execute(
            """
            INSERT INTO calls
                (id, project_id, status, created_at, parent_id, leg, private, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (id) DO UPDATE SET
                status = excluded.status, created_at = excluded.created_at,
                parent_id = excluded.parent_id, leg = excluded.leg, private = excluded.private,
                updated_at = excluded.updated_at
            WHERE calls.project_id = excluded.project_id
            """,
            (
                call_id,
                row["project_id"],
                leg.get("status"),
                created_at,
                leg.get("parent_id"),
                _dumps(leg),
                _dumps(row.get("private", {})),
                self._clock(),
            ),
        )
        if cur.rowcount != 1:
            raise ValueError(f"call {call_id!r} belongs to another project")

    def get_call(self, project_id: str, call_id: str) -> CallRow | None:
        """The call, or None if it does not exist in this project."""
        r = self._conn.execute(
            "SELECT leg, private FROM calls WHERE id = ? AND project_id = ?",
            (call_id, project_id),
        ).fetchone()
        if r is None:
            return None
        leg, private = json.loads(r[0]), json.loads(r[1])
        return CallRow(id=call_id, project_id=project_id, leg=leg, private=private)

    def list_calls(
        self,
        project_id: str,
        status: str | None = None,
        *,
        parent_id: str | None = None,
        limit: int | None = None,
    ) -> list[CallRow]:
        """Calls of a project, oldest first, optionally filtered by status and/or parent call."""
        sql = "SELECT id, leg, private FROM calls WHERE project_id = ?"
        args: list[Any] = [project_id]
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        if parent_id is not None:
            sql += " AND parent_id = ?"
            args.append(parent_id)
        sql += " ORDER BY created_at, id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [
            CallRow(id=r[0], project_id=project_id, leg=json.loads(r[1]), private=json.loads(r[2]))
            for r in self._conn.execute(sql, args)
        ]

    def save_dialog(self, call_id: str, dialog: JsonObject | None) -> None:
        """Keep (or, with None, forget) what ending the call's SIP dialog takes. The call row
        must exist; `save_call` leaves this column alone."""
        self._conn.execute(
            "UPDATE calls SET dialog = ? WHERE id = ?",
            (None if dialog is None else _dumps(dialog), call_id),
        )

    def get_dialog(self, call_id: str) -> JsonObject | None:
        """What `save_dialog` kept for the call, or None."""
        r = self._conn.execute("SELECT dialog FROM calls WHERE id = ?", (call_id,)).fetchone()
        if r is None or r[0] is None:
            return None
        value = json.loads(r[0])
        return value if isinstance(value, dict) else None

    def list_calls_in(self, statuses: Iterable[str]) -> list[CallRow]:
        """Calls of every project whose status is one of ``statuses``, oldest first (crash
        recovery: the calls a dead process left live, whoever they belong to)."""
        wanted = list(statuses)
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        return [
            CallRow(id=r[0], project_id=r[1], leg=json.loads(r[2]), private=json.loads(r[3]))
            for r in self._conn.execute(
                f"SELECT id, project_id, leg, private FROM calls WHERE status IN ({marks})"
                " ORDER BY created_at, id",
                wanted,
            )
        ]

    # ------------------------------------------------------------------ heartbeat

    def mark_alive(self, at: float | None = None) -> None:
        """Record that the server (and so every call it holds) is alive now: one row, one write."""
        self._conn.execute(
            "INSERT INTO heartbeat (id, alive_at) VALUES (1, ?)"
            " ON CONFLICT (id) DO UPDATE SET alive_at = excluded.alive_at",
            (self._clock() if at is None else at,),
        )

    def last_alive(self) -> float | None:
        """The last :meth:`mark_alive` time, or None if there was none."""
        r = self._conn.execute("SELECT alive_at FROM heartbeat WHERE id = 1").fetchone()
        return None if r is None else float(r[0])

    # ------------------------------------------------------------------ projects

    def add_project(self, row: ProjectRow) -> None:
        """Insert a project. Raises ``ValueError`` if its id or name is taken."""
        try:
            self._conn.execute(
                f"INSERT INTO projects ({_PROJECT_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                (row["id"], row["name"], row["token"], row["signing_key"], row["created_at"]),
            )
        except sqlite3.IntegrityError:
            raise ValueError(
                f"a project with id {row['id']!r} or name {row['name']!r} exists"
            ) from None

    def get_project(self, project_id: str) -> ProjectRow | None:
        r = self._conn.execute(
            f"SELECT {_PROJECT_COLUMNS} FROM projects WHERE id = ?", (project_id,)
        ).fetchone()
        return None if r is None else _project_row(r)

    def find_project(self, id_or_name: str) -> ProjectRow | None:
        """The project with this id, else the one with this name."""
        return self.get_project(id_or_name) or next(
            (
                _project_row(r)
                for r in self._conn.execute(
                    f"SELECT {_PROJECT_COLUMNS} FROM projects WHERE name = ?", (id_or_name,)
                )
            ),
            None,
        )

    def list_projects(self) -> list[ProjectRow]:
        """Every project, the oldest first."""
        return [
            _project_row(r)
            for r in self._conn.execute(
                f"SELECT {_PROJECT_COLUMNS} FROM projects ORDER BY created_at, rowid"
            )
        ]

    def set_project_token(self, project_id: str, token: str) -> bool:
        """Replace a project's API token; True if the project exists."""
        cur = self._conn.execute("UPDATE projects SET token = ? WHERE id = ?", (token, project_id))
        return cur.rowcount > 0

    def delete_project(self, project_id: str) -> bool:
        """Forget a project (its token stops working at once). Its calls and events stay."""
        cur = self._conn.execute("DELETE FROM projects WHERE id = ?", (project_id,))
        return cur.rowcount > 0

    # ------------------------------------------------------------------ call events

    def append_event(self, call_id: str, event: Mapping[str, Any]) -> int:
        """Append an event to a call's log and return its sequence number (1, 2, 3 ...).

        The next seq is computed inside the INSERT itself, so the read and the write are one atomic
        statement; (call_id, seq) is the primary key, so a duplicate could never be stored anyway.
        ``event["event_type"]`` (if present) is copied to its own column.
        """
        event_type = event.get("event_type", "")
        if not isinstance(event_type, str):
            raise TypeError("event_type must be a string")
        rows = self._conn.execute(
            """
            INSERT INTO call_events (call_id, seq, event_type, payload, created_at)
            SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ? FROM call_events WHERE call_id = ?
            RETURNING seq
            """,
            (call_id, event_type, _dumps(dict(event)), self._clock(), call_id),
        ).fetchall()  # exhaust the cursor: the autocommit only completes when the statement does
        return int(rows[0][0])

    def list_events(self, call_id: str, *, after_seq: int = 0) -> list[EventRow]:
        """A call's events in seq order (only those with seq > ``after_seq``)."""
        return [
            EventRow(
                call_id=call_id,
                seq=r[0],
                event_type=r[1],
                payload=json.loads(r[2]),
                created_at=r[3],
            )
            for r in self._conn.execute(
                "SELECT seq, event_type, payload, created_at FROM call_events"
                " WHERE call_id = ? AND seq > ? ORDER BY seq",
                (call_id, after_seq),
            )
        ]

    # ------------------------------------------------------------------ idempotency keys

    def idempotency_get(self, project_id: str, key: str) -> IdempotencyEntry | None:
        """The stored entry, or None if absent or older than 24 h."""
        r = self._conn.execute(
            "SELECT request_hash, status, body, created_at FROM idempotency_keys"
            " WHERE project_id = ? AND key = ? AND created_at >= ?",
            (project_id, key, self._clock() - IDEMPOTENCY_TTL),
        ).fetchone()
        if r is None:
            return None
        return IdempotencyEntry(
            project_id=project_id,
            key=key,
            request_hash=r[0],
            status=r[1],
            body=json.loads(r[2]),
            created_at=r[3],
        )

    def idempotency_put(
        self, project_id: str, key: str, status: int, body: Any, *, request_hash: str = ""
    ) -> IdempotencyEntry:
        """Store the outcome for ``key`` unless a live (< 24 h) entry already exists.

        Returns the entry that is now stored: the caller's own, or the existing one if another
        request got there first (first writer wins; compare ``request_hash``/``status``/``body`` to
        tell). An expired entry is replaced. ``body`` must be JSON-serialisable.
        """
        now = self._clock()
        # One statement decides the race: insert, or overwrite only an expired entry.
        cur = self._conn.execute(
            """
            INSERT INTO idempotency_keys (project_id, key, request_hash, status, body, created_at)
            VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT (project_id, key) DO UPDATE SET
                request_hash = excluded.request_hash, status = excluded.status,
                body = excluded.body, created_at = excluded.created_at
            WHERE idempotency_keys.created_at < ?
            """,
            (project_id, key, request_hash, status, _dumps(body), now, now - IDEMPOTENCY_TTL),
        )
        if now - self._last_prune >= _PRUNE_INTERVAL:
            self.prune_idempotency()
        if cur.rowcount == 1:  # ours was written: no need to read it back
            return IdempotencyEntry(
                project_id=project_id,
                key=key,
                request_hash=request_hash,
                status=status,
                body=body,
                created_at=now,
            )
        entry = self.idempotency_get(project_id, key)
        assert entry is not None  # we just wrote it or a live one exists
        return entry

    def idempotency_delete(self, project_id: str, key: str) -> bool:
        """Forget a key (e.g. the api reserved it and the request then failed with a 5xx)."""
        cur = self._conn.execute(
            "DELETE FROM idempotency_keys WHERE project_id = ? AND key = ?", (project_id, key)
        )
        return cur.rowcount > 0

    def prune_idempotency(self) -> int:
        """Delete entries older than 24 h; returns how many. Also done on open and periodically."""
        now = self._clock()
        self._last_prune = now
        cur = self._conn.execute(
            "DELETE FROM idempotency_keys WHERE created_at < ?", (now - IDEMPOTENCY_TTL,)
        )
        return cur.rowcount

    # ------------------------------------------------------------------ recordings

    def save_recording(self, row: RecordingRow) -> None:
        """Insert or replace a recording (upsert on ``id``), e.g. to fill duration/size later."""
        self._conn.execute(
            f"INSERT OR REPLACE INTO recordings ({_RECORDING_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row["id"],
                row["call_id"],
                row["control_id"],
                row["path"],
                row["format"],
                row["duration"],
                row["size"],
                row["created_at"],
                _dumps(row.get("meta") or {}),
            ),
        )

    def get_recording(
        self, recording_id: str, project_id: str | None = None
    ) -> RecordingRow | None:
        """The recording; with ``project_id``, only if its call belongs to that project."""
        if project_id is None:
            r = self._conn.execute(
                f"SELECT {_RECORDING_COLUMNS} FROM recordings WHERE id = ?", (recording_id,)
            ).fetchone()
        else:
            columns = ", ".join(f"r.{c.strip()}" for c in _RECORDING_COLUMNS.split(","))
            r = self._conn.execute(
                f"SELECT {columns} FROM recordings r JOIN calls c ON c.id = r.call_id"
                " WHERE r.id = ? AND c.project_id = ?",
                (recording_id, project_id),
            ).fetchone()
        return None if r is None else _recording_row(r)

    def list_recordings(self, call_id: str) -> list[RecordingRow]:
        """A call's recordings, oldest first."""
        return [
            _recording_row(r)
            for r in self._conn.execute(
                f"SELECT {_RECORDING_COLUMNS} FROM recordings WHERE call_id = ?"
                " ORDER BY created_at, id",
                (call_id,),
            )
        ]

    def delete_recording(self, recording_id: str) -> bool:
        """Delete the row (not the file: the caller owns the file). True if it existed."""
        cur = self._conn.execute("DELETE FROM recordings WHERE id = ?", (recording_id,))
        return cur.rowcount > 0

    # ------------------------------------------------------------------ webhook outbox
    # Used by callplane.webhooks.WebhookOutbox; the store only knows rows, not HTTP.

    def outbox_add(
        self,
        ordering_key: str,
        url: str,
        body: bytes,
        *,
        project_id: str | None = None,
        method: OutboxMethod = "POST",
    ) -> int:
        """Persist a delivery (committed before returning) and return its id."""
        now = self._clock()
        cur = self._conn.execute(
            "INSERT INTO webhook_outbox"
            " (ordering_key, url, body, created_at, next_attempt_at, project_id, method)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (ordering_key, url, body, now, now, project_id, method),
        )
        row_id = cur.lastrowid
        assert row_id is not None
        return row_id

    def outbox_pending_keys(self) -> list[str]:
        """Ordering keys that have pending rows, the key with the oldest row first."""
        return [
            r[0]
            for r in self._conn.execute(
                "SELECT ordering_key, MIN(id) AS first FROM webhook_outbox"
                " WHERE status = 'pending' GROUP BY ordering_key ORDER BY first"
            )
        ]

    def outbox_pending(
        self, ordering_key: str, *, after_id: int = 0, limit: int = 64
    ) -> list[OutboxRow]:
        """Pending rows of one key with id > ``after_id``, in id (= enqueue) order."""
        return [
            _outbox_row(r)
            for r in self._conn.execute(
                f"SELECT {_OUTBOX_COLUMNS} FROM webhook_outbox"
                " WHERE ordering_key = ? AND status = 'pending' AND id > ? ORDER BY id LIMIT ?",
                (ordering_key, after_id, limit),
            )
        ]

    def outbox_get(self, row_id: int) -> OutboxRow | None:
        r = self._conn.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM webhook_outbox WHERE id = ?", (row_id,)
        ).fetchone()
        return None if r is None else _outbox_row(r)

    def outbox_list(
        self, status: OutboxStatus | None = None, *, ordering_key: str | None = None
    ) -> list[OutboxRow]:
        """Rows for inspection (e.g. dead letters), in id order."""
        sql = f"SELECT {_OUTBOX_COLUMNS} FROM webhook_outbox WHERE 1"
        args: list[Any] = []
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        if ordering_key is not None:
            sql += " AND ordering_key = ?"
            args.append(ordering_key)
        return [_outbox_row(r) for r in self._conn.execute(sql + " ORDER BY id", args)]

    def outbox_count(self, status: OutboxStatus = "pending") -> int:
        return int(
            self._conn.execute(
                "SELECT COUNT(*) FROM webhook_outbox WHERE status = ?", (status,)
            ).fetchone()[0]
        )

    def outbox_delete(self, row_id: int) -> None:
        """Forget a delivered row."""
        self._conn.execute("DELETE FROM webhook_outbox WHERE id = ?", (row_id,))

    def outbox_retry_later(
        self, row_id: int, *, attempts: int, next_attempt_at: float, error: str
    ) -> None:
        """Record a failed attempt (kept so that inspection and restarts see the history)."""
        self._conn.execute(
            "UPDATE webhook_outbox SET attempts = ?, next_attempt_at = ?, last_error = ?"
            " WHERE id = ?",
            (attempts, next_attempt_at, error, row_id),
        )

    def outbox_mark_dead(self, row_id: int, *, attempts: int, error: str) -> None:
        """Give up on a row; it stays in the table with status 'dead' for inspection."""
        self._conn.execute(
            "UPDATE webhook_outbox SET status = 'dead', attempts = ?, last_error = ? WHERE id = ?",
            (attempts, error, row_id),
        )

    def outbox_requeue_dead(self, *, ordering_key: str | None = None) -> int:
        """Make dead rows pending again (an operator's "retry"); returns how many."""
        sql = "UPDATE webhook_outbox SET status = 'pending', attempts = 0, created_at = ?"
        args: list[Any] = [self._clock()]
        sql += " WHERE status = 'dead'"
        if ordering_key is not None:
            sql += " AND ordering_key = ?"
            args.append(ordering_key)
        return self._conn.execute(sql, args).rowcount


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema to ``len(schema.MIGRATIONS)``, one transaction per step."""
    target = len(schema.MIGRATIONS)
    while True:
        # BEGIN IMMEDIATE takes the write lock before reading the version, so two processes opening
        # the same new file cannot both run step n.
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > target:
                raise SchemaVersionError(
                    f"database schema version {version} is newer than this callplane ({target})"
                )
            if version == target:
                conn.execute("COMMIT")
                return
            for statement in schema.MIGRATIONS[version]:
                conn.execute(statement)
            # PRAGMA does not take parameters; version is an int we computed.
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


__all__ = ["IDEMPOTENCY_TTL", "JsonObject", "SchemaVersionError", "Store"]
