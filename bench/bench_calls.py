"""End-to-end latency and throughput of a real `callplane serve` process placing SIP calls.

    .venv/bin/python bench/bench_calls.py [--dials 200] [--concurrency 20] [--commands 5000]
        [--command-concurrency 50] [--py-spy [--native]] [--profile] [--keep]

Starts `callplane serve --log-level warning` as a subprocess (own temp data dir, free ports, all on
127.0.0.1), a webhook receiver (a small asyncio server in its own process, so it shares no GIL with
the clients) and sipp (`-sn uas -m N`, which answers at once and keeps each call until BYE), then:

1. dial -> `answered`: from the moment the dial POST is sent to the arrival of the `answered`
   `calling.call.state` webhook (status_events answered+ended); the POST response time on its
   own; POST response -> answered, split into "POST sent -> event emitted by the server" and
   "emitted -> delivered" (the webhook outbox), using the event's own `timestamp`. The inline SWML
   hangs up at once; each dial also waits for its `ended` webhook (not in the figure).
   (a) sequential with RestClient, (b) `--concurrency` workers with AsyncRestClient.
2. `calling.play.volume` (-3/+3 dB alternating) on one live call playing `ringtone us`
   (control_id p1): `--commands` commands (a) sequential with RestClient (keep-alive),
   (b) AsyncRestClient with `--command-concurrency` in flight, (c) a bare asyncio HTTP/1.1 client
   on as many connections, with and without an Idempotency-Key (what the key costs the server).
   Commands/s and latency p50/p90/p99/max.
3. The server's CPU time (utime + stime from /proc/PID/stat) per call and per command.

`--py-spy` samples the server with py-spy during each phase (`.venv/bin/pip install py-spy`) and
prints where its CPU goes; `--profile` runs it under cProfile instead (inflates every figure, and
cProfile's counts for coroutines are per resumption). Takes ~30 s with the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchkit import (
    LOOPBACK,
    PROJECT,
    TOKEN,
    free_port,
    free_port_pair,
    print_folded_stacks,
)
from benchkit import ServerProcess as Server
from callplane import AsyncRestClient, RestClient

HANGUP_SWML = {"version": "1.0.0", "sections": {"main": [{"hangup": {}}]}}
# Keeps the call up until calling.end (sleep -1 = forever).
HOLD_SWML = {"version": "1.0.0", "sections": {"main": [{"sleep": -1}]}}


# ---------------------------------------------------------------------------------- helpers


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(label: str, seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (
        f"  {label:<34} n={len(ms):<5} median {pct(ms, 50):7.2f}  p90 {pct(ms, 90):7.2f}  "
        f"p99 {pct(ms, 99):7.2f}  max {max(ms):7.2f}  ms"
    )


# ---------------------------------------------------------------------------------- receiver


RECEIVER_SCRIPT = r"""
import asyncio, json, socket, sys, time

out = sys.stdout


