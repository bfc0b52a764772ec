"""Nothing accepted is lost: kill -9 a process in the middle of enqueueing, deliver the rest."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from pathlib import Path

from webhook_receiver import Receiver, per_key

from callplane.store import Store
from callplane.webhooks import WebhookOutbox

# The child enqueues as fast as it can and reports each id *after* enqueue returned, i.e. after
# the outbox told its caller the event was accepted. It also writes call state and events the same
# way, so the store's own durability is covered by the same kill.
CHILD = textwrap.dedent(
    """
    import sys
    from callplane.store import Store
    from callplane.webhooks import WebhookOutbox

    store = Store.open(sys.argv[1])
    outbox = WebhookOutbox(store, signing_key="k")
    url = sys.argv[2]
    n = 0
    while True:
        key = f"call-{n % 4}"
        row_id = outbox.enqueue(url, {"key": key, "n": n // 4}, key)
        seq = store.append_event(key, {"event_type": "calling.call.play", "n": n})
        store.save_call({"id": key, "project_id": "p", "leg": {"id": key, "status": "answered",
                         "created_at": "2024-01-01T00:00:00Z", "n": n}})
        sys.stdout.write(f"{row_id} {seq} {n}\\n")
        sys.stdout.flush()
        n += 1
    """
)


async def test_kill_9_while_enqueueing_loses_nothing_accepted(tmp_path: Path) -> None:
    db = tmp_path / "durable.db"
    receiver = Receiver()
    await receiver.start()
    url = receiver.url()

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(db), url, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    acknowledged: list[tuple[int, int, int]] = []
    try:
        while len(acknowledged) < 400:
            line = await proc.stdout.readline()
            assert line, f"child died early (rc={proc.returncode})"
            row_id, seq, n = map(int, line.split())
            acknowledged.append((row_id, seq, n))
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # no chance to commit or close anything
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL

    store = Store.open(db)
    try:
        pending = {row["id"] for row in store.outbox_list("pending")}
        assert {row_id for row_id, _, _ in acknowledged} <= pending
        last_n = acknowledged[-1][2]
        for key_index in range(4):
            key = f"call-{key_index}"
            events = store.list_events(key)
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            acked = [seq for _, seq, n in acknowledged if n % 4 == key_index]
            assert len(events) >= acked[-1]
        call = store.get_call("p", f"call-{last_n % 4}")
        assert call is not None and call["leg"]["n"] >= last_n

        # And the survivors are delivered, in order per key, after "restart".
        outbox = WebhookOutbox(store, signing_key="k", min_backoff=0.05)
        await outbox.start()
        async with asyncio.timeout(30):
            await outbox.wait_idle()
        await outbox.stop()
        got = per_key(receiver.accepted())
        total = len(pending)
        assert sum(len(v) for v in got.values()) == total
        for seq in got.values():
            assert seq == list(range(len(seq)))
    finally:
        store.close()
        await receiver.stop()
