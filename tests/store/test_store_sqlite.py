"""Store: schema migration, calls, events, idempotency keys, recordings, outbox rows, speed."""

from __future__ import annotations

import sqlite3
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callplane.store import (
    IDEMPOTENCY_TTL,
    CallRow,
    RecordingRow,
    SchemaVersionError,
    Store,
)
from callplane.store import schema as store_schema


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(db_path: Path, clock: FakeClock) -> Iterator[Store]:
    s = Store.open(db_path, clock=clock)
    yield s
    s.close()


def leg(call_id: str, status: str | None = "queued", **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": call_id,
        "from": "+15550001",
        "to": "sip:bob@127.0.0.1",
        "direction": "outbound-api",
        "source": "realtime_api",
        "url": None,
        "charge": 0,
        "created_at": f"2024-05-06T12:20:0{call_id[-1]}Z",
        "charge_details": [],
        "status": status,
        "duration": None,
        "duration_ms": None,
        "billing_ms": None,
        "type": "relay_sip_call",
        "parent_id": None,
    }
    base.update(extra)
    return base


# ---------------------------------------------------------------- schema / migrations


def test_open_creates_schema_with_wal_and_normal_sync(store: Store, db_path: Path) -> None:
    assert store.schema_version == len(store_schema.MIGRATIONS) >= 1
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert {"calls", "call_events", "idempotency_keys", "recordings", "webhook_outbox"} <= tables
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_reopen_keeps_data_and_does_not_rerun_migrations(db_path: Path) -> None:
    with Store.open(db_path) as s:
        s.save_call(CallRow(id="c1", project_id="p", leg=leg("c1")))
    with Store.open(db_path) as s:  # would fail on "table calls already exists" if rerun
        assert s.get_call("p", "c1") is not None
        assert s.schema_version == len(store_schema.MIGRATIONS)


