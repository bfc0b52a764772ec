"""Media load of a WHOLE `callplane serve` process: CPU per active call and RTP send jitter.

    .venv/bin/python bench/bench_load.py                  # N = 50, 200, 500; play + record
    .venv/bin/python bench/bench_load.py -n 500 --window 12 --no-record
    .venv/bin/python bench/bench_load.py -n 500 --py-spy   # + where the server's CPU goes

For each N (a fresh server every time):

1. starts `callplane serve --log-level warning` (temp data dir, free HTTP/SIP ports, an RTP range
   of 2000 ports) and a FAR END in another process: this script re-run with `--farend`. The far
   end is callplane's own SipEndpoint (a separate SIP stack) answering every INVITE with SDP that
   points at a few shared UDP sockets. Like `sipp -rtp_echo` it sends every RTP packet straight
   back to where it came from (so the server has inbound audio to record), and it stamps every
   arrival with the kernel's receive time (SO_TIMESTAMPNS; on loopback that is taken inside the
   server's sendto(), so it measures the server, not the far end's scheduling). Receive-queue
   drops at the far end are counted with SO_RXQ_OVFL. The far end runs on uvloop if available.
2. dials N calls (AsyncRestClient, --dial-concurrency in flight) with inline SWML that starts a
   background stereo WAV `record_call` and then plays `ring:<secs>:us` (--no-record: play only);
3. once every call is answered and its stream arrives at the far end, waits --settle seconds
   and measures a steady window of --window seconds:
   * server CPU: utime + stime of the server (/proc/PID/stat, all threads) over the window, per
     call-second, and as a share of one core;
   * far end, per stream (SSRC): packet spacing (gap between consecutive arrivals; p50, p99 and
     max over every stream), lateness (arrival minus the packet's ideal time from its RTP
     timestamp, relative to the stream's earliest packet; p99/max and the count later than
     20 ms), lost packets (sequence gaps) and streams seen;
4. hangs every call up with calling.end, waits for the BYEs, stops the far end and the server.

Options worth knowing: --server-nice -10 runs the server under `nice` (on a shared 2-core box the
far end and other processes otherwise preempt the media clock: the `othCPU` column shows how busy
the rest of the machine was); --tmp-dir /dev/shm puts the recordings on tmpfs (takes the disk out
of the picture); --keep keeps the temp dir, including the far end's raw arrivals (arrivals-N.npz:
SSRC, sequence, RTP timestamp, kernel arrival ns) for your own analysis.

All traffic is on 127.0.0.1. Everything started here dies with this script (PR_SET_PDEATHSIG) and
the far end also stops by itself after --max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchkit import (
    CLK_TCK,
    LOOPBACK,
    PROJECT,
    TOKEN,
    cpu_seconds,
    die_with_parent,
    print_folded_stacks,
)
from benchkit import ServerProcess as Server

SO_TIMESTAMPNS = 35
SO_RXQ_OVFL = 40
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32


def play_swml(record: bool, seconds: int) -> dict[str, Any]:
    main: list[dict[str, Any]] = []
    if record:
        main.append({"record_call": {"format": "wav", "stereo": True}})
    main.append({"play": {"url": f"ring:{seconds}:us"}})
    main.append({"hangup": {}})
    return {"version": "1.0.0", "sections": {"main": main}}


# ============================================================================== far end process


def _big_buffers(sock: socket.socket) -> None:
    for force, plain, size in (
        (SO_RCVBUFFORCE, socket.SO_RCVBUF, 16 << 20),
        (SO_SNDBUFFORCE, socket.SO_SNDBUF, 4 << 20),
    ):
        try:  # root may exceed rmem_max / wmem_max
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, plain, size)


class FarEnd:
    """SIP UAS + RTP echo on `sockets` shared UDP sockets, recording kernel arrival times."""

    def __init__(self, sockets: int) -> None:
        from callplane.sip.endpoint import SipEndpoint

        self.endpoint = SipEndpoint(LOOPBACK, 0, "bench-farend")
        self.rtp: list[socket.socket] = []
        self.sinks: list[socket.socket] = []  # port+1 of each, to swallow RTCP
        for _ in range(sockets):
            rtp, rtcp = self._bind_pair()
            self.rtp.append(rtp)
            self.sinks.append(rtcp)
        self.answered = 0
        self.ended = 0
        self.calls: list[Any] = []
        self.ssrcs_seen: set[int] = set()
        self.recording = False
        self.rx_total = 0
        self.echo_errors = 0
        self.drops = [0] * sockets  # SO_RXQ_OVFL counters (cumulative, per socket)
        self.drops_at_start = [0] * sockets
        self.cols: tuple[list[int], list[int], list[int], list[int]] = ([], [], [], [])

    @staticmethod
    def _bind_pair() -> tuple[socket.socket, socket.socket]:
        for _ in range(200):
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            probe.bind((LOOPBACK, 0))
            port = probe.getsockname()[1]
            probe.close()
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
            _big_buffers(a)
            a.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            a.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
            return a, b
        raise RuntimeError("no free even/odd UDP port pair")

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.endpoint.on_incoming = self._on_incoming
        await self.endpoint.start()
        for i, s in enumerate(self.rtp):
            loop.add_reader(s.fileno(), self._read, s, i)
        for s in self.sinks:
            loop.add_reader(s.fileno(), self._drain, s)
        return self.endpoint.port

    def _drain(self, sock: socket.socket) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                sock.recv(2048)

    def _read(self, sock: socket.socket, index: int) -> None:
        recvmsg = sock.recvmsg
        sendto = sock.sendto
        anc_size = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(4)
        unpack_from = struct.unpack_from
        ssrcs, seqs, tss, arrivals = self.cols
        recording = self.recording
        for _ in range(256):  # bounded: let the SIP socket and stdin have their turn
            try:
                data, anc, _flags, addr = recvmsg(2048, anc_size)
            except BlockingIOError:
                return
            try:
                sendto(data, addr)  # the echo, before any bookkeeping
            except OSError:
                self.echo_errors += 1
            self.rx_total += 1
            if len(data) < 12:
                continue
            t_ns = 0
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET:
                    if kind == SO_TIMESTAMPNS:
                        sec, nsec = unpack_from("qq", cdata)
                        t_ns = sec * 1_000_000_000 + nsec
                    elif kind == SO_RXQ_OVFL:
                        self.drops[index] = unpack_from("I", cdata)[0]
            _b0, _b1, seq, ts, ssrc = unpack_from("!BBHII", data)
            if recording:
                ssrcs.append(ssrc)
                seqs.append(seq)
                tss.append(ts)
                arrivals.append(t_ns)
            elif ssrc not in self.ssrcs_seen:
                self.ssrcs_seen.add(ssrc)

    async def _on_incoming(self, call: Any) -> None:
        from callplane.sip import sdp

        sock = self.rtp[self.answered % len(self.rtp)]
        answer, chosen = sdp.negotiate_answer(
            call.remote_sdp, LOOPBACK, sock.getsockname()[1], ("PCMU", "PCMA")
        )
        if chosen is None:
            await call.reject(488, "Not Acceptable Here")
            return
        self.calls.append(call)
        await call.answer(answer)
        self.answered += 1
        asyncio.get_running_loop().create_task(self._watch(call))

    async def _watch(self, call: Any) -> None:
        from callplane.sip.endpoint import Ended, Failed

        while True:
            ev = await call.events.get()
            if isinstance(ev, Ended | Failed):
                self.ended += 1
                return

    def status(self) -> dict[str, Any]:
        return {
            "answered": self.answered,
            "ended": self.ended,
            "streams": len(self.ssrcs_seen),
            "rx": self.rx_total,
        }

    def begin(self) -> None:
        self.cols = ([], [], [], [])
        self.drops_at_start = list(self.drops)
        self.recording = True

    def end(self, dump: str = "") -> dict[str, Any]:
        self.recording = False
        if dump:
            import numpy as np

            np.savez(dump, *(np.array(c, dtype=np.int64) for c in self.cols))
        result = analyse(*self.cols)
        result["farend_rx_drops"] = sum(self.drops) - sum(self.drops_at_start)
        result["echo_errors"] = self.echo_errors
        return result

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for s in [*self.rtp, *self.sinks]:
            loop.remove_reader(s.fileno())
        await self.endpoint.stop(timeout=1.0)
        for s in [*self.rtp, *self.sinks]:
            s.close()


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


async def farend_main(sockets: int, max_seconds: float) -> None:
    """Commands on stdin (one per line): status | begin | end | quit. Answers: JSON lines."""
    farend = FarEnd(sockets)
    port = await farend.start()
    print(json.dumps({"sip_port": port}), flush=True)
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
                break
            if cmd == "status":
                print(json.dumps(farend.status()), flush=True)
            elif cmd == "begin":
                farend.begin()
                print(json.dumps({"ok": True}), flush=True)
            elif cmd.startswith("end"):
                print(json.dumps(farend.end(cmd[3:].strip())), flush=True)
            elif cmd == "quit":
                break
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(stdin_fd)
        cpu = os.times()
        await farend.stop()
        print(json.dumps({"bye": True, "cpu": cpu.user + cpu.system}), flush=True)


# ============================================================================== bench process


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


class FarEndProc:
    def __init__(self, sockets: int, max_seconds: float) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--farend",
                "--farend-sockets",
                str(sockets),
                "--max-seconds",
                str(max_seconds),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        self.sip_port = int(self._read(30)["sip_port"])

    @property
    def uri(self) -> str:
        return f"sip:load@{LOOPBACK}:{self.sip_port}"

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
    server: Server, to: str, n: int, swml: dict[str, Any], concurrency: int
) -> tuple[list[str], list[str]]:
    from callplane import AsyncRestClient

    ids: list[str] = []
    errors: list[str] = []
    async with AsyncRestClient(PROJECT, TOKEN, server.host) as client:
        remaining = n

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                try:
                    leg = await client.calling.dial(from_="+15551230000", to=to, swml=swml)
                    ids.append(leg["id"])
                except Exception as exc:
                    errors.append(repr(exc)[:200])

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ids, errors


async def end_all(server: Server, ids: list[str], concurrency: int) -> int:
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
                    failed += 1  # already ended (e.g. the SWML finished) counts here

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failed


def run_one(n: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    data = tmp / f"data-{n}"
    server = Server(data, rtp_ports=args.rtp_ports, nice=args.server_nice)
    farend: FarEndProc | None = None
    result: dict[str, Any] = {"n": n, "record": args.record}
    hold = int(args.settle + args.window + n / 10 + 60)
    swml = play_swml(args.record, hold)
    try:
        server.start()
        farend = FarEndProc(args.farend_sockets, max_seconds=hold + 120)
        cpu_idle0, t_idle0 = server.cpu(), time.monotonic()
        time.sleep(1.0)
        result["idle_cpu_share"] = (server.cpu() - cpu_idle0) / (time.monotonic() - t_idle0)

        t0 = time.monotonic()
        ids, errors = asyncio.run(dial_all(server, farend.uri, n, swml, args.dial_concurrency))
        result["dial_errors"] = len(errors)
        if errors:
            print(f"  {len(errors)} dial errors, e.g. {errors[0]}")
        deadline = time.monotonic() + 60 + n / 5
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = farend.ask("status")
            if status["answered"] >= len(ids) and status["streams"] >= len(ids):
                break
            time.sleep(0.25)
        result["setup_s"] = time.monotonic() - t0
        result["answered"] = status.get("answered", 0)
        result["streams_before"] = status.get("streams", 0)
        if status.get("ended"):
            print(f"  warning: {status['ended']} calls already ended before the window")
        time.sleep(args.settle)

        spy = None
        if args.py_spy:
            spy = Spy(server.pid, tmp / f"spy-{n}.txt", args.window, args.native)
        snmp0 = udp_counters()
        farend.ask("begin")
        cpu0, fcpu0, w0, m0 = server.cpu(), farend.cpu(), time.monotonic(), machine_busy()
        time.sleep(args.window)
        stats = farend.ask(f"end {tmp / f'arrivals-{n}.npz'}" if args.keep else "end")
        cpu1, fcpu1, w1, m1 = server.cpu(), farend.cpu(), time.monotonic(), machine_busy()
        snmp1 = udp_counters()
        wall = w1 - w0
        calls = status.get("answered", n)
        result.update(stats)
        result["window_s"] = wall
        result["server_cpu_share"] = (cpu1 - cpu0) / wall
        result["cpu_ms_per_call_s"] = (cpu1 - cpu0) / (max(1, calls) * wall) * 1000
        result["farend_cpu_share"] = (fcpu1 - fcpu0) / wall
        # Everything else on the machine (other processes, softirqs not charged to ours).
        result["other_cpu_share"] = (m1 - m0 - (cpu1 - cpu0) - (fcpu1 - fcpu0)) / wall
        result["udp_rcvbuf_errors"] = snmp1.get("RcvbufErrors", 0) - snmp0.get("RcvbufErrors", 0)
        result["udp_sndbuf_errors"] = snmp1.get("SndbufErrors", 0) - snmp0.get("SndbufErrors", 0)
        if spy is not None:
            spy.report()

        still = farend.ask("status")
        result["ended_early"] = still.get("ended", 0)
        t_end = time.monotonic()
        result["end_failures"] = asyncio.run(end_all(server, ids, args.dial_concurrency))
        deadline = time.monotonic() + 30 + n / 10
        while time.monotonic() < deadline:
            still = farend.ask("status")
            if still["ended"] >= still["answered"]:
                break
            time.sleep(0.25)
        result["hangup_s"] = time.monotonic() - t_end
        result["ended"] = still.get("ended", 0)
        if args.record:
            recs = list(data.rglob("*.wav"))
            result["recordings"] = len(recs)
            result["recording_bytes"] = sum(p.stat().st_size for p in recs)
    finally:
        if farend is not None:
            bye = farend.stop()
            result["farend_total_cpu"] = bye.get("cpu")
        server.stop()
        log = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
        lines = [line for line in log.splitlines() if line.strip()]
        result["server_log_lines"] = len(lines)
        if lines:
            print(f"  server log: {len(lines)} lines; last ones:")
            for line in lines[-4:]:
                print("    " + line[:220])
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
    return result


def fmt_row(r: dict[str, Any]) -> str:
    def f(key: str, spec: str = ".2f") -> str:
        v = r.get(key)
        return format(v, spec) if isinstance(v, int | float) else "-"

    return (
        f"{r['n']:>5} {('play+rec' if r['record'] else 'play'):>8} {r.get('streams', 0):>7} "
        f"{f('cpu_ms_per_call_s', '.3f'):>9} {f('server_cpu_share', '.0%'):>7} "
        f"{f('spacing_p50'):>7} {f('spacing_p99'):>7} {f('spacing_max'):>7} {f('dev_p99'):>7} "
        f"{f('lateness_p99'):>7} {f('lateness_max'):>7} {r.get('late_over_20ms', '-'):>7} "
        f"{r.get('lost', '-'):>6} {f('farend_cpu_share', '.0%'):>7} "
        f"{f('other_cpu_share', '.0%'):>7} {r.get('udp_rcvbuf_errors', '-'):>6}"
    )


HEADER_ROW = (
    "    N     mode streams ms/call-s  srvCPU  sp.p50  sp.p99  sp.max jit.p99  lat.99 lat.max"
    " late>20   lost  farCPU  othCPU rcvErr"
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--farend", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--max-seconds", type=float, default=300.0, help=argparse.SUPPRESS)
    ap.add_argument("-n", type=int, action="append", help="concurrent calls (repeatable)")
    ap.add_argument("--window", type=float, default=12.0, help="steady-state seconds measured")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds after setup, unmeasured")
    ap.add_argument("--no-record", dest="record", action="store_false", help="play only")
    ap.add_argument("--dial-concurrency", type=int, default=20)
    ap.add_argument("--farend-sockets", type=int, default=4)
    ap.add_argument("--rtp-ports", type=int, default=2000, help="size of the server's RTP range")
    ap.add_argument(
        "--server-nice",
        type=int,
        default=0,
        help="run the server under `nice -n N` (e.g. -10: shields it from other load on the box)",
    )
    ap.add_argument("--py-spy", action="store_true", help="profile the server during the window")
    ap.add_argument("--native", action="store_true", help="with --py-spy: native frames too")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument(
        "--tmp-dir", help="parent of the temp dir (server data, recordings), e.g. /dev/shm"
    )
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    if args.farend:
        try:
            import uvloop
        except ImportError:
            asyncio.run(farend_main(args.farend_sockets, args.max_seconds))
        else:
            uvloop.run(farend_main(args.farend_sockets, args.max_seconds))
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="callplane-load-", dir=args.tmp_dir))
    print(f"callplane load bench: cpus {os.cpu_count()}, python {sys.version.split()[0]}, {tmp}")
    results = []
    try:
        for n in args.n or [50, 200, 500]:
            print(f"\n== {n} calls ({'play + record' if args.record else 'play only'})", flush=True)
            r = run_one(n, args, tmp)
            results.append(r)
            print("  " + json.dumps(r, sort_keys=True), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(
        "\nAt the far end, in ms: packet spacing (sp.), send jitter |spacing - 20 ms| (jit.) and"
        " lateness (lat.)\nagainst each packet's RTP timestamp; CPU columns: share of one core."
    )
    print(HEADER_ROW)
    for r in results:
        print(fmt_row(r))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