async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length) if length else b""
            at, wall = time.perf_counter(), time.time()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            try:
                event = json.loads(body)
                kind, params = event["event_type"], event["params"]
                state = {"calling.call.state": params.get("call_state"),
                         "calling.call.play": "play:%s" % params.get("state")}.get(kind) or "-"
                lag = wall - float(event["timestamp"])
                out.write("%s %s %s %r %r\n" % (kind, params.get("call_id", "-"), state, at, lag))
            except Exception:
                out.write("? - - %r 0\n" % at)
            out.flush()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    server = await asyncio.start_server(handle, sock=sock)
    print(sock.getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()

try:
    import uvloop
    uvloop.run(main())
except ImportError:
    asyncio.run(main())
"""


class Receiver:
    """Webhook receiver: a small asyncio HTTP/1.1 (keep-alive) server in its own process on
    127.0.0.1, so it shares no GIL or event loop with the bench's clients.

    It stamps each event's arrival with perf_counter() (CLOCK_MONOTONIC, the same clock in every
    process) and its lag behind the event's own `timestamp` (set by the server when it emitted the
    event, i.e. the time spent in the webhook outbox), and reports them on its stdout. A reader
    thread here files them by (call id, state) for `calling.call.state` and (call id, "play:" +
    state) for `calling.call.play`, and wakes whoever waits for them.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arrivals: dict[tuple[str, str], float] = {}
        self.lags: dict[tuple[str, str], float] = {}
        self.waiters: dict[tuple[str, str], list[Callable[[float], None]]] = {}
        self.by_type: dict[str, int] = {}
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.thread: threading.Thread | None = None

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    def start(self) -> Receiver:
        clock = time.get_clock_info("perf_counter").implementation
        if "CLOCK_MONOTONIC" not in clock:
            raise RuntimeError(f"perf_counter is {clock}: not comparable across processes")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RECEIVER_SCRIPT],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=5)

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                kind, call_id, state, at_text, lag_text = line.decode().split()
                at, lag = float(at_text), float(lag_text)
            except ValueError:
                continue
            key = (call_id, state)
            with self.lock:
                self.by_type[kind] = self.by_type.get(kind, 0) + 1
                if key in self.arrivals:
                    continue  # a redelivery: the first arrival counts
                self.arrivals[key] = at
                self.lags[key] = lag
                callbacks = self.waiters.pop(key, [])
            for callback in callbacks:
                callback(at)

    def on(self, call_id: str, state: str, callback: Callable[[float], None]) -> None:
        """Call `callback(arrival_time)` once the event is in (at once if it already is)."""
        key = (call_id, state)
        with self.lock:
            at = self.arrivals.get(key)
            if at is None:
                self.waiters.setdefault(key, []).append(callback)
                return
        callback(at)

    def wait(self, call_id: str, state: str, timeout: float = 15.0) -> float:
        done = threading.Event()
        box: list[float] = []

        def hit(at: float) -> None:
            box.append(at)
            done.set()

        self.on(call_id, state, hit)
        if not done.wait(timeout):
            raise TimeoutError(f"no {state!r} webhook for call {call_id} within {timeout} s")
        return box[0]

    async def wait_async(self, call_id: str, state: str) -> float:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[float] = loop.create_future()

        def settle(at: float) -> None:
            if not future.done():
                future.set_result(at)

        def hit(at: float) -> None:
            loop.call_soon_threadsafe(settle, at)

        self.on(call_id, state, hit)
        async with asyncio.timeout(15.0):
            return await future


# ---------------------------------------------------------------------------------- processes


class Sipp:
    """`sipp -sn uas -m CALLS` on 127.0.0.1: answers every INVITE at once, keeps it until BYE."""

    def __init__(self, calls: int, workdir: Path, timeout: float) -> None:
        self.calls = calls
        self.workdir = workdir
        self.timeout = timeout
        self.port = free_port(socket.SOCK_DGRAM)
        self.media_port = free_port_pair()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"sip:bench@{LOOPBACK}:{self.port}"

    def start(self) -> Sipp:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [
            "sipp",
            "-sn",
            "uas",
            "-i",
            LOOPBACK,
            "-p",
            str(self.port),
            "-mi",
            LOOPBACK,
            "-mp",
            str(self.media_port),
            "-m",
            str(self.calls),
            "-nostdin",
            "-timeout",
            f"{int(self.timeout)}s",
            "-trace_err",
        ]
        self.proc = subprocess.Popen(
            cmd, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(0.3)  # sipp binds its sockets before its first step
        if self.proc.poll() is not None:
            raise RuntimeError(f"sipp exited at once with {self.proc.returncode}")
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=3)  # it exits by itself after -m calls
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Spy:
    """`py-spy record` of the server during one phase (optional: `pip install py-spy`).

    Samples only threads that are running (no --idle), so the sample counts approximate CPU time.
    """

    def __init__(self, pid: int, out: Path, native: bool) -> None:
        self.pid = pid
        self.out = out
        self.native = native
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Spy:
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        cmd = [exe, "record", "-p", str(self.pid), "-r", "200", "-f", "raw", "--nolineno"]
        cmd += ["-o", str(self.out), *(["--native"] if self.native else [])]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # let it attach
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # writes the output and exits
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def report(self, title: str, top: int = 18) -> None:
        print_folded_stacks(
            self.out,
            title,
            keep=("callplane/", "httpx/", "httpcore/", "uvicorn/", "starlette/", "sqlite"),
            top=top,
        )


@contextlib.contextmanager
def spying(server: Server, args: argparse.Namespace, tmp: Path, name: str) -> Iterator[None]:
    if not args.py_spy:
        yield
        return
    spy = Spy(server.pid, tmp / f"{name}.folded", args.native).start()
    try:
        yield
    finally:
        spy.stop()
        spy.report(name)