def test_newer_database_is_refused(db_path: Path) -> None:
    Store.open(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {len(store_schema.MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(SchemaVersionError):
        Store.open(db_path)


def test_upgrade_step_runs_once_and_keeps_data(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store.open(db_path) as s:
        s.save_call(CallRow(id="c1", project_id="p", leg=leg("c1")))
    v2 = ("ALTER TABLE calls ADD COLUMN node_id TEXT", "UPDATE calls SET node_id = 'n1'")
    monkeypatch.setattr(store_schema, "MIGRATIONS", [*store_schema.MIGRATIONS, v2])
    with Store.open(db_path) as s:
        assert s.schema_version == len(store_schema.MIGRATIONS)
        assert s._conn.execute("SELECT node_id FROM calls").fetchone()[0] == "n1"
        assert s.get_call("p", "c1") is not None
    with Store.open(db_path) as s:  # not applied twice (ALTER TABLE would fail)
        assert s.schema_version == len(store_schema.MIGRATIONS)


def test_failed_migration_rolls_back_entirely(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Store.open(db_path).close()
    before = len(store_schema.MIGRATIONS)
    bad = ("CREATE TABLE half_done (x INTEGER)", "THIS IS NOT SQL")
    monkeypatch.setattr(store_schema, "MIGRATIONS", [*store_schema.MIGRATIONS, bad])
    with pytest.raises(sqlite3.OperationalError):
        Store.open(db_path)
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == before
        assert (
            conn.execute("SELECT name FROM sqlite_master WHERE name='half_done'").fetchone() is None
        )
    finally:
        conn.close()


def test_fresh_file_migrates_from_zero(db_path: Path) -> None:
    sqlite3.connect(db_path).close()  # an empty database: user_version 0
    with Store.open(db_path) as s:
        assert s.schema_version == len(store_schema.MIGRATIONS)


# ---------------------------------------------------------------- calls


def test_save_get_upsert_and_project_isolation(store: Store) -> None:
    row = CallRow(id="c1", project_id="p1", leg=leg("c1"), private={"status_url": "http://x/s"})
    store.save_call(row)
    assert store.get_call("p1", "c1") == row
    assert store.get_call("p2", "c1") is None
    assert store.get_call("p1", "nope") is None

    updated = CallRow(id="c1", project_id="p1", leg=leg("c1", "answered"), private={"swml": {}})
    store.save_call(updated)
    assert store.get_call("p1", "c1") == updated
    with pytest.raises(ValueError, match="another project"):
        store.save_call(CallRow(id="c1", project_id="p2", leg=leg("c1")))
    with pytest.raises(ValueError, match="leg id"):
        store.save_call(CallRow(id="c2", project_id="p1", leg=leg("c1")))
    # private defaults to {} when omitted
    store.save_call(CallRow(id="c3", project_id="p1", leg=leg("c3")))
    got = store.get_call("p1", "c3")
    assert got is not None and got["private"] == {}


def test_a_call_s_dialog_survives_its_updates_and_a_reopen(store: Store, db_path: Path) -> None:
    store.save_call(CallRow(id="c1", project_id="p1", leg=leg("c1", "answered")))
    assert store.get_dialog("c1") is None
    dialog = {"call_id": "x@h", "next_cseq": 3, "addr": ["127.0.0.1", 5070]}
    store.save_dialog("c1", dialog)
    store.save_call(CallRow(id="c1", project_id="p1", leg=leg("c1", "answered")))
    store.close()
    with Store.open(db_path) as again:
        assert again.get_dialog("c1") == dialog
        again.save_dialog("c1", None)
        assert again.get_dialog("c1") is None
        again.save_dialog("nope", dialog)  # no call, nothing kept
        assert again.get_dialog("nope") is None


def test_list_calls_filters_and_orders(store: Store) -> None:
    store.save_call(CallRow(id="c3", project_id="p", leg=leg("c3", "ended")))
    store.save_call(CallRow(id="c1", project_id="p", leg=leg("c1", "answered")))
    store.save_call(CallRow(id="c2", project_id="p", leg=leg("c2", "answered", parent_id="c1")))
    store.save_call(CallRow(id="c4", project_id="other", leg=leg("c4", "answered")))
    assert [c["id"] for c in store.list_calls("p")] == ["c1", "c2", "c3"]
    assert [c["id"] for c in store.list_calls("p", "answered")] == ["c1", "c2"]
    assert [c["id"] for c in store.list_calls("p", parent_id="c1")] == ["c2"]
    assert [c["id"] for c in store.list_calls("p", limit=1)] == ["c1"]
    assert store.list_calls("p", "queued") == []


# ---------------------------------------------------------------- events


def test_event_seq_strictly_increasing_per_call(store: Store, db_path: Path) -> None:
    seqs_a = [
        store.append_event("a", {"event_type": "calling.call.play", "i": i}) for i in range(5)
    ]
    seqs_b = [
        store.append_event("b", {"event_type": "calling.call.state", "i": i}) for i in range(3)
    ]
    assert seqs_a == [1, 2, 3, 4, 5] and seqs_b == [1, 2, 3]
    events = store.list_events("a")
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert [e["payload"]["i"] for e in events] == list(range(5))
    assert events[0]["event_type"] == "calling.call.play" and events[0]["call_id"] == "a"
    assert [e["seq"] for e in store.list_events("a", after_seq=3)] == [4, 5]
    assert store.list_events("nobody") == []
    # Survives reopen and continues from the last seq.
    store.close()
    with Store.open(db_path) as s:
        assert s.append_event("a", {"event_type": "x"}) == 6


def test_event_without_type_and_bad_type(store: Store) -> None:
    assert store.append_event("c", {"foo": 1}) == 1
    assert store.list_events("c")[0]["event_type"] == ""
    with pytest.raises(TypeError):
        store.append_event("c", {"event_type": 5})


# ---------------------------------------------------------------- idempotency


def test_idempotency_put_get_and_first_writer_wins(store: Store) -> None:
    assert store.idempotency_get("p", "k") is None
    first = store.idempotency_put("p", "k", 200, {"id": "c1"}, request_hash="h1")
    assert (
        first["status"] == 200 and first["body"] == {"id": "c1"} and first["request_hash"] == "h1"
    )
    assert store.idempotency_get("p", "k") == first
    # A concurrent second put does not overwrite: it gets the existing entry back.
    second = store.idempotency_put("p", "k", 500, {"other": True}, request_hash="h2")
    assert second == first
    # Keys are per project.
    assert store.idempotency_get("p2", "k") is None
    assert store.idempotency_delete("p", "k") and store.idempotency_get("p", "k") is None


def test_idempotency_concurrent_put_from_another_connection(db_path: Path) -> None:
    # Two processes (two connections) racing on one key: the second gets the first's entry.
    with Store.open(db_path) as s1, Store.open(db_path) as s2:
        won = s1.idempotency_put("p", "k", 200, {"by": "s1"}, request_hash="h")
        lost = s2.idempotency_put("p", "k", 200, {"by": "s2"}, request_hash="h")
        assert lost == won and lost["body"] == {"by": "s1"}


def test_idempotency_entries_expire_after_24h(store: Store, clock: FakeClock) -> None:
    store.idempotency_put("p", "old", 201, {"n": 1})
    clock.now += IDEMPOTENCY_TTL - 1
    assert store.idempotency_get("p", "old") is not None
    clock.now += 2
    assert store.idempotency_get("p", "old") is None  # ignored once expired
    replaced = store.idempotency_put("p", "old", 202, {"n": 2})  # replaced, not "existing"
    assert replaced["status"] == 202 and replaced["created_at"] == clock.now


def test_idempotency_prune(store: Store, clock: FakeClock) -> None:
    for i in range(3):
        store.idempotency_put("p", f"k{i}", 200, None)
    clock.now += IDEMPOTENCY_TTL / 2
    store.idempotency_put("p", "young", 200, None)
    clock.now += IDEMPOTENCY_TTL / 2 + 1
    assert store.prune_idempotency() == 3
    assert store.idempotency_get("p", "young") is not None
    # Also pruned on open and periodically by put.
    clock.now += IDEMPOTENCY_TTL
    store.idempotency_put("p", "new", 200, [1, 2])
    count = store._conn.execute("SELECT COUNT(*) FROM idempotency_keys").fetchone()[0]
    assert count == 1


# ---------------------------------------------------------------- recordings


def test_recording_crud(store: Store) -> None:
    rec = RecordingRow(
        id="r1",
        call_id="c1",
        control_id="ctl",
        path="/var/rec/r1.wav",
        format="wav",
        duration=None,
        size=None,
        created_at=10.0,
    )
    store.save_recording(rec)
    store.save_recording(RecordingRow({**rec, "id": "r0", "created_at": 5.0}))
    store.save_recording(RecordingRow({**rec, "id": "rx", "call_id": "c2"}))
    assert store.get_recording("r1") == rec
    assert [r["id"] for r in store.list_recordings("c1")] == ["r0", "r1"]
    done = RecordingRow({**rec, "duration": 3.5, "size": 56000})
    store.save_recording(done)
    assert store.get_recording("r1") == done
    assert store.delete_recording("r1") and not store.delete_recording("r1")
    assert store.get_recording("r1") is None


# ---------------------------------------------------------------- outbox rows


def test_outbox_rows_lifecycle(store: Store) -> None:
    a1 = store.outbox_add("A", "http://h/1", b'{"n":1}')
    b1 = store.outbox_add("B", "http://h/2", b"{}")
    a2 = store.outbox_add("A", "http://h/1", b'{"n":2}')
    assert a1 < b1 < a2
    assert store.outbox_pending_keys() == ["A", "B"]
    assert [r["id"] for r in store.outbox_pending("A")] == [a1, a2]
    assert [r["id"] for r in store.outbox_pending("A", after_id=a1)] == [a2]
    row = store.outbox_get(a1)
    assert row is not None and row["body"] == b'{"n":1}' and row["attempts"] == 0
    store.outbox_retry_later(a1, attempts=1, next_attempt_at=99.0, error="HTTP 500")
    row = store.outbox_get(a1)
    assert row is not None and (row["attempts"], row["last_error"]) == (1, "HTTP 500")
    store.outbox_mark_dead(a1, attempts=2, error="gone")
    assert [r["id"] for r in store.outbox_pending("A")] == [a2]
    assert [r["id"] for r in store.outbox_list("dead")] == [a1]
    store.outbox_delete(b1)
    assert store.outbox_count() == 1 and store.outbox_count("dead") == 1
    # AUTOINCREMENT: ids are never reused even after the newest row is deleted.
    store.outbox_delete(a2)
    assert store.outbox_add("A", "http://h/1", b"{}") > a2


# ---------------------------------------------------------------- speed


def test_writes_are_sub_millisecond(store: Store) -> None:
    """Every write is its own committed transaction; WAL + synchronous=NORMAL keeps that cheap."""
    durations: list[float] = []
    for i in range(300):
        t0 = time.perf_counter()
        store.append_event(f"call-{i % 10}", {"event_type": "calling.call.play", "i": i})
        store.outbox_add(f"call-{i % 10}", "http://127.0.0.1/x", b'{"event_type":"x"}' * 10)
        store.save_call(CallRow(id=f"c{i % 10}", project_id="p", leg=leg(f"c{i % 10}")))
        durations.append((time.perf_counter() - t0) / 3)
    assert statistics.median(durations) < 0.001, f"median {statistics.median(durations):.6f}s"


def test_close_is_idempotent(db_path: Path) -> None:
    s = Store.open(db_path)
    s.close()
    s.close()
    with pytest.raises(sqlite3.ProgrammingError):
        s.get_call("p", "c")
