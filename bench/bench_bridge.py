"""Bridged calls through a WHOLE `callplane serve` process: CPU per leg, jitter, loss, added delay.

    .venv/bin/python bench/bench_bridge.py                      # 250 pairs = 500 legs
    .venv/bin/python bench/bench_bridge.py --pairs 20 --seconds 6
    .venv/bin/python bench/bench_bridge.py --pairs 250 --py-spy # + where the server's CPU goes

1. starts `callplane serve --log-level warning` (temp data dir, free HTTP/SIP ports, an RTP range
   for every leg) and a FAR END in another process: this script re-run with `--farend`. The far
   end is callplane's own SipEndpoint answering every INVITE with SDP that points at one of a few
   shared UDP sockets; the user part of the request URI names the leg (`a-7`, `b-7`: both parties
   of pair 7), the server's RTP address in the offer tells whose packets are whose.
2. dials every pair's A leg (AsyncRestClient, --dial-concurrency in flight) with inline SWML
   `{"connect": {"to": "sip:b-<i>@far end"}}`: A's script dials B and bridges the two, so audio
   goes A -> callplane -> B and back through one mix group in the media clock.
3. From its answer on (--rtp-after: that long after its 200 OK), every far-end leg sends a
   stream of 20 ms PCMU packets of a quiet tone (-30 dBFS), paced on an absolute schedule; the
   legs' phases are spread over the 20 ms so the server sees packets all through its tick. Once
   every --mark-every packets a leg sends a MARK instead: one packet of a loud tone (-6 dBFS),
   which nothing else in the bridge comes near.
   Every arrival is stamped with the kernel's receive time (SO_TIMESTAMPNS: on loopback that is
   taken inside the server's sendto()).
4. After --settle seconds it measures a window of --seconds:
   * server CPU: utime + stime of the server over the window, per leg-second and as a share of
     one core;
   * what the far ends receive, per stream: packet spacing (p50/p99/max), send jitter
     |spacing - 20 ms|, lateness against each packet's RTP timestamp (p99, max, > 20 ms) and
     lost packets (sequence gaps);
   * the one-way delay the bridge adds: from the far end's sendto() of a mark on one leg to the
     kernel arrival of the first loud packet on the other leg of the same pair (loopback is
     ~0.1 ms of it; the rest is the server: jitter buffer, tick phase, the tick itself).
     Marks that never arrive are counted as `marks_missed`.
5. hangs every A leg up with calling.end (the bridge hangs B up), stops the far end and the
   server.

Targets (the bridging issue): 500 legs cost no more CPU than 500 calls that play and record in
bench_load.py (run it right after, on the same machine), and the bridge adds at most 40 ms.

All traffic is on 127.0.0.1. Everything started here dies with this script (PR_SET_PDEATHSIG) and
the far end also stops by itself after --max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import struct
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from benchkit import (
    LOOPBACK,
    SO_RXQ_OVFL,
    SO_TIMESTAMPNS,
    FarEndProc,
    ServerProcess,
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

PTIME = 0.020
SAMPLES = 160
QUIET = 0.03  # of full scale: -30 dBFS
LOUD = 0.5  # -6 dBFS
LOUD_OVER = 8000  # a decoded sample above this is a mark; the quiet tone peaks near 1000
MARK_TIMEOUT_NS = 500_000_000  # a mark not heard within this is missed


def connect_swml(b_uri: str) -> dict[str, Any]:
    return {"version": "1.0.0", "sections": {"main": [{"connect": {"to": b_uri}}]}}


# ============================================================================== far end process


def _payloads() -> tuple[bytes, bytes, re.Pattern[bytes]]:
    """The quiet tone's and the mark's PCMU payloads (1 kHz: every frame is the same), and a
    pattern that finds a loud sample in a PCMU payload without decoding it."""
    import numpy as np

    from callplane.media import g711

    t = np.arange(SAMPLES) / 8000
    wave = np.sin(2 * np.pi * 1000 * t)
    quiet = g711.ulaw_encode((QUIET * 32767 * wave).astype(np.int16)).tobytes()
    loud = g711.ulaw_encode((LOUD * 32767 * wave).astype(np.int16)).tobytes()
    codes = [c for c in range(256) if abs(int(g711.ULAW_DECODE[c])) > LOUD_OVER]
    pattern = re.compile(b"[" + b"".join(re.escape(bytes([c])) for c in codes) + b"]")
    assert pattern.search(loud) and not pattern.search(quiet)
    return quiet, loud, pattern


class Leg:
    """One far-end party: what it sends (its own stream) and the marks it is waiting to hear
    on its peer."""

    __slots__ = (
        "call",
        "ended",
        "mark_phase",
        "marks",
        "name",
        "pair",
        "peer",
        "remote",
        "sent",
        "seq",
        "sock",
        "ssrc",
        "ts",
    )

    def __init__(self, name: str, pair: int, sock: socket.socket, remote: tuple[str, int]) -> None:
        self.name = name
        self.pair = pair
        self.sock = sock
        self.remote = remote
        self.ssrc = int.from_bytes(os.urandom(4), "big")
        self.seq = int.from_bytes(os.urandom(2), "big")
        self.ts = int.from_bytes(os.urandom(4), "big")
        self.sent = 0
        self.mark_phase = 0
        self.peer: Leg | None = None
        self.marks: deque[int] = deque()  # send times (ns) of marks not yet heard by the peer
        self.call: Any = None
        self.ended = False


class BridgeFarEnd:
    """Both parties of every pair: SIP UAS, paced RTP senders, and receivers that record
    arrivals and time the marks."""

    def __init__(self, sockets: int, mark_every: int, rtp_after: float, phases: int) -> None:
        from callplane.sip.endpoint import SipEndpoint

        self.endpoint = SipEndpoint(LOOPBACK, 0, "bench-bridge-farend")
        self.rtp: list[socket.socket] = []
        self.sinks: list[socket.socket] = []
        for _ in range(sockets):
            rtp, rtcp = bind_rtp_pair()
            self.rtp.append(rtp)
            self.sinks.append(rtcp)
        self.mark_every = mark_every
        self.rtp_after = rtp_after
        self.quiet, self.loud, self.loud_pattern = _payloads()
        self.legs: dict[str, Leg] = {}
        self.by_remote: dict[tuple[str, int], Leg] = {}
        self.phases = phases
        self.slots: list[list[Leg]] = [[] for _ in range(phases)]
        self.answered = 0
        self.ended = 0
        self.streams_seen: set[tuple[str, int]] = set()
        self.recording = False
        self.rx_total = 0
        self.unknown_rx = 0
        self.send_errors = 0
        self.drops = [0] * sockets
        self.drops_at_start = [0] * sockets
        self.cols: tuple[list[int], list[int], list[int], list[int]] = ([], [], [], [])
        self.delays: list[int] = []  # ns
        self.delays_by_leg: dict[str, list[int]] = {}
        self.marks_sent = 0
        self.marks_missed = 0
        self.send_late: list[float] = []  # how late the sender's slots ran, s
        self._sender: asyncio.Task[None] | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.endpoint.on_incoming = self._on_incoming
        await self.endpoint.start()
        for i, s in enumerate(self.rtp):
            loop.add_reader(s.fileno(), self._read, s, i)
        for s in self.sinks:
            loop.add_reader(s.fileno(), self._drain, s)
        self._sender = loop.create_task(self._send_loop())
        return self.endpoint.port

    # ---------------------------------------------------------------- SIP

    async def _on_incoming(self, call: Any) -> None:
        from callplane.sip import sdp

        user = str(call.request_uri).partition(":")[2].partition("@")[0]
        role, _, index = user.partition("-")
        if role not in ("a", "b") or not index.isdigit() or user in self.legs:
            await call.reject(404, "Not Found")
            return
        sock = self.rtp[len(self.legs) % len(self.rtp)]
        answer, chosen = sdp.negotiate_answer(
            call.remote_sdp, LOOPBACK, sock.getsockname()[1], ("PCMU",)
        )
        if chosen is None:
            await call.reject(488, "Not Acceptable Here")
            return
        pair = int(index)
        leg = Leg(user, pair, sock, (chosen.remote_ip, chosen.remote_port))
        leg.call = call
        # Marks of different pairs fall on different packets, so they spread over time.
        leg.mark_phase = (pair * 7 + (0 if role == "a" else self.mark_every // 2)) % max(
            1, self.mark_every
        )
        peer = self.legs.get(f"{'b' if role == 'a' else 'a'}-{index}")
        if peer is not None:
            leg.peer, peer.peer = peer, leg
        self.legs[user] = leg
        self.by_remote[leg.remote] = leg
        await call.answer(answer)
        self.answered += 1
        slot = self.slots[(pair * 3 + (role == "b")) % self.phases]
        if self.rtp_after > 0:
            asyncio.get_running_loop().call_later(self.rtp_after, slot.append, leg)
        else:
            slot.append(leg)
        asyncio.get_running_loop().create_task(self._watch(leg))

    async def _watch(self, leg: Leg) -> None:
        from callplane.sip.endpoint import Ended, Failed

        while True:
            ev = await leg.call.events.get()
            if isinstance(ev, Ended | Failed):
                leg.ended = True
                self.ended += 1
                return

    # ---------------------------------------------------------------- RTP out

    async def _send_loop(self) -> None:
        """Slot k (every 20 ms / phases) sends one packet for each leg of phase k % phases: an
        absolute schedule, so a late wake-up sends the missed slots at once instead of drifting."""
        loop = asyncio.get_running_loop()
        phases = self.phases
        slot_len = PTIME / phases
        start = loop.time()
        done = 0
        pack_into = struct.pack_into
        header = bytearray(12)
        while True:
            due = start + (done + 1) * slot_len
            delay = due - loop.time()
            if delay > 0:
                # uvloop's timers count whole milliseconds: a shorter sleep would spin.
                await asyncio.sleep(max(delay, 0.001))
            now = loop.time()
            upto = int((now - start) / slot_len)
            if upto <= done:
                continue
            if self.recording:
                self.send_late.append(now - due)
            while done < upto:
                done += 1
                for leg in self.slots[done % phases]:
                    if leg.ended:
                        continue
                    mark = self.mark_every > 0 and leg.sent % self.mark_every == leg.mark_phase
                    pack_into("!BBHII", header, 0, 0x80, 0, leg.seq, leg.ts, leg.ssrc)
                    packet = bytes(header) + (self.loud if mark else self.quiet)
                    leg.seq = (leg.seq + 1) & 0xFFFF
                    leg.ts = (leg.ts + SAMPLES) & 0xFFFFFFFF
                    leg.sent += 1
                    if mark and self.recording:
                        leg.marks.append(time.time_ns())  # the clock of SO_TIMESTAMPNS
                        self.marks_sent += 1
                    try:
                        leg.sock.sendto(packet, leg.remote)
                    except OSError:
                        self.send_errors += 1

    # ---------------------------------------------------------------- RTP in

    def _drain(self, sock: socket.socket) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                sock.recv(2048)

    def _read(self, sock: socket.socket, index: int) -> None:
        recvmsg = sock.recvmsg
        anc_size = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(4)
        unpack_from = struct.unpack_from
        ssrcs, seqs, tss, arrivals = self.cols
        recording = self.recording
        by_remote = self.by_remote
        search = self.loud_pattern.search
        for _ in range(256):  # bounded: let the sender, SIP and stdin have their turn
            try:
                data, anc, _flags, addr = recvmsg(2048, anc_size)
            except BlockingIOError:
                return
            self.rx_total += 1
            if len(data) < 12:
                continue
            leg = by_remote.get(addr)
            if leg is None:
                self.unknown_rx += 1
                continue
            if addr not in self.streams_seen:
                self.streams_seen.add(addr)
            if not recording:
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
            ssrcs.append(ssrc)
            seqs.append(seq)
            tss.append(ts)
            arrivals.append(t_ns)
            talker = leg.peer
            if talker is not None and talker.marks and search(data, 12):
                self._heard_mark(talker, t_ns)

    def _heard_mark(self, talker: Leg, t_ns: int) -> None:
        """A loud packet: it is the latest mark sent before it; older ones were lost."""
        marks = talker.marks
        sent = None
        while marks and marks[0] <= t_ns:
            if sent is not None:
                self.marks_missed += 1
            sent = marks.popleft()
        if sent is not None:
            self.delays.append(t_ns - sent)
            self.delays_by_leg.setdefault(talker.name, []).append(t_ns - sent)

    # ---------------------------------------------------------------- commands

    def status(self) -> dict[str, Any]:
        bridged = sum(1 for leg in self.legs.values() if leg.peer is not None)
        return {
            "answered": self.answered,
            "ended": self.ended,
            "streams": len(self.streams_seen),
            "bridged_legs": bridged,
            "rx": self.rx_total,
        }

    def begin(self) -> None:
        self.cols = ([], [], [], [])
        self.delays = []
        self.delays_by_leg = {}
        self.send_late = []
        self.marks_sent = self.marks_missed = 0
        for leg in self.legs.values():
            leg.marks.clear()
        self.drops_at_start = list(self.drops)
        self.recording = True

    def end(self, dump: str = "") -> dict[str, Any]:
        import numpy as np

        self.recording = False
        if dump:
            arrays: dict[str, Any] = {
                name: np.array(col, dtype=np.int64)
                for name, col in zip(("ssrc", "seq", "ts", "arrival_ns"), self.cols, strict=True)
            }
            for talker, heard in self.delays_by_leg.items():
                arrays[f"delay_ns_{talker}"] = np.array(heard, dtype=np.int64)
            np.savez(dump, **arrays)
        now = time.time_ns()
        for leg in self.legs.values():
            # Marks sent too recently to have arrived are neither heard nor missed.
            pending = [t for t in leg.marks if now - t > MARK_TIMEOUT_NS]
            self.marks_missed += len(pending)
            self.marks_sent -= len(leg.marks) - len(pending)
            leg.marks.clear()
        result = analyse(*self.cols)
        delays = np.array(self.delays, dtype=np.float64) / 1e6
        if delays.size:
            result.update(
                delay_p50=float(np.percentile(delays, 50)),
                delay_p99=float(np.percentile(delays, 99)),
                delay_min=float(delays.min()),
                delay_max=float(delays.max()),
                # Within one direction of one pair: how much of the spread is not the
                # stream's fixed offset (its phase against the server's tick).
                delay_in_leg_p99=float(
                    np.percentile(
                        np.concatenate([np.array(d) - min(d) for d in self.delays_by_leg.values()])
                        / 1e6,
                        99,
                    )
                ),
                delay_leg_medians_min=float(
                    min(np.median(d) for d in self.delays_by_leg.values()) / 1e6
                ),
                delay_leg_medians_max=float(
                    max(np.median(d) for d in self.delays_by_leg.values()) / 1e6
                ),
            )
        late = np.array(self.send_late or [0.0]) * 1000
        result.update(
            marks_sent=self.marks_sent,
            marks_heard=int(delays.size),
            marks_missed=self.marks_missed,
            farend_rx_drops=sum(self.drops) - sum(self.drops_at_start),
            farend_send_errors=self.send_errors,
            farend_unknown_rx=self.unknown_rx,
            farend_send_late_p99=float(np.percentile(late, 99)),
            farend_send_late_max=float(late.max()),
        )
        return result

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        for s in [*self.rtp, *self.sinks]:
            loop.remove_reader(s.fileno())
        await self.endpoint.stop(timeout=1.0)
        for s in [*self.rtp, *self.sinks]:
            s.close()


async def farend_main(
    sockets: int, mark_every: int, rtp_after: float, phases: int, max_seconds: float
) -> None:
    """Commands on stdin (one per line): status | begin | end | quit. Answers: JSON lines."""
    farend = BridgeFarEnd(sockets, mark_every, rtp_after, phases)
    reply({"sip_port": await farend.start()})
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


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    pairs = args.pairs
    legs_wanted = 2 * pairs
    data = tmp / "data"
    # Each leg binds an RTP/RTCP pair; leave room for busy ports in the range.
    server = ServerProcess(data, rtp_ports=4 * legs_wanted + 200, nice=args.server_nice)
    farend: FarEndProc | None = None
    result: dict[str, Any] = {"pairs": pairs}
    try:
        server.start()
        farend = FarEndProc(
            __file__,
            [
                "--farend-sockets",
                str(args.farend_sockets),
                "--mark-every",
                str(args.mark_every),
                "--rtp-after",
                str(args.rtp_after),
                "--phases",
                str(args.phases),
                "--max-seconds",
                str(args.settle + args.seconds + pairs / 2 + 180),
            ],
        )
        far = farend
        cpu_idle0, t_idle0 = server.cpu(), time.monotonic()
        time.sleep(1.0)
        result["idle_cpu_share"] = (server.cpu() - cpu_idle0) / (time.monotonic() - t_idle0)

        def dial(i: int) -> tuple[str, dict[str, Any]]:
            return far.uri(f"a-{i}"), connect_swml(far.uri(f"b-{i}"))

        t0 = time.monotonic()
        ids, errors = asyncio.run(dial_all(server, pairs, dial, args.dial_concurrency))
        result["dial_errors"] = len(errors)
        if errors:
            print(f"  {len(errors)} dial errors, e.g. {errors[0]}")
        deadline = time.monotonic() + 60 + pairs / 2
        status: dict[str, Any] = {}
        want = 2 * len(ids)
        while time.monotonic() < deadline:
            status = farend.ask("status")
            if status["answered"] >= want and status["streams"] >= want:
                break
            time.sleep(0.25)
        result["setup_s"] = time.monotonic() - t0
        result["legs"] = status.get("answered", 0)
        result["bridged_legs"] = status.get("bridged_legs", 0)
        if status.get("answered", 0) < want:
            print(f"  warning: only {status.get('answered')} of {want} legs answered")
        time.sleep(max(args.settle, args.rtp_after + 1.0))

        spy = None
        if args.py_spy:
            spy = Spy(server.pid, tmp / "spy.txt", args.seconds, args.native)
        snmp0 = udp_counters()
        farend.ask("begin")
        cpu0, fcpu0, w0, m0 = server.cpu(), farend.cpu(), time.monotonic(), machine_busy()
        time.sleep(args.seconds)
        stats = farend.ask(f"end {tmp / 'arrivals.npz'}" if args.keep else "end")
        cpu1, fcpu1, w1, m1 = server.cpu(), farend.cpu(), time.monotonic(), machine_busy()
        snmp1 = udp_counters()
        wall = w1 - w0
        legs = max(1, result["legs"])
        result.update(stats)
        result["window_s"] = wall
        result["server_cpu_share"] = (cpu1 - cpu0) / wall
        result["cpu_ms_per_leg_s"] = (cpu1 - cpu0) / (legs * wall) * 1000
        result["farend_cpu_share"] = (fcpu1 - fcpu0) / wall
        # Everything else on the machine (other processes, softirqs not charged to ours).
        result["other_cpu_share"] = (m1 - m0 - (cpu1 - cpu0) - (fcpu1 - fcpu0)) / wall
        result["udp_rcvbuf_errors"] = snmp1.get("RcvbufErrors", 0) - snmp0.get("RcvbufErrors", 0)
        if spy is not None:
            spy.report()

        still = farend.ask("status")
        result["ended_early"] = still.get("ended", 0)
        t_end = time.monotonic()
        result["end_failures"] = asyncio.run(end_all(server, ids, args.dial_concurrency))
        deadline = time.monotonic() + 30 + pairs / 5
        while time.monotonic() < deadline:
            still = farend.ask("status")
            if still["ended"] >= still["answered"]:
                break
            time.sleep(0.25)
        result["hangup_s"] = time.monotonic() - t_end
        result["ended"] = still.get("ended", 0)
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
    return result


def summary(r: dict[str, Any]) -> str:
    def f(key: str, spec: str = ".2f") -> str:
        v = r.get(key)
        return format(v, spec) if isinstance(v, int | float) else "-"

    legs = r.get("legs", 0)
    sent, missed = r.get("marks_sent", 0), r.get("marks_missed", 0)
    warn = []
    if sent and missed > sent / 100:
        warn.append(
            f"  WARNING: {missed} of {sent} marks never crossed the bridge: those streams are"
            " not relayed (their delay is not in the figures above)"
        )
    return "\n".join(
        [
            f"  legs answered {legs} of {2 * r['pairs']}, streams measured {r.get('streams', 0)},"
            f" window {f('window_s', '.1f')} s",
            f"  server CPU      {f('cpu_ms_per_leg_s', '.3f')} ms per leg-second ="
            f" {r.get('cpu_ms_per_leg_s', 0) / 10:.3f} % of a core per leg;"
            f" {f('server_cpu_share', '.0%')} of a core for {legs} legs"
            f" (idle server: {f('idle_cpu_share', '.1%')})",
            f"  received        spacing p50 {f('spacing_p50')} / p99 {f('spacing_p99')} /"
            f" max {f('spacing_max')} ms, jitter p99 {f('dev_p99')} ms",
            f"                  lateness p99 {f('lateness_p99')} / max {f('lateness_max')} ms,"
            f" {r.get('late_over_20ms', '-')} packets > 20 ms late,"
            f" lost {r.get('lost', '-')} of {r.get('expected', '-')}",
            f"  bridge delay    p50 {f('delay_p50')} / p99 {f('delay_p99')} /"
            f" max {f('delay_max')} ms over {r.get('marks_heard', 0)} marks"
            f" ({r.get('marks_missed', 0)} missed of {r.get('marks_sent', 0)})",
            f"                  per direction of a pair: medians {f('delay_leg_medians_min')}"
            f" .. {f('delay_leg_medians_max')} ms, p99 spread around its minimum"
            f" {f('delay_in_leg_p99')} ms",
            f"  other CPU       far end {f('farend_cpu_share', '.0%')}, rest of the machine"
            f" {f('other_cpu_share', '.0%')}; far end sender late p99"
            f" {f('farend_send_late_p99')} ms, rx drops {r.get('farend_rx_drops', '-')},"
            f" UDP rcvbuf errors {r.get('udp_rcvbuf_errors', '-')}",
            *warn,
        ]
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--farend", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--max-seconds", type=float, default=600.0, help=argparse.SUPPRESS)
    ap.add_argument("--pairs", type=int, default=250, help="bridged pairs (2 legs each)")
    ap.add_argument("--seconds", type=float, default=12.0, help="steady-state seconds measured")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds after setup, unmeasured")
    ap.add_argument(
        "--mark-every", type=int, default=25, help="packets between marks on each leg (0: none)"
    )
    ap.add_argument(
        "--rtp-after",
        type=float,
        default=0.0,
        help="far-end legs start sending RTP this many seconds after their 200 OK (a phone"
        " starts at once: 0); shows what the bridge costs when the server has its answers"
        " processed before the first packet arrives",
    )
    ap.add_argument(
        "--phases",
        type=int,
        default=10,
        help="send slots per 20 ms the legs are spread over (1: every leg sends at the same"
        " instant, as an echoing far end does)",
    )
    ap.add_argument("--dial-concurrency", type=int, default=20)
    ap.add_argument("--farend-sockets", type=int, default=4)
    ap.add_argument(
        "--server-nice",
        type=int,
        default=0,
        help="run the server under `nice -n N` (e.g. -10: shields it from other load on the box)",
    )
    ap.add_argument("--py-spy", action="store_true", help="profile the server during the window")
    ap.add_argument("--native", action="store_true", help="with --py-spy: native frames too")
    ap.add_argument("--json", type=Path, help="also write the result here")
    ap.add_argument(
        "--keep",
        action="store_true",
        help="keep the temp dir: server data, py-spy, the far end's arrivals and every mark's"
        " delay per talking leg (arrivals.npz)",
    )
    args = ap.parse_args()
    if args.farend:
        coro = farend_main(
            args.farend_sockets, args.mark_every, args.rtp_after, args.phases, args.max_seconds
        )
        try:
            import uvloop
        except ImportError:
            asyncio.run(coro)
        else:
            uvloop.run(coro)
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="callplane-bridge-"))
    print(
        f"callplane bridge bench: {args.pairs} pairs = {2 * args.pairs} legs, cpus"
        f" {os.cpu_count()}, python {sys.version.split()[0]}, {tmp}",
        flush=True,
    )
    try:
        r = run(args, tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print("  " + json.dumps(r, sort_keys=True))
    print(summary(r))
    if args.json:
        args.json.write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