@contextlib.contextmanager
def running(*things: Any) -> Iterator[None]:
    try:
        yield
    finally:
        for thing in reversed(things):
            with contextlib.suppress(Exception):
                thing.stop()


# ---------------------------------------------------------------------------------- benches


def dial_params(receiver: Receiver, to: str, swml: dict[str, Any]) -> dict[str, Any]:
    return {
        "from_": "+15551230000",
        "to": to,
        "swml": swml,
        "status_url": receiver.url("/status"),
        "status_events": ["answered", "ended"],
    }


def bench_dials_sequential(
    server: Server, receiver: Receiver, sipp: Sipp, dials: int, warmup: int
) -> None:
    params = dial_params(receiver, sipp.uri, HANGUP_SWML)
    post: list[float] = []
    answered: list[float] = []
    after_post: list[float] = []
    lag: list[float] = []  # `answered` emitted by the server -> arrival (outbox delivery)
    with RestClient(PROJECT, TOKEN, server.host) as client:
        for _ in range(warmup):
            leg = client.calling.dial(**params)
            receiver.wait(leg["id"], "ended")
        cpu0, own0, wall0 = server.cpu(), own_cpu(), time.perf_counter()
        for _ in range(dials):
            t0 = time.perf_counter()
            leg = client.calling.dial(**params)
            t1 = time.perf_counter()
            ta = receiver.wait(leg["id"], "answered")
            receiver.wait(leg["id"], "ended")
            post.append(t1 - t0)
            answered.append(ta - t0)
            after_post.append(ta - t1)
            lag.append(receiver.lags[(leg["id"], "answered")])
        wall = time.perf_counter() - wall0
        cpu = server.cpu() - cpu0
        own = own_cpu() - own0
    print(f"\n[1a] {dials} sequential dials (each waits for `ended` before the next)")
    print(summary("dial POST -> response", post))
    print(summary("dial POST -> answered webhook", answered))
    print(summary("POST response -> answered webhook", after_post))
    print(summary("  of which: emitted -> delivered", lag))
    print(
        summary(
            "  so POST sent -> answered emitted",
            [a - b for a, b in zip(answered, lag, strict=True)],
        )
    )
    print(
        f"  wall {wall:.2f} s ({dials / wall:.1f} calls/s incl. hangup); server CPU "
        f"{cpu:.2f} s = {cpu / dials * 1000:.2f} ms/call; bench process CPU {own:.2f} s"
    )


def bench_dials_concurrent(
    server: Server, receiver: Receiver, sipp: Sipp, dials: int, concurrency: int
) -> None:
    params = dial_params(receiver, sipp.uri, HANGUP_SWML)
    post: list[float] = []
    answered: list[float] = []
    after_post: list[float] = []
    lag: list[float] = []  # `answered` emitted by the server -> arrival (outbox delivery)

    async def main() -> tuple[float, float, float]:
        async with AsyncRestClient(PROJECT, TOKEN, server.host) as client:
            remaining = dials

            async def worker() -> None:
                nonlocal remaining
                while remaining > 0:
                    remaining -= 1
                    t0 = time.perf_counter()
                    leg = await client.calling.dial(**params)
                    t1 = time.perf_counter()
                    ta = await receiver.wait_async(leg["id"], "answered")
                    await receiver.wait_async(leg["id"], "ended")
                    post.append(t1 - t0)
                    answered.append(ta - t0)
                    after_post.append(ta - t1)
                    lag.append(receiver.lags[(leg["id"], "answered")])

            cpu0, own0, wall0 = server.cpu(), own_cpu(), time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - wall0, server.cpu() - cpu0, own_cpu() - own0

    wall, cpu, own = asyncio.run(main())
    print(f"\n[1b] {dials} dials, {concurrency} concurrent (AsyncRestClient; each waits `ended`)")
    print(summary("dial POST -> response", post))
    print(summary("dial POST -> answered webhook", answered))
    print(summary("POST response -> answered webhook", after_post))
    print(summary("  of which: emitted -> delivered", lag))
    print(
        summary(
            "  so POST sent -> answered emitted",
            [a - b for a, b in zip(answered, lag, strict=True)],
        )
    )
    print(
        f"  wall {wall:.2f} s ({dials / wall:.1f} calls/s incl. hangup); server CPU "
        f"{cpu:.2f} s = {cpu / dials * 1000:.2f} ms/call; bench process CPU {own:.2f} s"
    )


