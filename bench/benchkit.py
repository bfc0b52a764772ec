"""What the whole-server benchmarks share: loopback ports, process CPU, a `callplane serve`
subprocess, far ends in another process (their RTP sockets, their stdin commands, the analysis of
what they received), dialing and ending calls in bulk, and py-spy (sampling, folded stacks)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

LOOPBACK = "127.0.0.1"
PROJECT = "bench-project"
TOKEN = "bench-token"
CLK_TCK = os.sysconf("SC_CLK_TCK")

SO_TIMESTAMPNS = 35
SO_RXQ_OVFL = 40
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the bench dies, so nothing outlives a run."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


IN_NETNS = "CALLPLANE_BENCH_NETNS"


def in_private_netns(argv: list[str]) -> None:
    """Re-run this script in a network namespace of its own where only loopback exists (so a
    fuzzer's traffic cannot leave 127.0.0.1), unless it already runs in one. Exits with the
    inner run's exit code."""
    if os.environ.get(IN_NETNS) == "1":
        return
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        sys.exit("unshare and ip are needed to run this in a private network namespace")
    inner = " ".join(["exec", shlex.quote(sys.executable), *(shlex.quote(a) for a in argv)])
    env = {**os.environ, IN_NETNS: "1"}
    code = subprocess.call(["unshare", "-n", "sh", "-c", f"ip link set lo up && {inner}"], env=env)
    sys.exit(code)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def free_port_pair() -> int:
    """An even UDP port whose odd neighbour is free too (sipp's -mp uses both)."""
    for _ in range(200):
        port = free_port(socket.SOCK_DGRAM)
        port -= port % 2
        try:
            with (
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
            ):
                a.bind((LOOPBACK, port))
                b.bind((LOOPBACK, port + 1))
                return port
        except OSError:
            continue
    raise RuntimeError("no free even/odd UDP port pair")


def free_udp_block(size: int, start: int = 40000) -> int:
    """The low end of `size` consecutive UDP ports for --rtp-ports, mostly free (a sample is
    probed; the media engine skips the odd busy port)."""
    for base in range(start, 62000 - size, size):
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + size, 5):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((LOOPBACK, port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free UDP block for RTP")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (its threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class ServerProcess:
    """`callplane serve --log-level warning` as a subprocess, on free loopback ports."""

    def __init__(
        self,
        data_dir: Path,
        *,
        rtp_ports: int = 400,
        nice: int = 0,
        profile_to: Path | None = None,
        extra_args: Iterable[str] = (),
    ) -> None:
        self.data_dir = data_dir
        self.extra_args = list(extra_args)
        self.nice = nice
        self.profile_to = profile_to
        self.http_port = free_port()
        self.sip_port = free_port(socket.SOCK_DGRAM)
        self.rtp_low = free_udp_block(rtp_ports)
        self.rtp_high = self.rtp_low + rtp_ports - 1
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        python = [sys.executable]
        if self.profile_to is not None:
            python += ["-m", "cProfile", "-o", str(self.profile_to)]
        args = [
            *(["nice", "-n", str(self.nice)] if self.nice else []),
            *python,
            "-m",
            "callplane.cli",
            "serve",
            "--http",
            self.host,
            "--sip",
            f"{LOOPBACK}:{self.sip_port}",
            "--rtp-ports",
            f"{self.rtp_low}-{self.rtp_high}",
            "--data",
            str(self.data_dir),
            "--project",
            PROJECT,
            "--token",
            TOKEN,
            "--log-level",
            "warning",
            *self.extra_args,
        ]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )
        wait_until(self._healthy, 30, f"callplane to start (log: {self.log_path})")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"callplane exited: {self.log_path.read_text()[-3000:]}")
        try:
            return httpx.get(f"http://{self.host}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def print_folded_stacks(
    out: Path, title: str, *, keep: Iterable[str] = ("callplane/",), top: int = 20
) -> None:
    """Where the server's CPU went, from a py-spy `-f raw` file: own time, then inclusive time of
    the frames whose path contains one of `keep`."""
    if not out.exists():
        print(f"  [py-spy] no samples for {title} (is py-spy installed? ptrace allowed?)")
        return
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in out.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        print(f"  [py-spy] no samples for {title}")
        return
    print(f"\n[py-spy] {title}: {total} samples of the running server, by own time")
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * count / total:5.1f} %  {frame[:160]}")
    keep = tuple(keep)
    print(f"  ... and inclusive ({', '.join(keep)})")
    chosen = [kv for kv in inclusive.items() if any(k in kv[0] for k in keep)]
    for frame, count in sorted(chosen, key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * count / total:5.1f} %  {frame[:160]}")


