"""Projects in the store, getting them ready to serve (credentials.json import, --project/--token),
the heartbeat, crash-recovery queries and owner-only files."""

from __future__ import annotations

import json
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from callplane.store import (
    CallRow,
    RecordingRow,
    Store,
    new_project,
    prepare_projects,
)
from callplane.store import schema as store_schema


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "store.db")
    yield s
    s.close()


def call(call_id: str, project_id: str, status: str = "answered") -> CallRow:
    leg = {
        "id": call_id,
        "from": "+15550001",
        "to": "sip:bob@127.0.0.1",
        "direction": "outbound-api",
        "type": "relay_sip_call",
        "status": status,
        "created_at": f"2026-01-01T00:00:0{call_id[-1]}Z",
    }
    return CallRow(id=call_id, project_id=project_id, leg=leg, private={})


def test_projects_are_added_found_by_id_or_name_listed_oldest_first_and_removed(
    store: Store,
) -> None:
    a = new_project("alpha")
    b = new_project("beta")
    store.add_project(a)
    store.add_project(b)
    assert a["token"] != b["token"] and a["signing_key"] != b["signing_key"]
    assert a["token"] != a["signing_key"]
    assert store.get_project(a["id"]) == a
    assert store.find_project("beta") == b
    assert store.find_project(b["id"]) == b
    assert store.find_project("gamma") is None
    assert [p["name"] for p in store.list_projects()] == ["alpha", "beta"]
    with pytest.raises(ValueError, match="exists"):
        store.add_project(new_project("alpha"))
    with pytest.raises(ValueError, match="exists"):
        store.add_project({**new_project("other"), "id": a["id"]})
    assert store.set_project_token(a["id"], "new-token")
    assert store.get_project(a["id"])["token"] == "new-token"  # type: ignore[index]
    assert store.delete_project(a["id"])
    assert not store.delete_project(a["id"])
    assert store.list_projects() == [b]


def test_new_project_needs_a_name() -> None:
    with pytest.raises(ValueError):
        new_project("  ")


def test_an_empty_store_gets_a_generated_default_project_reported_once(
    store: Store, tmp_path: Path
) -> None:
    row, messages = prepare_projects(store, tmp_path)
    assert len(messages) == 1
    assert row["token"] in messages[0] and row["signing_key"] in messages[0]
    again, messages = prepare_projects(store, tmp_path)
    assert again == row
    assert messages == []  # secrets are shown when generated, never again


def test_an_unknown_project_is_created_with_the_given_token_and_a_known_one_gets_it(
    store: Store, tmp_path: Path
) -> None:
    store.add_project(new_project("first"))
    row, messages = prepare_projects(store, tmp_path, project="acme", token="tok-1")
    assert (row["id"], row["name"], row["token"]) == ("acme", "acme", "tok-1")
    assert len(messages) == 1
    assert "tok-1" not in messages[0]  # the operator chose it: only the generated key is shown
    assert row["signing_key"] in messages[0]
    row2, messages = prepare_projects(store, tmp_path, project="acme", token="tok-2")
    assert row2["token"] == "tok-2" and row2["signing_key"] == row["signing_key"]
    assert store.get_project("acme")["token"] == "tok-2"  # type: ignore[index]
    assert messages == []
    by_name, _ = prepare_projects(store, tmp_path, project="first")
    assert by_name["name"] == "first"
    # Without --project the default is the oldest project.
    default, _ = prepare_projects(store, tmp_path)
    assert default["name"] == "first"


def test_credentials_json_is_imported_once_and_removed(store: Store, tmp_path: Path) -> None:
    legacy = tmp_path / "credentials.json"
    legacy.write_text(json.dumps({"project": "p-old", "token": "t-old"}))
    row, messages = prepare_projects(store, tmp_path)
    assert (row["id"], row["token"]) == ("p-old", "t-old")
    assert row["signing_key"] != "t-old"
    assert any(row["signing_key"] in m and "t-old" not in m for m in messages)
    assert not legacy.exists()
    again, messages = prepare_projects(store, tmp_path)
    assert again == row and messages == []


def test_outbox_rows_name_their_project(store: Store) -> None:
    a = store.outbox_add("call-1", "http://127.0.0.1/x", b"{}", project_id="p1")
    b = store.outbox_add("call-2", "http://127.0.0.1/x", b"{}")
    assert store.outbox_get(a)["project_id"] == "p1"  # type: ignore[index]
    assert store.outbox_get(b)["project_id"] is None  # type: ignore[index]


def test_migrating_a_v1_database_gives_queued_webhooks_their_call_s_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    monkeypatch.setattr(store_schema, "MIGRATIONS", store_schema.MIGRATIONS[:1])
    with Store.open(path) as old:
        old.save_call(call("c1", "p-old"))
        old._conn.execute(
            "INSERT INTO webhook_outbox (ordering_key, url, body, created_at, next_attempt_at)"
            " VALUES ('c1', 'http://127.0.0.1/x', x'7b7d', 1, 1)"
        )
    monkeypatch.undo()
    with Store.open(path) as new:
        [row] = new.outbox_list("pending")
        assert row["project_id"] == "p-old"


def test_heartbeat_keeps_the_last_mark(store: Store) -> None:
    assert store.last_alive() is None
    store.mark_alive(100.0)
    store.mark_alive(102.0)
    assert store.last_alive() == 102.0
    assert store._conn.execute("SELECT COUNT(*) FROM heartbeat").fetchone()[0] == 1


def test_live_calls_of_every_project_are_listed_for_recovery(store: Store) -> None:
    store.save_call(call("c1", "p1", "answered"))
    store.save_call(call("c2", "p2", "ringing"))
    store.save_call(call("c3", "p1", "ended"))
    found = store.list_calls_in(["ringing", "answered"])
    assert [(c["id"], c["project_id"]) for c in found] == [("c1", "p1"), ("c2", "p2")]
    assert store.list_calls_in([]) == []


def test_a_recording_is_found_only_in_its_call_s_project(store: Store) -> None:
    store.save_call(call("c1", "p1"))
    rec = RecordingRow(
        id="r1",
        call_id="c1",
        control_id="x",
        path="/tmp/r1.wav",
        format="wav",
        duration=None,
        size=None,
        created_at=1.0,
        meta={"status_url": "http://127.0.0.1/rec", "start_time": 2.0},
    )
    store.save_recording(rec)
    assert store.get_recording("r1", "p1") == rec
    assert store.get_recording("r1", "p2") is None
    assert store.get_recording("r1") == rec


def test_the_database_and_its_wal_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "mode.db"
    path.touch(mode=0o644)
    path.chmod(0o644)
    with Store.open(path) as s:
        s.add_project(new_project("a"))
        for file in (path, path.with_name("mode.db-wal")):
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    sqlite3.connect(path).close()