def bench_volume(
    server: Server, receiver: Receiver, sipp: Sipp, commands: int, concurrency: int
) -> None:
    params = dial_params(receiver, sipp.uri, HOLD_SWML)
    with RestClient(PROJECT, TOKEN, server.host) as client:
        call_id = client.calling.dial(**params)["id"]
        receiver.wait(call_id, "answered")
        client.calling.play(
            call_id,
            control_id="p1",
            play=[{"type": "ringtone", "params": {"name": "us", "duration": 600}}],
            status_url=receiver.url("/play"),
        )
        receiver.wait(call_id, "play:playing")
        # Idle baseline: what the live call (20 ms media clock, RTP out) costs with no commands.
        cpu0 = server.cpu()
        time.sleep(2.0)
        idle = (server.cpu() - cpu0) / 2.0
        print("\n[2] calling.play.volume on one live call playing `ring:us` (control_id p1)")
        print(f"  idle server CPU with the call playing: {idle * 100:.1f} % of a core")

        for i in range(200):  # warm-up
            client.calling.play_volume(call_id, control_id="p1", volume=-3.0 if i % 2 else 3.0)

        # (a) sequential, one keep-alive connection
        lat: list[float] = []
        cpu0, own0, wall0 = server.cpu(), own_cpu(), time.perf_counter()
        for i in range(commands):
            t0 = time.perf_counter()
            client.calling.play_volume(call_id, control_id="p1", volume=-3.0 if i % 2 else 3.0)
            lat.append(time.perf_counter() - t0)
        wall = time.perf_counter() - wall0
        cpu, own = server.cpu() - cpu0, own_cpu() - own0
        print(f"  (a) {commands} sequential (RestClient, keep-alive)")
        print(summary("command latency", lat))
        print(
            f"      {commands / wall:.0f} commands/s; server CPU {cpu:.2f} s = "
            f"{cpu / commands * 1e6:.0f} us/command ({(cpu - idle * wall) / commands * 1e6:.0f} "
            f"us net of the idle call); bench process CPU {own:.2f} s"
        )

        # (b) AsyncRestClient, `concurrency` in flight
        lat_b: list[float] = []

        async def main() -> tuple[float, float, float]:
            async with AsyncRestClient(PROJECT, TOKEN, server.host) as aclient:
                sem = asyncio.Semaphore(concurrency)

                async def one(i: int) -> None:
                    async with sem:
                        t0 = time.perf_counter()
                        await aclient.calling.play_volume(
                            call_id, control_id="p1", volume=-3.0 if i % 2 else 3.0
                        )
                        lat_b.append(time.perf_counter() - t0)

                await asyncio.gather(*(one(i) for i in range(concurrency * 2)))  # warm-up
                lat_b.clear()
                cpu0, own0, wall0 = server.cpu(), own_cpu(), time.perf_counter()
                await asyncio.gather(*(one(i) for i in range(commands)))
                return time.perf_counter() - wall0, server.cpu() - cpu0, own_cpu() - own0

        wall, cpu, own = asyncio.run(main())
        print(f"  (b) {commands} with AsyncRestClient, {concurrency} in flight")
        print(summary("command latency", lat_b))
        print(
            f"      {commands / wall:.0f} commands/s; server CPU {cpu:.2f} s = "
            f"{cpu / commands * 1e6:.0f} us/command ({(cpu - idle * wall) / commands * 1e6:.0f} "
            f"us net of the idle call); bench process CPU {own:.2f} s"
        )

        # (c) attribution: a bare asyncio HTTP/1.1 client (no client-side cost to speak of), with
        # and without the Idempotency-Key header that RestClient/AsyncRestClient always send.
        for with_key in (True, False):
            n, wall, cpu, lat_c = asyncio.run(
                raw_volume_commands(server, call_id, commands, concurrency, with_key)
            )
            label = "with a fresh Idempotency-Key" if with_key else "without Idempotency-Key"
            print(f"  (c) {n} raw HTTP/1.1, {concurrency} connections, {label}")
            print(summary("command latency", lat_c))
            print(
                f"      {n / wall:.0f} commands/s; server CPU {cpu:.2f} s = "
                f"{cpu / n * 1e6:.0f} us/command"
            )

        client.calling.end(call_id)
        receiver.wait(call_id, "ended")
        print("  call ended")


