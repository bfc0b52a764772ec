"""Versioned schema of the SQLite store.

``MIGRATIONS[n]`` takes a database from ``PRAGMA user_version = n`` to ``n + 1``. Migrations are
append-only: a released step is never edited, a change is a new step. Each step runs in one
transaction together with the ``user_version`` bump (the version lives in the database header,
which SQLite writes transactionally), so a crash or an error mid-migration leaves the previous
version intact.
"""

from __future__ import annotations

Migration = tuple[str, ...]

_V1: Migration = (
    # calls: the public CallLeg and the engine-private state are JSON blobs because their shape
    # belongs to the engine; only what is filtered or sorted on gets a real column.
    """
    CREATE TABLE calls (
        id          TEXT PRIMARY KEY,
        project_id  TEXT NOT NULL,
        status      TEXT,
        created_at  TEXT NOT NULL,
        parent_id   TEXT,
        leg         TEXT NOT NULL,
        private     TEXT NOT NULL DEFAULT '{}',
        updated_at  REAL NOT NULL
    )
    """,
    "CREATE INDEX calls_project_created ON calls (project_id, created_at)",
    "CREATE INDEX calls_project_status_created ON calls (project_id, status, created_at)",
    "CREATE INDEX calls_parent ON calls (parent_id) WHERE parent_id IS NOT NULL",
    # call_events: (call_id, seq) is the primary key, so a duplicate seq is impossible and reading
    # a call's events in order is a range scan of the table (WITHOUT ROWID clusters by the key).
    """
    CREATE TABLE call_events (
        call_id     TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        event_type  TEXT NOT NULL,
        payload     TEXT NOT NULL,
        created_at  REAL NOT NULL,
        PRIMARY KEY (call_id, seq)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE idempotency_keys (
        project_id    TEXT NOT NULL,
        key           TEXT NOT NULL,
        request_hash  TEXT NOT NULL,
        status        INTEGER NOT NULL,
        body          TEXT NOT NULL,
        created_at    REAL NOT NULL,
        PRIMARY KEY (project_id, key)
    )
    """,
    # Pruning deletes by age; without this index it would scan the whole table.
    "CREATE INDEX idempotency_created ON idempotency_keys (created_at)",
    """
    CREATE TABLE recordings (
        id          TEXT PRIMARY KEY,
        call_id     TEXT NOT NULL,
        control_id  TEXT,
        path        TEXT NOT NULL,
        format      TEXT NOT NULL,
        duration    REAL,
        size        INTEGER,
        created_at  REAL NOT NULL
    )
    """,
    "CREATE INDEX recordings_call ON recordings (call_id, created_at)",
    # webhook_outbox: AUTOINCREMENT (not a plain rowid) so that an id is never reused after the row
    # is deleted; receivers may deduplicate on X-Callplane-Delivery, and enqueue order == id order.
    """
    CREATE TABLE webhook_outbox (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        ordering_key     TEXT NOT NULL,
        url              TEXT NOT NULL,
        body             BLOB NOT NULL,
        created_at       REAL NOT NULL,
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_at  REAL NOT NULL,
        last_error       TEXT,
        status           TEXT NOT NULL DEFAULT 'pending'
    )
    """,
    # The delivery worker reads "pending rows of one key in id order"; the partial index keeps dead
    # rows (kept for inspection) out of that hot path.
    "CREATE INDEX outbox_pending_key ON webhook_outbox (ordering_key, id) WHERE status = 'pending'",
)

_V2: Migration = (
    # projects: each has its own API token (controls calls) and its own webhook signing key
    # (held by receivers, so it must not be the token). Names are unique so that an operator can
    # address a project by name.
    """
    CREATE TABLE projects (
        id           TEXT PRIMARY KEY,
        name         TEXT NOT NULL UNIQUE,
        token        TEXT NOT NULL,
        signing_key  TEXT NOT NULL,
        created_at   REAL NOT NULL
    )
    """,
    # A queued webhook is signed at send time with the key of the project it belongs to, so the
    # row names its project. Rows queued before this step belong to their call's project.
    "ALTER TABLE webhook_outbox ADD COLUMN project_id TEXT",
    """
    UPDATE webhook_outbox SET project_id =
        (SELECT calls.project_id FROM calls WHERE calls.id = webhook_outbox.ordering_key)
    """,
    # What the engine needs to report a recording that a crash cut short (its status_url, url,
    # audio settings, start time): JSON, its shape belongs to the engine.
    "ALTER TABLE recordings ADD COLUMN meta TEXT NOT NULL DEFAULT '{}'",
    # One row: the last moment this server was known alive (a heartbeat every few seconds). After
    # a crash, calls that were live end at that moment rather than at the restart.
    "CREATE TABLE heartbeat (id INTEGER PRIMARY KEY CHECK (id = 1), alive_at REAL NOT NULL)",
)

_V3: Migration = (
    # What a BYE needs to end a call's SIP dialog (its ID, URIs, route set, next CSeq, the address
    # it goes to), written when the dialog is confirmed and whenever that changes: a process that
    # restarts after a crash hangs up the far ends its predecessor left. JSON, its shape belongs
    # to the SIP layer; NULL for calls that never had a confirmed dialog.
    "ALTER TABLE calls ADD COLUMN dialog TEXT",
)

_V4: Migration = (
    # The HTTP method of a delivery: a stream's `status_url_method` may ask for GET (the payload
    # then travels as a query string). Rows queued before this step were all POSTs.
    "ALTER TABLE webhook_outbox ADD COLUMN method TEXT NOT NULL DEFAULT 'POST'",
)

MIGRATIONS: list[Migration] = [_V1, _V2, _V3, _V4]
