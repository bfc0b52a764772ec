"""A real 10-second receiver outage (port closed) with production-like backoff settings."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from webhook_receiver import Receiver, per_key

from callplane.store import Store
from callplane.webhooks import WebhookOutbox

OUTAGE = 10.0


async def test_ten_second_outage_then_everything_arrives_in_order(tmp_path: Path) -> None:
    receiver = Receiver()
    await receiver.start()
    url = receiver.url("/status")
    await receiver.stop()  # port closed: connection refused, like a receiver being redeployed

    store = Store.open(tmp_path / "outage.db")
    # max_backoff 2 s keeps the test's tail short; min_backoff as in the brief.
    outbox = WebhookOutbox(store, signing_key="k", min_backoff=0.5, max_backoff=2.0)
    try:
        await outbox.start()
        keys = [f"call-{i}" for i in range(10)]
        t0 = time.monotonic()
        n = 0
        # Events keep arriving during the outage, as they would from live calls.
        while time.monotonic() - t0 < OUTAGE:
            for key in keys:
                outbox.enqueue(url, {"key": key, "n": n}, key)
            n += 1
            await asyncio.sleep(0.5)
        assert receiver.requests == []
        assert store.outbox_count("pending") == n * len(keys)

        await receiver.start()  # same port
        up = time.monotonic()
        async with asyncio.timeout(15):
            await outbox.wait_idle()
        catch_up = time.monotonic() - up

        got = per_key(receiver.accepted())
        assert got == {key: list(range(n)) for key in keys}  # all, in order, none twice
        assert store.outbox_count("pending") == 0 and store.outbox_count("dead") == 0
        # Backoff ceiling is 2 s, so the first retry after the receiver is back comes within it.
        assert catch_up < 2.0 + 1.0
    finally:
        await outbox.stop(flush_timeout=0)
        store.close()
        await receiver.stop()
