"""Commands per second of the callplane client against a minimal local server.

Sends ``calling.play.volume`` commands to a uvicorn server (raw ASGI app answering a fixed CallLeg)
running in a subprocess on 127.0.0.1, and compares:

* ``requests.Session``  - sequential, one keep-alive connection (the baseline);
* ``RestClient``        - sequential, one keep-alive connection;
* ``AsyncRestClient``   - ``--concurrency`` commands in flight (asyncio.gather + semaphore).

Optionally (``--httpx``) the same concurrent load through ``httpx.AsyncClient``, which is why
``AsyncRestClient`` has its own transport.

Usage: .venv/bin/python bench/bench_client.py [--count 3000] [--concurrency 50] [--uvloop] [--httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

CALL_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
CALL_LEG = json.dumps(
    {
        "id": CALL_ID,
        "from": "+15559876543",
        "to": "+15551234567",
        "direction": "outbound-api",
        "source": "realtime_api",
        "url": None,
        "charge": 0,
        "created_at": "2024-05-06T12:20:00Z",
        "charge_details": [],
        "status": "answered",
        "duration": None,
        "duration_ms": None,
        "billing_ms": None,
        "type": "relay_pstn_call",
        "parent_id": None,
    }
).encode()
RESPONSE_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(CALL_LEG)).encode()),
]


async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
    """Raw ASGI: drain the request, answer the fixed CallLeg."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": RESPONSE_HEADERS})
    await send({"type": "http.response.body", "body": CALL_LEG})


def serve(port: int) -> None:
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("benchmark server did not start")


def bench_requests(host: str, count: int) -> float:
    import requests

    from callplane.client._http import USER_AGENT

    body = {"command": "calling.play.volume", "id": CALL_ID, "params": {}}
    with requests.Session() as session:
        session.auth = ("proj", "token")
        session.headers.update(
            {
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
            }
        )
        url = f"http://{host}/api/calling/calls"

        def one() -> None:
            body["params"] = {"control_id": "ctrl-1", "volume": -3.0}
            response = session.post(
                url, data=json.dumps(body), headers={"Idempotency-Key": str(uuid.uuid4())}
            )
            response.raise_for_status()
            response.json()

        return timed(one, count)


def bench_sync(host: str, count: int) -> float:
    from callplane import RestClient

    with RestClient("proj", "token", host) as client:
        return timed(
            lambda: client.calling.play_volume(CALL_ID, control_id="ctrl-1", volume=-3.0), count
        )


def timed(one: Callable[[], object], count: int) -> float:
    for _ in range(min(200, count)):  # warm up: connection, caches
        one()
    started = time.perf_counter()
    for _ in range(count):
        one()
    return count / (time.perf_counter() - started)


def bench_async(host: str, count: int, concurrency: int, use_uvloop: bool) -> float:
    from callplane import AsyncRestClient

    async def run() -> float:
        async with AsyncRestClient("proj", "token", host, max_connections=concurrency) as client:
            semaphore = asyncio.Semaphore(concurrency)

            async def one() -> None:
                async with semaphore:
                    await client.calling.play_volume(CALL_ID, control_id="ctrl-1", volume=-3.0)

            await asyncio.gather(*(one() for _ in range(min(500, count))))  # warm up the pool
            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(count)))
            return count / (time.perf_counter() - started)

    if use_uvloop:
        import uvloop

        return uvloop.run(run())
    return asyncio.run(run())


def bench_httpx_async(host: str, count: int, concurrency: int) -> float:
    """httpx.AsyncClient doing the same, for comparison with AsyncRestClient's own transport."""
    import httpx

    from callplane.client._http import USER_AGENT

    async def run() -> float:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        async with httpx.AsyncClient(
            base_url=f"http://{host}", auth=("proj", "token"), headers=headers, limits=limits
        ) as client:
            semaphore = asyncio.Semaphore(concurrency)
            body = {
                "command": "calling.play.volume",
                "id": CALL_ID,
                "params": {"control_id": "ctrl-1", "volume": -3.0},
            }

            async def one() -> None:
                async with semaphore:
                    response = await client.post(
                        "/api/calling/calls",
                        content=json.dumps(body),
                        headers={"Idempotency-Key": str(uuid.uuid4())},
                    )
                    response.raise_for_status()
                    response.json()

            await asyncio.gather(*(one() for _ in range(min(200, count))))
            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(count)))
            return count / (time.perf_counter() - started)

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3000, help="commands per measurement")
    parser.add_argument("--concurrency", type=int, default=50, help="async commands in flight")
    parser.add_argument("--uvloop", action="store_true", help="also run the async client on uvloop")
    parser.add_argument(
        "--httpx", action="store_true", help="also time httpx.AsyncClient (slow: 1000 commands)"
    )
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return

    process, host = start_server()
    try:
        baseline = bench_requests(host, args.count)
        results = [
            ("requests.Session, sequential", baseline),
            ("RestClient, sequential", bench_sync(host, args.count)),
            (
                f"AsyncRestClient, {args.concurrency} concurrent",
                bench_async(host, args.count, args.concurrency, use_uvloop=False),
            ),
        ]
        if args.uvloop:
            results.append(
                (
                    f"AsyncRestClient, {args.concurrency} concurrent, uvloop",
                    bench_async(host, args.count, args.concurrency, use_uvloop=True),
                )
            )
        if args.httpx:
            results.append(
                (
                    f"httpx.AsyncClient, {args.concurrency} concurrent",
                    bench_httpx_async(host, min(args.count, 1000), args.concurrency),
                )
            )
    finally:
        process.terminate()
        process.wait(timeout=10)

    print(f"{args.count} x calling.play.volume against uvicorn on {host} (cpus: {os.cpu_count()})")
    print(f"{'client':<48}{'commands/s':>12}{'vs requests':>14}")
    for name, rate in results:
        print(f"{name:<48}{rate:>12,.0f}{rate / baseline:>13.2f}x")


if __name__ == "__main__":
    main()