# ============================================================================== machine counters


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy (all cores) since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK


def udp_counters() -> dict[str, int]:
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return dict(zip(rows[0][1:], map(int, rows[1][1:]), strict=True))


# ============================================================================== far end side


def big_buffers(sock: socket.socket) -> None:
    for force, plain, size in (
        (SO_RCVBUFFORCE, socket.SO_RCVBUF, 16 << 20),
        (SO_SNDBUFFORCE, socket.SO_SNDBUF, 4 << 20),
    ):
        try:  # root may exceed rmem_max / wmem_max
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, plain, size)


def bind_rtp_pair() -> tuple[socket.socket, socket.socket]:
    """A far end's RTP socket on a free even port (non-blocking, big buffers, kernel receive
    timestamps and receive-queue drop counts as ancillary data) and the socket on port+1 that
    swallows RTCP."""
    for _ in range(200):
        port = free_port(socket.SOCK_DGRAM)
        port -= port % 2
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            a.bind((LOOPBACK, port))
            b.bind((LOOPBACK, port + 1))
        except OSError:
            a.close()
            b.close()
            continue
        for s in (a, b):
            s.setblocking(False)
        big_buffers(a)
        a.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        a.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
        return a, b
    raise RuntimeError("no free even/odd UDP port pair")


async def stdin_commands(max_seconds: float) -> AsyncIterator[str]:
    """A far end's commands from the bench, one per line on stdin; ends with "quit" when stdin
    closes, and stops after `max_seconds` whatever happens (so no far end outlives a bench)."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()
    stdin_fd = sys.stdin.fileno()
    os.set_blocking(stdin_fd, False)
    pending = b""

    def on_stdin() -> None:
        nonlocal pending
        try:
            chunk = os.read(stdin_fd, 4096)
        except BlockingIOError:
            return
        if not chunk:
            lines.put_nowait("quit")
            loop.remove_reader(stdin_fd)
            return
        pending += chunk
        while b"\n" in pending:
            line, _, pending = pending.partition(b"\n")
            lines.put_nowait(line.decode().strip())

    loop.add_reader(stdin_fd, on_stdin)
    deadline = loop.time() + max_seconds
    try:
        while True:
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    cmd = await lines.get()
            except TimeoutError:
                return
            yield cmd
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(stdin_fd)


def reply(answer: dict[str, Any]) -> None:
    """A far end's answer to one command: one JSON line on stdout."""
    print(json.dumps(answer), flush=True)


def analyse(ssrc_l: list[int], seq_l: list[int], ts_l: list[int], t_l: list[int]) -> dict[str, Any]:
    """Per-stream spacing, lateness and loss from arrival records (any order across streams)."""
    import numpy as np

    if not t_l:
        return {"packets": 0, "streams": 0}
    ssrc = np.array(ssrc_l, dtype=np.uint32)
    seq = np.array(seq_l, dtype=np.int64)
    ts = np.array(ts_l, dtype=np.int64)
    arr = np.array(t_l, dtype=np.int64)
    order = np.lexsort((arr, ssrc))
    ssrc, seq, ts, arr = ssrc[order], seq[order], ts[order], arr[order]
    starts = np.flatnonzero(np.r_[True, ssrc[1:] != ssrc[:-1]])
    ends = np.r_[starts[1:], ssrc.size]
    gaps: list[Any] = []
    lateness: list[Any] = []
    lost = expected = dup_or_reorder = 0
    streams = 0
    for a, b in zip(starts, ends, strict=True):
        if b - a < 10:
            continue
        streams += 1
        t = arr[a:b]
        gaps.append(np.diff(t))
        dseq = (np.diff(seq[a:b]) + 32768) % 65536 - 32768  # signed, wrap-aware
        ext_seq = np.r_[0, np.cumsum(dseq)]
        span = int(ext_seq.max() - ext_seq.min()) + 1
        unique = np.unique(ext_seq).size
        expected += span
        lost += span - unique
        dup_or_reorder += int(np.count_nonzero(dseq <= 0))
        dts = (np.diff(ts[a:b]) + (1 << 31)) % (1 << 32) - (1 << 31)
        ideal = np.r_[0, np.cumsum(dts)] * (1e9 / 8000)  # ns since the stream's first packet
        offset = t - ideal
        lateness.append(offset - offset.min())
    if not gaps:
        return {"packets": int(arr.size), "streams": 0}
    g = np.concatenate(gaps) / 1e6  # ms
    lat = np.concatenate(lateness) / 1e6
    duration = (arr.max() - arr.min()) / 1e9
    return {
        "packets": int(arr.size),
        "streams": streams,
        "pps_per_stream": float(arr.size / streams / duration) if duration else 0.0,
        "spacing_p50": float(np.percentile(g, 50)),
        "spacing_p99": float(np.percentile(g, 99)),
        "spacing_p1": float(np.percentile(g, 1)),
        "spacing_max": float(g.max()),
        "dev_p50": float(np.percentile(np.abs(g - 20.0), 50)),
        "dev_p99": float(np.percentile(np.abs(g - 20.0), 99)),
        "gaps_over_40ms": int(np.count_nonzero(g > 40.0)),
        "lateness_p50": float(np.percentile(lat, 50)),
        "lateness_p99": float(np.percentile(lat, 99)),
        "lateness_max": float(lat.max()),
        "late_over_20ms": int(np.count_nonzero(lat > 20.0)),
        "lost": lost,
        "expected": expected,
        "dup_or_reorder": dup_or_reorder,
    }


