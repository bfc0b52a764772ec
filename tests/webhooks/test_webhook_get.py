"""GET deliveries of the outbox (a stream's `status_url_method`): the payload as query fields,
signed over the URL as requested, durable and ordered with the POSTs of the same key. Against a
real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from webhook_receiver import Receiver

from callplane.store import Store
from callplane.store import schema as store_schema
from callplane.webhooks import WebhookOutbox, query_string, verify_signature, with_query

KEY = "signing-key-1"

PAYLOAD: dict[str, Any] = {
    "event_type": "calling.call.stream",
    "timestamp": 1764270000.25,
    "params": {
        "call_id": "c1",
        "state": "streaming",
        "url": "wss://app.example/a b?x=1&y=[2]",
        "name": "é & ü",
        "ok": True,
        "reason": None,
        "tracks": ["inbound", "outbound"],
        "nothing": {},
    },
}


def unflatten(query: str) -> dict[str, Any]:
    """What PHP, Rack or qs make of a bracketed query (lists as index-keyed objects)."""
    out: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=True):
        head, *rest = re.split(r"\[", name)
        keys = [head, *(k.rstrip("]") for k in rest)]
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return out


def test_query_string_flattens_nested_json_with_brackets() -> None:
    query = query_string(PAYLOAD)
    assert " " not in query and "[" not in query and "+" not in query  # RFC 3986 encoded
    assert unflatten(query) == {
        "event_type": "calling.call.stream",
        "timestamp": "1764270000.25",
        "params": {
            "call_id": "c1",
            "state": "streaming",
            "url": "wss://app.example/a b?x=1&y=[2]",
            "name": "é & ü",
            "ok": "true",
            "reason": "",
            "tracks": {"0": "inbound", "1": "outbound"},
        },
    }
    names = [name for name, _ in parse_qsl(query, keep_blank_values=True)]
    assert names[:3] == ["event_type", "timestamp", "params[call_id]"]  # the payload's order


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://h/p", "http://h/p?a=1"),
        ("http://h/p?t=2", "http://h/p?t=2&a=1"),
        ("http://h/p?", "http://h/p?a=1"),
        ("http://h/p?t=2&", "http://h/p?t=2&a=1"),
        ("http://h/p#frag", "http://h/p?a=1"),
    ],
)
def test_with_query_appends_to_what_the_url_has(url: str, expected: str) -> None:
    assert with_query(url, "a=1") == expected


async def test_get_carries_the_payload_in_the_query_signed_over_the_full_url(
    receiver: Receiver, tmp_path: Path
) -> None:
    store = Store.open(tmp_path / "db")
    outbox = WebhookOutbox(store, signing_key=KEY, min_backoff=0.02, max_backoff=0.1)
    try:
        configured = receiver.url("/status?tag=1")
        # Enqueued before start: the method survives in the row like everything else.
        outbox.enqueue(configured, {"n": 0}, "c1", method="POST")
        get_id = outbox.enqueue(configured, PAYLOAD, "c1", method="get")
        outbox.enqueue(configured, {"n": 2}, "c1")
        with pytest.raises(ValueError, match="GET or POST"):
            outbox.enqueue(configured, PAYLOAD, "c1", method="PUT")
        await outbox.start()
        async with asyncio.timeout(10):
            await outbox.wait_idle()
    finally:
        await outbox.stop(flush_timeout=0)
        store.close()

    assert [r.method for r in receiver.requests] == ["POST", "GET", "POST"]  # one lane, in order
    first, get, last = receiver.requests
    assert first.json == {"n": 0} and last.json == {"n": 2}
    assert get.delivery_id == get_id
    assert get.body == b"" and "content-length" not in get.headers
    assert "content-type" not in get.headers
    path, _, query = get.path.partition("?")
    assert path == "/status" and query.startswith("tag=1&")
    fields = unflatten(query)
    assert fields["tag"] == "1"
    assert fields["params"]["state"] == "streaming" and fields["params"]["name"] == "é & ü"
    requested = f"http://127.0.0.1:{receiver.port}{get.path}"
    signature = get.headers["x-signalwire-signature"]
    assert verify_signature(KEY, requested, b"", signature)
    assert not verify_signature(KEY, configured, b"", signature)
    tampered = requested.replace("streaming", "finished")
    assert tampered != requested and not verify_signature(KEY, tampered, b"", signature)


async def test_rows_queued_before_the_method_column_still_deliver_as_posts(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    monkeypatch.setattr(store_schema, "MIGRATIONS", store_schema.MIGRATIONS[:3])
    with Store.open(path) as old:
        columns = [r[1] for r in old._conn.execute("PRAGMA table_info(webhook_outbox)")]
        assert "method" not in columns
        old._conn.execute(
            "INSERT INTO webhook_outbox (ordering_key, url, body, created_at, next_attempt_at)"
            " VALUES ('c1', ?, ?, 1, 1)",
            (receiver.url("/old"), b'{"n":0}'),
        )
    monkeypatch.undo()
    store = Store.open(path)
    outbox = WebhookOutbox(store, signing_key=KEY)
    try:
        [row] = store.outbox_list("pending")
        assert row["method"] == "POST"
        await outbox.start()
        async with asyncio.timeout(10):
            await outbox.wait_idle()
    finally:
        await outbox.stop(flush_timeout=0)
        store.close()
    [request] = receiver.requests
    assert (request.method, request.path, request.json) == ("POST", "/old", {"n": 0})
    assert request.headers["content-type"] == "application/json"
