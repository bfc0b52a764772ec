"""Benchmark the durable webhook outbox.

    .venv/bin/python bench/bench_webhooks.py [--events 20000] [--deliveries 5000]

Prints:
* enqueue throughput: one SQLite commit per enqueue (WAL), with synchronous=NORMAL (the default)
  and FULL (fsync per commit), plus per-call latency percentiles;
* store.append_event throughput (the other per-event write on the hot path);
* end-to-end delivery rate to a local receiver (uvicorn + Starlette in a separate process, so the
  receiver does not share this event loop), for a pre-filled backlog and for live enqueueing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Literal

import httpx

from callplane.store import Store
from callplane.webhooks import WebhookOutbox

RECEIVER = textwrap.dedent(
    """
    import socket, sys
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    count = 0

    async def hook(request: Request) -> Response:
        global count
        await request.body()
        count += 1
        return Response(status_code=200)

    async def get_count(request: Request) -> Response:
        return PlainTextResponse(str(count))

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"]),
                            Route("/count", get_count, methods=["GET"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])
    """
)

PAYLOAD = {
    "event_type": "calling.call.play",
    "event_channel": "swml:6a1c8e2e-1b7f-4f6e-9a53-0c7c1f9f7b2a",
    "timestamp": 1714998000.123,
    "project_id": "b3f2c5a4-0000-4000-8000-000000000001",
    "space_id": "b3f2c5a4-0000-4000-8000-000000000002",
    "params": {
        "call_id": "0e1b7c2d-3f4a-4b5c-8d6e-7f8091a2b3c4",
        "node_id": "node-1",
        "control_id": "ctl-1",
        "state": "finished",
    },
}

PAYLOAD_BYTES = json.dumps(PAYLOAD, separators=(",", ":")).encode()


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def bench_enqueue(tmp: Path, n: int, sync: Literal["NORMAL", "FULL"]) -> None:
    store = Store.open(tmp / f"enqueue-{sync}.db", synchronous=sync)
    outbox = WebhookOutbox(store, signing_key="k")  # not started: measures the durable write only
    lat: list[float] = []
    t0 = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        outbox.enqueue("http://127.0.0.1:9/hook", PAYLOAD, f"call-{i % 100}")
        lat.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - t0
    store.close()
    print(
        f"enqueue (synchronous={sync:<6}) {n:>6} events  {n / elapsed:>9,.0f} events/s"
        f"  p50 {pct(lat, 50) * 1e6:6.1f} us  p99 {pct(lat, 99) * 1e6:7.1f} us"
    )


def bench_append_event(tmp: Path, n: int) -> None:
    store = Store.open(tmp / "events.db")
    t0 = time.perf_counter()
    for i in range(n):
        store.append_event(f"call-{i % 100}", PAYLOAD)
    elapsed = time.perf_counter() - t0
    store.close()
    print(f"store.append_event          {n:>6} events  {n / elapsed:>9,.0f} events/s")


async def start_receiver() -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RECEIVER, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    port = int((await proc.stdout.readline()).decode())
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as http:
        for _ in range(100):
            try:
                await http.get(base + "/count")
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    return proc, base


async def bench_delivery(
    tmp: Path, base: str, n: int, keys: int, concurrency: int, live: bool
) -> None:
    store = Store.open(tmp / f"deliver-{keys}-{concurrency}-{live}.db")
    outbox = WebhookOutbox(store, signing_key="k", max_concurrency=concurrency)
    async with httpx.AsyncClient() as http:
        before = int((await http.get(base + "/count")).text)
        if not live:
            for i in range(n):
                outbox.enqueue(base + "/hook", PAYLOAD, f"call-{i % keys}")
        t0, cpu0 = time.perf_counter(), time.process_time()
        await outbox.start()
        if live:
            for i in range(n):
                outbox.enqueue(base + "/hook", PAYLOAD, f"call-{i % keys}")
                if i % 50 == 0:
                    await asyncio.sleep(0)  # let delivery run while events keep coming
        await outbox.wait_idle()
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        await outbox.stop()
        received = int((await http.get(base + "/count")).text) - before
    store.close()
    mode = "live   " if live else "backlog"
    print(
        f"deliver {mode} keys={keys:<4} concurrency={concurrency:<3} {n:>6} events"
        f"  {n / elapsed:>8,.0f} deliveries/s  {cpu / n * 1e6:5.0f} us CPU each"
        f"  (receiver got {received})"
    )


async def bench_raw_httpx(base: str, n: int, concurrency: int) -> None:
    """Baseline: the same POSTs straight through httpx, no outbox, no SQLite."""
    body = PAYLOAD_BYTES
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits) as http:
        todo = iter(range(n))

        async def worker() -> None:
            for _ in todo:
                await http.post(base + "/hook", content=body, headers={"X": "y"})

        t0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    print(
        f"baseline raw httpx        concurrency={concurrency:<3} {n:>6} posts "
        f"  {n / elapsed:>8,.0f} requests/s    {cpu / n * 1e6:5.0f} us CPU each"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--deliveries", type=int, default=5000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bench_enqueue(tmp, args.events, "NORMAL")
        bench_enqueue(tmp, min(args.events, 2000), "FULL")
        bench_append_event(tmp, args.events)
        proc, base = await start_receiver()
        try:
            for concurrency in (1, 16):
                await bench_raw_httpx(base, args.deliveries, concurrency)
            for keys, concurrency in ((1, 16), (50, 4), (50, 16), (500, 32)):
                await bench_delivery(tmp, base, args.deliveries, keys, concurrency, live=False)
            await bench_delivery(tmp, base, args.deliveries, 50, 16, live=True)
        finally:
            proc.terminate()
            await proc.wait()


if __name__ == "__main__":
    asyncio.run(main())
