"""WebhookOutbox against a real HTTP receiver on 127.0.0.1 (time scaled down by small backoffs)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from webhook_receiver import Received, Receiver, Reply, always_ok, per_key

from callplane._version import __version__
from callplane.store import Store, new_project
from callplane.webhooks import WebhookOutbox, sign, verify_signature

KEY = "project-token-123"

OutboxFactory = Callable[..., WebhookOutbox]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "callplane.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    s = Store.open(db_path)
    yield s
    s.close()


@pytest.fixture
async def make_outbox(store: Store) -> AsyncIterator[OutboxFactory]:
    made: list[WebhookOutbox] = []

    def make(**kwargs: Any) -> WebhookOutbox:
        kwargs.setdefault("signing_key", KEY)
        kwargs.setdefault("min_backoff", 0.02)
        kwargs.setdefault("max_backoff", 0.1)
        outbox = WebhookOutbox(kwargs.pop("store", store), **kwargs)
        made.append(outbox)
        return outbox

    yield make
    for outbox in made:
        await outbox.stop(flush_timeout=0)


async def idle(outbox: WebhookOutbox, limit: float = 10.0) -> None:
    async with asyncio.timeout(limit):
        await outbox.wait_idle()


def assert_in_order_and_complete(got: dict[str, list[int]], expected: dict[str, int]) -> None:
    """Every key got 0..n-1; redeliveries allowed (at least once) but never going backwards."""
    assert set(got) == set(expected)
    for key, n in expected.items():
        seq = got[key]
        assert seq == sorted(seq), f"{key} out of order: {seq}"
        assert sorted(set(seq)) == list(range(n)), f"{key} incomplete: {seq}"


async def test_post_has_headers_exact_body_and_valid_signature(
    receiver: Receiver, make_outbox: OutboxFactory, store: Store
) -> None:
    outbox = make_outbox()
    await outbox.start()
    payload = {"event_type": "calling.call.state", "params": {"call_id": "c1", "x": "é"}}
    row_id = outbox.enqueue(receiver.url("/status?tag=1"), payload, ordering_key="c1")
    await idle(outbox)

    [req] = receiver.requests
    assert req.method == "POST" and req.path == "/status?tag=1"
    assert req.body == json.dumps(payload, separators=(",", ":")).encode()
    assert req.headers["content-type"] == "application/json"
    assert req.headers["user-agent"] == f"callplane/{__version__}"
    assert req.delivery_id == row_id
    signature = req.headers["x-signalwire-signature"]
    url = receiver.url("/status?tag=1")
    assert signature == sign(KEY, url, req.body)
    assert verify_signature(KEY, url, req.body, signature)
    assert not verify_signature("other-key", url, req.body, signature)
    assert not verify_signature(KEY, url + "&x=1", req.body, signature)
    assert not verify_signature(KEY, url, req.body + b" ", signature)
    assert store.outbox_count("pending") == 0 and store.outbox_count("dead") == 0
    assert outbox.stats.delivered == 1


async def test_500_then_200_is_retried_until_delivered(
    receiver: Receiver, make_outbox: OutboxFactory, store: Store
) -> None:
    answers = iter([500, 500, 200, 200])

    async def policy(_: Received) -> Reply:
        return next(answers), {}

    receiver.policy = policy
    outbox = make_outbox()
    await outbox.start()
    outbox.enqueue(receiver.url(), {"key": "k", "n": 0}, "k")
    outbox.enqueue(receiver.url(), {"key": "k", "n": 1}, "k")
    await idle(outbox)

    assert [(r.json["n"], r.status) for r in receiver.requests] == [
        (0, 500),
        (0, 500),
        (0, 200),
        (1, 200),
    ]
    assert store.outbox_count("pending") == 0
    assert outbox.stats.failed_attempts == 2 and outbox.stats.delivered == 2


async def test_order_per_key_under_random_failures(
    receiver: Receiver, make_outbox: OutboxFactory
) -> None:
    rng = random.Random(7)

    async def flaky(_: Received) -> Reply:
        await asyncio.sleep(rng.random() * 0.003)
        return (500 if rng.random() < 0.3 else 200), {}

    receiver.policy = flaky
    outbox = make_outbox(min_backoff=0.005, max_backoff=0.03, max_concurrency=4)
    await outbox.start()
    keys = [f"call-{i}" for i in range(8)]
    for n in range(40):
        for key in keys:
            outbox.enqueue(receiver.url(), {"key": key, "n": n}, key)
    await idle(outbox, 30)

    accepted = per_key(receiver.accepted())
    assert accepted == {key: list(range(40)) for key in keys}  # each exactly once here
    # Stronger: event n of a key was never even *attempted* before n-1 had been accepted.
    done: dict[str, int] = dict.fromkeys(keys, 0)
    for r in receiver.requests:
        key, n = r.json["key"], r.json["n"]
        assert n == done[key], f"{key}: attempted {n} while {done[key]} not yet accepted"
        if r.status == 200:
            done[key] += 1
    assert outbox.stats.failed_attempts > 0  # the test did exercise retries


async def test_stuck_head_blocks_only_its_own_key(
    receiver: Receiver, make_outbox: OutboxFactory, store: Store
) -> None:
    async def policy(r: Received) -> Reply:
        return (500 if r.path == "/stuck" else 200), {}

    receiver.policy = policy
    outbox = make_outbox(max_concurrency=2)
    await outbox.start()
    for n in range(3):
        outbox.enqueue(receiver.url("/stuck"), {"key": "A", "n": n}, "A")
    for n in range(20):
        outbox.enqueue(receiver.url("/ok"), {"key": "B", "n": n}, "B")

    await receiver.wait_for(lambda: len(receiver.accepted("/ok")) == 20, 10)
    await asyncio.sleep(0.3)  # several retry rounds of A
    assert per_key(receiver.accepted("/ok")) == {"B": list(range(20))}
    stuck = [r.json["n"] for r in receiver.requests if r.path == "/stuck"]
    assert len(stuck) >= 2 and set(stuck) == {0}  # A retries its head, never skips ahead
    assert [row["ordering_key"] for row in store.outbox_list("pending")] == ["A", "A", "A"]


async def test_keys_progress_in_parallel_with_bounded_concurrency(
    receiver: Receiver, make_outbox: OutboxFactory
) -> None:
    async def slow(_: Received) -> Reply:
        await asyncio.sleep(0.05)
        return 200, {}

    receiver.policy = slow
    outbox = make_outbox(max_concurrency=4)
    await outbox.start()
    t0 = time.monotonic()
    for n in range(3):
        for k in range(16):
            outbox.enqueue(receiver.url(), {"key": f"k{k}", "n": n}, f"k{k}")
    await idle(outbox)
    elapsed = time.monotonic() - t0

    assert receiver.max_in_flight == 4
    assert elapsed < 48 * 0.05 / 2  # far from serial (2.4 s), close to 48 * 0.05 / 4
    assert_in_order_and_complete(per_key(receiver.accepted()), {f"k{k}": 3 for k in range(16)})


async def test_retry_after_is_honoured(receiver: Receiver, make_outbox: OutboxFactory) -> None:
    answers = iter([(503, {"Retry-After": "1"}), (200, {})])

    async def policy(_: Received) -> Reply:
        return next(answers)

    receiver.policy = policy
    outbox = make_outbox(min_backoff=0.01, max_backoff=0.05)
    await outbox.start()
    outbox.enqueue(receiver.url(), {"key": "k", "n": 0}, "k")
    await idle(outbox)
    first, second = receiver.requests
    assert (first.status, second.status) == (503, 200)
    assert second.at - first.at >= 0.95  # not the 10-50 ms backoff


async def test_row_older_than_max_age_is_marked_dead_and_lane_moves_on(
    receiver: Receiver, make_outbox: OutboxFactory, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    async def policy(r: Received) -> Reply:
        return (500 if r.path == "/broken" else 200), {}

    receiver.policy = policy
    outbox = make_outbox(min_backoff=0.05, max_backoff=0.1, max_age=0.4)
    await outbox.start()
    with caplog.at_level(logging.WARNING, logger="callplane.webhooks"):
        dead_id = outbox.enqueue(receiver.url("/broken"), {"key": "k", "n": 0}, "k")
        outbox.enqueue(receiver.url("/fine"), {"key": "k", "n": 1}, "k")
        await idle(outbox)

    assert [r.json["n"] for r in receiver.accepted()] == [1]
    [dead] = store.outbox_list("dead")
    assert dead["id"] == dead_id and dead["attempts"] >= 2 and dead["last_error"] == "HTTP 500"
    assert json.loads(dead["body"]) == {"key": "k", "n": 0}
    assert any("given up" in rec.getMessage() for rec in caplog.records)
    # An operator can put it back in the queue once the receiver is fixed.
    receiver.policy = always_ok
    assert outbox.retry_dead() == 1
    await idle(outbox)
    assert [r.json["n"] for r in receiver.accepted()] == [1, 0]
    assert store.outbox_count("pending") == 0 and store.outbox_count("dead") == 0


async def test_malformed_url_is_given_up_at_once(make_outbox: OutboxFactory, store: Store) -> None:
    outbox = make_outbox()
    await outbox.start()
    outbox.enqueue("ftp://127.0.0.1/nope", {"n": 0}, "k")
    await idle(outbox)
    [dead] = store.outbox_list("dead")
    assert dead["attempts"] == 1 and "not an http(s) URL" in (dead["last_error"] or "")


async def test_enqueue_before_start_is_delivered_on_start(
    receiver: Receiver, make_outbox: OutboxFactory, store: Store
) -> None:
    outbox = make_outbox()
    for n in range(5):
        outbox.enqueue(receiver.url(), {"key": "k", "n": n}, "k")
    assert store.outbox_count("pending") == 5
    await asyncio.sleep(0.05)
    assert receiver.requests == []
    await outbox.start()
    await idle(outbox)
    assert per_key(receiver.accepted()) == {"k": [0, 1, 2, 3, 4]}


async def test_receiver_timeout_is_retried_at_least_once_in_order(
    receiver: Receiver, make_outbox: OutboxFactory
) -> None:
    calls = 0

    async def first_one_hangs(_: Received) -> Reply:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.5)  # longer than the outbox's request timeout
        return 200, {}

    receiver.policy = first_one_hangs
    outbox = make_outbox(timeout=0.2)
    await outbox.start()
    for n in range(3):
        outbox.enqueue(receiver.url(), {"key": "k", "n": n}, "k")
    await idle(outbox)
    await asyncio.sleep(0.5)  # let the hung request finish on the receiver side too
    # per_key orders by arrival: the first n=0 arrived first but was answered last (too late).
    got = per_key(receiver.accepted())
    # The outbox gave up waiting and resent n=0 before n=1: at least once, still in order.
    assert_in_order_and_complete(got, {"k": 3})
    assert got["k"].count(0) == 2


async def test_stop_flushes_what_it_can(
    receiver: Receiver, make_outbox: OutboxFactory, store: Store
) -> None:
    async def slowish(_: Received) -> Reply:
        await asyncio.sleep(0.002)
        return 200, {}

    receiver.policy = slowish
    outbox = make_outbox()
    await outbox.start()
    for n in range(50):
        outbox.enqueue(receiver.url(), {"key": f"k{n % 3}", "n": n // 3}, f"k{n % 3}")
    await outbox.stop(flush_timeout=10)
    assert store.outbox_count("pending") == 0
    assert len(receiver.accepted()) == 50


async def test_stop_with_receiver_down_keeps_rows_and_returns_on_time(
    receiver: Receiver, make_outbox: OutboxFactory, store: Store
) -> None:
    url = receiver.url()
    await receiver.stop()
    outbox = make_outbox(min_backoff=0.05, max_backoff=0.1)
    await outbox.start()
    for n in range(4):
        outbox.enqueue(url, {"key": "k", "n": n}, "k")
    await asyncio.sleep(0.2)
    t0 = time.monotonic()
    await outbox.stop(flush_timeout=0.3)
    assert time.monotonic() - t0 < 1.0
    rows = store.outbox_list("pending")
    assert [json.loads(r["body"])["n"] for r in rows] == [0, 1, 2, 3]
    assert rows[0]["attempts"] >= 2 and "cannot connect" in (rows[0]["last_error"] or "")
    # Enqueue after stop still persists (delivered by the next start).
    outbox.enqueue(url, {"key": "k", "n": 4}, "k")
    assert store.outbox_count("pending") == 5


async def test_receiver_down_then_up_everything_arrives_in_order(
    receiver: Receiver, make_outbox: OutboxFactory, store: Store
) -> None:
    await receiver.stop()  # keeps its port number for the restart
    outbox = make_outbox(min_backoff=0.05, max_backoff=0.2)
    await outbox.start()
    expected = {f"call-{k}": 25 for k in range(6)}
    for n in range(25):
        for key in expected:
            outbox.enqueue(receiver.url(), {"key": key, "n": n}, key)
    await asyncio.sleep(1.0)
    assert receiver.requests == [] and store.outbox_count("pending") == 150
    await receiver.start()
    await idle(outbox, 15)
    assert_in_order_and_complete(per_key(receiver.accepted()), expected)
    assert len(receiver.accepted()) == 150  # nothing was acknowledged twice here
    assert store.outbox_count("pending") == 0


async def test_restart_mid_backlog_resumes_in_order(receiver: Receiver, db_path: Path) -> None:
    async def slow(_: Received) -> Reply:
        await asyncio.sleep(0.01)
        return 200, {}

    receiver.policy = slow
    expected = {f"call-{k}": 60 for k in range(5)}

    store1 = Store.open(db_path)
    outbox1 = WebhookOutbox(store1, signing_key=KEY, min_backoff=0.02, max_concurrency=2)
    await outbox1.start()
    for n in range(60):
        for key in expected:
            outbox1.enqueue(receiver.url(), {"key": key, "n": n}, key)
    await receiver.wait_for(lambda: len(receiver.requests) >= 40, 10)
    # "Crash-like" stop: no flush, in-flight requests are cut off, then the database is closed.
    await outbox1.stop(flush_timeout=0)
    store1.close()
    left = len(receiver.requests)
    assert 40 <= left < 300

    store2 = Store.open(db_path)
    try:
        # Up to max_concurrency requests were answered by the receiver but cut off before the
        # outbox read the answer: those stay pending and will be delivered again.
        assert 0 < store2.outbox_count("pending") <= 300 - left + 2
        outbox2 = WebhookOutbox(store2, signing_key=KEY, min_backoff=0.02, max_concurrency=2)
        await outbox2.start()
        await idle(outbox2, 30)
        await outbox2.stop()
        assert store2.outbox_count("pending") == 0
    finally:
        store2.close()
    assert_in_order_and_complete(per_key(receiver.accepted()), expected)
    # Delivery ids are stable across the restart: a redelivery carries the same id and body.
    by_id: dict[int, bytes] = {}
    for r in receiver.requests:
        assert by_id.setdefault(r.delivery_id, r.body) == r.body


async def test_outbox_can_be_restarted(receiver: Receiver, make_outbox: OutboxFactory) -> None:
    outbox = make_outbox()
    await outbox.start()
    outbox.enqueue(receiver.url(), {"key": "k", "n": 0}, "k")
    await outbox.stop()
    outbox.enqueue(receiver.url(), {"key": "k", "n": 1}, "k")
    await outbox.start()
    await idle(outbox)
    assert per_key(receiver.accepted()) == {"k": [0, 1]}


def test_verify_signature_known_vector() -> None:
    import hashlib
    import hmac

    url, body = "https://example.com/cb", b'{"a":1}'
    expected = hmac.new(b"secret", url.encode() + body, hashlib.sha256).hexdigest()
    assert sign("secret", url, body) == expected
    assert verify_signature("secret", url, body.decode(), expected.upper())
    assert not verify_signature("secret", url, body, "00" * 32)
    assert not verify_signature("secret", url, body, "")


def test_constructor_validates_backoff(store: Store) -> None:
    with pytest.raises(ValueError):
        WebhookOutbox(store, signing_key=KEY, min_backoff=2.0, max_backoff=1.0)
    with pytest.raises(ValueError):
        WebhookOutbox(store, signing_key=KEY, max_concurrency=0)


async def test_each_row_is_signed_at_send_time_with_its_project_s_key(
    receiver: Receiver, make_outbox: OutboxFactory, store: Store
) -> None:
    a, b = new_project("alpha"), new_project("beta")
    store.add_project(a)
    store.add_project(b)
    url = receiver.url("/status")
    # Queued by one process (not started), sent by another whose default key is neither's.
    make_outbox(signing_key="first-process").enqueue(
        url, {"n": 1}, ordering_key="c-a", project_id=a["id"]
    )
    make_outbox(signing_key="first-process").enqueue(
        url, {"n": 2}, ordering_key="c-b", project_id=b["id"]
    )
    outbox = make_outbox(signing_key="second-process")
    outbox.enqueue(url, {"n": 3}, ordering_key="c-none")
    await outbox.start()
    await idle(outbox)
    by_n = {req.json["n"]: req for req in receiver.requests}
    keys = {1: a["signing_key"], 2: b["signing_key"], 3: "second-process"}
    for n, key in keys.items():
        signature = by_n[n].headers["x-signalwire-signature"]
        assert verify_signature(key, url, by_n[n].body, signature)
        others = [k for m, k in keys.items() if m != n] + [a["token"], "first-process"]
        assert not any(verify_signature(k, url, by_n[n].body, signature) for k in others)


async def test_a_row_of_a_removed_project_is_given_up(
    receiver: Receiver, make_outbox: OutboxFactory, store: Store
) -> None:
    gone = new_project("gone")
    store.add_project(gone)
    outbox = make_outbox()
    outbox.enqueue(receiver.url("/s"), {"n": 1}, ordering_key="c1", project_id=gone["id"])
    store.delete_project(gone["id"])
    await outbox.start()
    await idle(outbox)
    assert receiver.requests == []
    [dead] = store.outbox_list("dead")
    assert "removed" in (dead["last_error"] or "")
