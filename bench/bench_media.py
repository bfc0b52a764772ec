"""Benchmark the media clock: CPU per call-second and send jitter with many concurrent sessions.

    .venv/bin/python bench/bench_media.py                 # 50, 200, 500 sessions, 10 s each
    .venv/bin/python bench/bench_media.py -n 500 -d 20 --loop asyncio

Each session plays an endless tone to a receiver in ANOTHER process (this script re-run with
``--receiver``), which timestamps every packet as it arrives on 127.0.0.1 and demultiplexes the
sessions by SSRC. Figures:

* CPU: process CPU seconds of the media process (time.process_time) per call-second, measured
  over the steady state only (sessions already open and sending).
* Spacing: distribution of the gap between consecutive packets of one session at the receiver
  (ideal 20 ms); p50/p99 of |gap - 20 ms|.
* Lateness: per session, each packet's arrival minus its ideal time (best-case arrival offset
  + k * 20 ms); the max over all packets is the worst lateness; the clock's own wake-up lateness
  is reported too.
* Loss / order: sequence gaps and timestamp steps other than +160.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

RECV_PORT = 40998  # inside the project's test range; the engine's own ports are OS-picked


# ---------------------------------------------------------------------------------------------
# receiver process


def run_receiver(port: int, seconds: float) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:  # root can exceed rmem_max (SO_RCVBUFFORCE = 33 on Linux); bursts must not overflow
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 8 << 20)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    # Kernel receive timestamps (SO_TIMESTAMPNS = 35 on Linux): on loopback they are taken as the
    # sender's sendto() runs, so they measure the sender, not this process's scheduling.
    sock.setsockopt(socket.SOL_SOCKET, 35, 1)
    sock.bind(("127.0.0.1", port))
    sock.settimeout(0.5)
    print("ready", flush=True)
    cap = 2_000_000
    ssrc = np.zeros(cap, dtype=np.uint32)
    seq = np.zeros(cap, dtype=np.uint16)
    ts = np.zeros(cap, dtype=np.uint32)
    arr = np.zeros(cap, dtype=np.int64)
    buf = bytearray(2048)
    n = 0
    deadline = time.monotonic() + seconds
    anc_size = socket.CMSG_SPACE(16)
    while time.monotonic() < deadline and n < cap:
        try:
            size, anc, _, _ = sock.recvmsg_into([buf], anc_size)
        except TimeoutError:
            continue
        if size < 12 or not anc:
            continue
        sec, nsec = struct.unpack_from("qq", anc[0][2])
        t = sec * 1_000_000_000 + nsec
        arr[n] = t
        seq[n] = (buf[2] << 8) | buf[3]
        ts[n] = int.from_bytes(buf[4:8], "big")
        ssrc[n] = int.from_bytes(buf[8:12], "big")
        n += 1
    result = analyse(ssrc[:n], seq[:n], ts[:n], arr[:n])
    print(json.dumps(result), flush=True)


def analyse(ssrc: np.ndarray, seq: np.ndarray, ts: np.ndarray, arr: np.ndarray) -> dict:
    gaps: list[np.ndarray] = []
    late: list[np.ndarray] = []
    seq_bad = ts_bad = 0
    streams = 0
    order = np.argsort(ssrc, kind="stable")
    ssrc, seq, ts, arr = ssrc[order], seq[order], ts[order], arr[order]
    bounds = np.flatnonzero(np.diff(ssrc)) + 1
    for idx in np.split(np.arange(ssrc.size), bounds):
        if idx.size < 10:
            continue
        streams += 1
        a = arr[idx].astype(np.float64) / 1e9
        gaps.append(np.diff(a))
        ds = np.diff(seq[idx].astype(np.int64)) % 65536
        dt = np.diff(ts[idx].astype(np.int64)) % (1 << 32)
        seq_bad += int(np.count_nonzero(ds != 1))
        ts_bad += int(np.count_nonzero(dt != 160))
        k = np.arange(idx.size) * 0.020
        offset = a - k
        late.append(offset - offset.min())
    if not gaps:
        return {"packets": int(arr.size), "streams": 0}
    g = np.concatenate(gaps)
    dev = np.abs(g - 0.020) * 1000
    lat = np.concatenate(late) * 1000
    duration = (arr.max() - arr.min()) / 1e9 if arr.size else 0
    return {
        "packets": int(arr.size),
        "streams": streams,
        "rate_per_stream": float(arr.size / streams / duration) if duration else 0.0,
        "spacing_ms_p50": float(np.percentile(g, 50) * 1000),
        "jitter_ms_p50": float(np.percentile(dev, 50)),
        "jitter_ms_p99": float(np.percentile(dev, 99)),
        "jitter_ms_max": float(dev.max()),
        "lateness_ms_p99": float(np.percentile(lat, 99)),
        "lateness_ms_max": float(lat.max()),
        "seq_not_plus_1": seq_bad,
        "ts_not_plus_160": ts_bad,
    }


# ---------------------------------------------------------------------------------------------
# sender (the media engine under test)


async def run_sessions(n: int, seconds: float, recv_port: int) -> dict:
    from callplane.media import sources
    from callplane.media.engine import MediaEngine

    # 500 sessions need 1000 ports (RTP + RTCP): let the OS pick them (port 0).
    engine = MediaEngine("127.0.0.1", (0, 0))
    await engine.start()
    tones = [sources.tone(f, None, -12.0) for f in (400, 697, 1000, 1209, 1633)]
    sessions = []
    for i in range(n):
        s = await engine.open_session()
        s.configure(("127.0.0.1", recv_port), payload_type=0 if i % 4 else 8)
        s.play(tones[i % len(tones)])
        sessions.append(s)
    await asyncio.sleep(1.0)  # warm up: caches, socket buffers, first allocations
    stats = engine.stats
    ticks0, late0, caught0, skipped0 = (
        stats.ticks,
        stats.late_ticks,
        stats.caught_up_ticks,
        stats.skipped_ticks,
    )
    stats.max_lateness = stats.max_send_lateness = 0.0
    stats.lateness.clear()
    stats.send_lateness.clear()
    tick_cpu0 = stats.tick_cpu
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    await asyncio.sleep(seconds)
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    lat = np.array(stats.lateness) * 1000
    sent = np.array(stats.send_lateness) * 1000
    result = {
        "sessions": n,
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_per_call_second_ms": cpu / (n * wall) * 1000,
        "cpu_share_of_one_core": cpu / wall,
        "tick_cpu_ms_per_tick": (stats.tick_cpu - tick_cpu0) / max(1, stats.ticks - ticks0) * 1000,
        "ticks": stats.ticks - ticks0,
        "late_ticks_over_2ms": stats.late_ticks - late0,
        "caught_up_ticks": stats.caught_up_ticks - caught0,
        "skipped_ticks": stats.skipped_ticks - skipped0,
        "clock_lateness_ms_p50": float(np.percentile(lat, 50)) if lat.size else 0.0,
        "clock_lateness_ms_p99": float(np.percentile(lat, 99)) if lat.size else 0.0,
        "clock_lateness_ms_max": stats.max_lateness * 1000,
        "last_packet_lateness_ms_p99": float(np.percentile(sent, 99)) if sent.size else 0.0,
        "last_packet_lateness_ms_max": stats.max_send_lateness * 1000,
        "send_errors": sum(s.stats_send_errors for s in sessions),
    }
    await engine.stop()
    return result


def bench(n: int, seconds: float, loop_kind: str) -> None:
    recv_port = RECV_PORT
    receiver = subprocess.Popen(
        [sys.executable, __file__, "--receiver", str(recv_port), str(seconds + 3.0)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert receiver.stdout is not None
    if receiver.stdout.readline().strip() != "ready":
        raise SystemExit("receiver failed to start")
    if loop_kind == "uvloop":
        import uvloop

        sender = uvloop.run(run_sessions(n, seconds, recv_port))
    else:
        sender = asyncio.run(run_sessions(n, seconds, recv_port))
    out, _ = receiver.communicate(timeout=seconds + 30)
    recv = json.loads(out.strip().splitlines()[-1])
    print(
        f"\n== {n} sessions, {sender['wall_s']:.1f} s, loop={loop_kind}, cpus={os.cpu_count()}\n"
        f"  media process CPU:   {sender['cpu_per_call_second_ms']:.3f} ms CPU per call-second"
        f"  ({sender['cpu_share_of_one_core'] * 100:.1f} % of one core;"
        f" tick {sender['tick_cpu_ms_per_tick']:.2f} ms CPU)\n"
        f"  clock wake-up:       lateness p50 {sender['clock_lateness_ms_p50']:.2f} ms,"
        f" p99 {sender['clock_lateness_ms_p99']:.2f} ms,"
        f" max {sender['clock_lateness_ms_max']:.2f} ms;"
        f" late(>2ms) {sender['late_ticks_over_2ms']}, caught-up {sender['caught_up_ticks']},"
        f" skipped {sender['skipped_ticks']}, send errors {sender['send_errors']}\n"
        f"  last packet of tick: lateness p99 {sender['last_packet_lateness_ms_p99']:.2f} ms,"
        f" max {sender['last_packet_lateness_ms_max']:.2f} ms (sender's view)\n"
        f"  receiver (other process): {recv.get('streams')} streams,"
        f" {recv.get('rate_per_stream', 0):.2f} pkt/s each,"
        f" spacing p50 {recv.get('spacing_ms_p50', 0):.2f} ms\n"
        f"  send jitter |gap-20ms|: p50 {recv.get('jitter_ms_p50', 0):.3f} ms,"
        f" p99 {recv.get('jitter_ms_p99', 0):.3f} ms, max {recv.get('jitter_ms_max', 0):.3f} ms\n"
        f"  packet lateness:     p99 {recv.get('lateness_ms_p99', 0):.2f} ms,"
        f" max {recv.get('lateness_ms_max', 0):.2f} ms;"
        f" seq!=+1 {recv.get('seq_not_plus_1')}, ts!=+160 {recv.get('ts_not_plus_160')}"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--receiver":
        run_receiver(int(sys.argv[2]), float(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", type=int, action="append", help="session count (repeatable)")
    ap.add_argument("-d", type=float, default=10.0, help="seconds measured per run")
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default=None)
    args = ap.parse_args()
    loop_kind = args.loop
    if loop_kind is None:
        try:
            import uvloop  # noqa: F401

            loop_kind = "uvloop"
        except ImportError:
            loop_kind = "asyncio"
    for n in args.n or [50, 200, 500]:
        bench(n, args.d, loop_kind)


if __name__ == "__main__":
    main()