async def raw_volume_commands(
    server: Server, call_id: str, commands: int, concurrency: int, with_key: bool
) -> tuple[int, float, float, list[float]]:
    """`commands` play.volume POSTs over `concurrency` keep-alive connections, one in flight on
    each; returns (count, wall s, server CPU s, latencies)."""
    import base64
    import uuid

    auth = base64.b64encode(f"{PROJECT}:{TOKEN}".encode()).decode()
    conns = [await asyncio.open_connection(LOOPBACK, server.http_port) for _ in range(concurrency)]
    latencies: list[float] = []

    def request(i: int) -> bytes:
        body = json.dumps(
            {
                "command": "calling.play.volume",
                "id": call_id,
                "params": {"control_id": "p1", "volume": -3.0 if i % 2 else 3.0},
            }
        ).encode()
        key = f"Idempotency-Key: {uuid.uuid4()}\r\n" if with_key else ""
        head = (
            f"POST /api/calling/calls HTTP/1.1\r\nHost: {server.host}\r\n"
            f"Authorization: Basic {auth}\r\nContent-Type: application/json\r\n{key}"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        for i in range(n):
            data = request(i)
            t0 = time.perf_counter()
            writer.write(data)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer {head[:60]!r}")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)

    per = commands // concurrency
    await asyncio.gather(*(worker(r, w, 20) for r, w in conns))  # warm-up
    latencies.clear()
    cpu0, wall0 = server.cpu(), time.perf_counter()
    await asyncio.gather(*(worker(r, w, per) for r, w in conns))
    wall, cpu = time.perf_counter() - wall0, server.cpu() - cpu0
    for _, writer in conns:
        writer.close()
    return per * concurrency, wall, cpu, latencies


def print_profile(path: Path, top: int) -> None:
    import pstats

    print(f"\n[profile] server cProfile, top {top} by own time ({path})")
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dials", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--commands", type=int, default=5000)
    parser.add_argument("--command-concurrency", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="run the server under cProfile")
    parser.add_argument(
        "--py-spy", action="store_true", help="sample the server with py-spy, per phase"
    )
    parser.add_argument("--native", action="store_true", help="with --py-spy: native frames too")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server log)")
    args = parser.parse_args()
    if shutil.which("sipp") is None:
        print("sipp is not installed (Debian package sip-tester)", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="callplane-bench-"))
    profile_to = tmp / "server.prof" if args.profile else None
    server = Server(tmp / "data", profile_to=profile_to)
    receiver = Receiver().start()
    print(f"callplane bench: data {tmp}  (2 x {args.dials} dials, {args.commands} x 2 commands)")
    print(f"cpus: {os.cpu_count()}  python {sys.version.split()[0]}")
    started = time.perf_counter()
    try:
        with running(receiver, server):
            server.start()
            cpu_start = server.cpu()
            print(f"server pid {server.pid} on {server.host}; startup CPU {cpu_start:.2f} s")

            budget = 60 + args.dials * 0.5
            sipp = Sipp(args.warmup + args.dials, tmp / "sipp-seq", budget).start()
            with running(sipp), spying(server, args, tmp, "sequential dials"):
                bench_dials_sequential(server, receiver, sipp, args.dials, args.warmup)

            sipp = Sipp(args.dials, tmp / "sipp-conc", budget).start()
            with running(sipp), spying(server, args, tmp, "concurrent dials"):
                bench_dials_concurrent(server, receiver, sipp, args.dials, args.concurrency)

            sipp = Sipp(1, tmp / "sipp-volume", 120).start()
            with running(sipp), spying(server, args, tmp, "play.volume commands"):
                bench_volume(server, receiver, sipp, args.commands, args.command_concurrency)

            cpu_total = server.cpu() - cpu_start
            print(
                f"\nserver CPU over the whole bench: {cpu_total:.2f} s; webhooks received: "
                + ", ".join(f"{n} {t}" for t, n in sorted(receiver.by_type.items()))
            )
        if server.proc is not None and server.proc.returncode not in (0, None):
            print(f"server exited with {server.proc.returncode}")
        log = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
        if log.strip():
            lines = log.strip().splitlines()
            print(f"server log: {len(lines)} lines (warnings/errors); last ones:")
            for line in lines[-5:]:
                print("  " + line[:200])
        if profile_to is not None and profile_to.exists():
            print_profile(profile_to, 35)
    finally:
        print(f"\ntotal bench time {time.perf_counter() - started:.1f} s")
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