# ============================================================================== bench side


class FarEndProc:
    """A far end running as `script --farend ARGS...` in another process, driven by one-line
    commands on its stdin; its first line announces {"sip_port": N}, then it answers each
    command with one JSON line."""

    def __init__(self, script: str, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, script, "--farend", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        self.sip_port = int(self._read(30)["sip_port"])

    def uri(self, user: str) -> str:
        return f"sip:{user}@{LOOPBACK}:{self.sip_port}"

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError("far end did not answer")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("far end exited")
        result: dict[str, Any] = json.loads(line)
        return result

    def ask(self, cmd: str, timeout: float = 60) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd.encode() + b"\n")
        self.proc.stdin.flush()
        return self._read(timeout)

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                result = self.ask("quit", timeout=10)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return result


class Spy:
    """`py-spy record --nonblocking` of the server for a fixed duration (raw folded stacks)."""

    def __init__(self, pid: int, out: Path, seconds: float, native: bool) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        cmd = [exe, "record", "-p", str(pid), "-r", "250", "-d", str(int(seconds)), "-f", "raw"]
        # --native needs to stop the process for each sample (it then perturbs the timing).
        cmd += ["-o", str(out), *(["--native"] if native else ["--nonblocking"])]
        self.out = out
        self.err = out.with_suffix(".err")
        with self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=die_with_parent
            )

    def report(self, top: int = 30) -> None:
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if not self.out.exists():
            print("  [py-spy] no samples (is py-spy installed? ptrace allowed?)")
            print("  " + self.err.read_text(errors="replace")[-1500:])
            return
        print_folded_stacks(self.out, f"the running server ({self.out})", top=top)


async def dial_all(
    server: ServerProcess,
    n: int,
    dial: Callable[[int], tuple[str, dict[str, Any]]],
    concurrency: int,
) -> tuple[list[str], list[str]]:
    """Dials calls 0..n-1, `concurrency` at a time; `dial(i)` gives call i's `to` and SWML.
    Returns the call ids and the errors."""
    from callplane import AsyncRestClient

    ids: list[str] = []
    errors: list[str] = []
    async with AsyncRestClient(PROJECT, TOKEN, server.host) as client:
        todo = iter(range(n))

        async def worker() -> None:
            for i in todo:
                to, swml = dial(i)
                try:
                    leg = await client.calling.dial(from_="+15551230000", to=to, swml=swml)
                    ids.append(leg["id"])
                except Exception as exc:
                    errors.append(repr(exc)[:200])

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ids, errors


async def end_all(server: ServerProcess, ids: list[str], concurrency: int) -> int:
    """calling.end on every call; returns how many failed (already ended ones count)."""
    from callplane import AsyncRestClient

    failed = 0
    async with AsyncRestClient(PROJECT, TOKEN, server.host) as client:
        queue = list(ids)

        async def worker() -> None:
            nonlocal failed
            while queue:
                call_id = queue.pop()
                try:
                    await client.calling.end(call_id)
                except Exception:
                    failed += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failed
