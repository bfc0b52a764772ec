"""What the whole-server benchmarks share: loopback ports, process CPU, a `callplane serve`
subprocess, and reading py-spy's folded stacks."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

LOOPBACK = "127.0.0.1"
PROJECT = "bench-project"
TOKEN = "bench-token"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the bench dies, so nothing outlives a run."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


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
    ) -> None:
        self.data_dir = data_dir
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
