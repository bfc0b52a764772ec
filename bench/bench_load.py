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
import shutil
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchkit import (
    LOOPBACK,
    SO_RXQ_OVFL,
    SO_TIMESTAMPNS,
    FarEndProc,
    Spy,
    analyse,
    bind_rtp_pair,
    dial_all,
    end_all,
    machine_busy,
    reply,
    stdin_commands,
    udp_counters,
)
from benchkit import ServerProcess as Server


def play_swml(record: bool, seconds: int) -> dict[str, Any]:
    main: list[dict[str, Any]] = []
    if record:
        main.append({"record_call": {"format": "wav", "stereo": True}})
    main.append({"play": {"url": f"ring:{seconds}:us"}})
    main.append({"hangup": {}})
    return {"version": "1.0.0", "sections": {"main": main}}


# ============================================================================== far end process


class FarEnd:
    """SIP UAS + RTP echo on `sockets` shared UDP sockets, recording kernel arrival times."""

    def __init__(self, sockets: int) -> None:
        from callplane.sip.endpoint import SipEndpoint

        self.endpoint = SipEndpoint(LOOPBACK, 0, "bench-farend")
        self.rtp: list[socket.socket] = []
        self.sinks: list[socket.socket] = []  # port+1 of each, to swallow RTCP
        for _ in range(sockets):
            rtp, rtcp = bind_rtp_pair()
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


async def farend_main(sockets: int, max_seconds: float) -> None:
    """Commands on stdin (one per line): status | begin | end | quit. Answers: JSON lines."""
    farend = FarEnd(sockets)
    port = await farend.start()
    reply({"sip_port": port})
    try:
        async for cmd in stdin_commands(max_seconds):
            if cmd == "status":
                reply(farend.status())
            elif cmd == "begin":
                farend.begin()
                reply({"ok": True})
            elif cmd.startswith("end"):
                reply(farend.end(cmd[3:].strip()))
            elif cmd == "quit":
                break
    finally:
        cpu = os.times()
        await farend.stop()
        reply({"bye": True, "cpu": cpu.user + cpu.system})


# ============================================================================== bench process


def run_one(n: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    data = tmp / f"data-{n}"
    server = Server(data, rtp_ports=args.rtp_ports, nice=args.server_nice)
    farend: FarEndProc | None = None
    result: dict[str, Any] = {"n": n, "record": args.record}
    hold = int(args.settle + args.window + n / 10 + 60)
    swml = play_swml(args.record, hold)
    try:
        server.start()
        farend = FarEndProc(
            __file__,
            ["--farend-sockets", str(args.farend_sockets), "--max-seconds", str(hold + 120)],
        )
        cpu_idle0, t_idle0 = server.cpu(), time.monotonic()
        time.sleep(1.0)
        result["idle_cpu_share"] = (server.cpu() - cpu_idle0) / (time.monotonic() - t_idle0)

        t0 = time.monotonic()
        ids, errors = asyncio.run(
            dial_all(server, n, lambda _: (farend.uri("load"), swml), args.dial_concurrency)
        )
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
