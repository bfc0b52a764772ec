"""Benchmark conferences on the media clock: CPU per participant-second, send jitter, loss.

    .venv/bin/python bench/bench_conference.py                     # 1x100, 50x5, 1x100+30x5
    .venv/bin/python bench/bench_conference.py --layout 2x50 -d 20

A layout is a `+`-joined list of `<conferences>x<participants>`; `1x100+30x5` runs one
conference of 100 and thirty of 5 at the same time (250 participants). Every participant is an
RTP session in one mix group per conference, and every one talks all the time (the worst case for
the mix): the far ends are ANOTHER process (this script re-run with ``--far-ends``) that sends
each session a tone as PCMU RTP every 20 ms from one UDP socket and receives on that same socket
what the sessions send back (symmetric RTP: the sessions latch onto it). So the media process
does exactly what it does for real calls: decode, jitter buffers, mix-minus, encode, send. The far
ends timestamp every packet in the kernel and report the gap between consecutive packets of each
stream (|gap - 20 ms|: send jitter) and sequence gaps (lost or reordered packets).
``--record`` adds a group tap per conference (what a conference recording reads). CPU is the
media process's CPU over the steady state.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def run_far_ends(seconds: float) -> None:
    """The far ends: send each session its tone, receive and timestamp what comes back."""
    import select
    import struct

    from bench_media import analyse
    from callplane.media import g711

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:  # root can exceed rmem_max (SO_RCVBUFFORCE = 33 on Linux): bursts must not overflow
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 8 << 20)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS: kernel receive timestamps
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    print(sock.getsockname()[1], flush=True)
    ports = [int(p) for p in sys.stdin.readline().split()]
    freqs = (300, 500, 700, 1100, 1300, 1700, 1900, 2300)
    t = np.arange(8000) / 8000
    # One second of each tone, encoded once; 50 payloads of 160 bytes each.
    payloads = [
        g711.ulaw_encode((0.1 * 32767 * np.sin(2 * np.pi * f * t)).astype(np.int16)).tobytes()
        for f in freqs
    ]
    header = struct.Struct("!BBHII")
    cap = 2_000_000
    ssrc = np.zeros(cap, dtype=np.uint32)
    seq = np.zeros(cap, dtype=np.uint16)
    ts = np.zeros(cap, dtype=np.uint32)
    arr = np.zeros(cap, dtype=np.int64)
    buf = bytearray(2048)
    anc_size = socket.CMSG_SPACE(16)
    n = 0
    k = 0
    start = time.monotonic()
    deadline = start + seconds
    while time.monotonic() < deadline:
        due = start + k * 0.020
        if time.monotonic() >= due:
            frame = k % 50
            for i, port in enumerate(ports):
                body = payloads[i % len(payloads)][frame * 160 : (frame + 1) * 160]
                packet = header.pack(0x80, 0, k & 0xFFFF, (k * 160) & 0xFFFFFFFF, 0x1000 + i)
                with contextlib.suppress(BlockingIOError):
                    sock.sendto(packet + body, ("127.0.0.1", port))
            k += 1
            continue
        select.select([sock], [], [], max(0.0, due - time.monotonic()))
        while n < cap:
            try:
                size, anc, _, _ = sock.recvmsg_into([buf], anc_size)
            except BlockingIOError:
                break
            if size < 12 or not anc:
                continue
            sec, nsec = struct.unpack_from("qq", anc[0][2])
            arr[n] = sec * 1_000_000_000 + nsec
            seq[n] = (buf[2] << 8) | buf[3]
            ts[n] = int.from_bytes(buf[4:8], "big")
            ssrc[n] = int.from_bytes(buf[8:12], "big")
            n += 1
    print(json.dumps(analyse(ssrc[:n], seq[:n], ts[:n], arr[:n])), flush=True)


def parse_layout(text: str) -> list[int]:
    """`1x100+30x5` -> the size of each conference."""
    sizes: list[int] = []
    for part in text.split("+"):
        count, _, size = part.partition("x")
        sizes += [int(size)] * int(count)
    return sizes


async def run_conferences(
    sizes: list[int], seconds: float, record: bool, far_ends: subprocess.Popen[str]
) -> dict[str, float]:
    from callplane.media.engine import MediaEngine

    assert far_ends.stdin is not None and far_ends.stdout is not None
    far_port = int(far_ends.stdout.readline())
    engine = MediaEngine("127.0.0.1", (0, 0))
    await engine.start()
    sessions = []
    taps = 0

    def tap(tick: int, total: np.ndarray) -> None:
        nonlocal taps
        taps += 1

    for size in sizes:
        group = engine.mix_group()
        for _ in range(size):
            s = await engine.open_session()
            s.configure(("127.0.0.1", far_port), payload_type=0)
            group.add(s)
            sessions.append(s)
        if record:
            group.add_tap(tap)
    far_ends.stdin.write(" ".join(str(s.local_port) for s in sessions) + "\n")
    far_ends.stdin.flush()
    await asyncio.sleep(1.5)  # warm up: the far ends start sending, jitter buffers settle
    stats = engine.stats
    ticks0, tick_cpu0 = stats.ticks, stats.tick_cpu
    stats.lateness.clear()
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    await asyncio.sleep(seconds)
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    n = len(sessions)
    lat = np.array(stats.lateness) * 1000
    result = {
        "participants": n,
        "wall_s": wall,
        "cpu_per_participant_second_ms": cpu / (n * wall) * 1000,
        "cpu_share_of_one_core": cpu / wall,
        "tick_cpu_ms": (stats.tick_cpu - tick_cpu0) / max(1, stats.ticks - ticks0) * 1000,
        "clock_lateness_ms_p99": float(np.percentile(lat, 99)) if lat.size else 0.0,
        "send_errors": sum(s.stats_send_errors for s in sessions),
        "taps": taps,
    }
    await engine.stop()
    return result


def bench(layout: str, seconds: float, record: bool) -> None:
    sizes = parse_layout(layout)
    receiver = subprocess.Popen(
        [sys.executable, __file__, "--far-ends", str(seconds + 3.0)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        import uvloop

        sender = uvloop.run(run_conferences(sizes, seconds, record, receiver))
        loop_kind = "uvloop"
    except ImportError:
        sender = asyncio.run(run_conferences(sizes, seconds, record, receiver))
        loop_kind = "asyncio"
    out, _ = receiver.communicate(timeout=seconds + 30)
    recv = json.loads(out.strip().splitlines()[-1])
    print(
        f"\n== {layout}: {len(sizes)} conference(s), {sender['participants']:.0f} participants,"
        f" {sender['wall_s']:.1f} s, loop={loop_kind}, cpus={os.cpu_count()},"
        f" record taps={'on' if record else 'off'}\n"
        f"  CPU:     {sender['cpu_per_participant_second_ms']:.3f} ms per participant-second"
        f" ({sender['cpu_share_of_one_core'] * 100:.1f} % of one core;"
        f" tick {sender['tick_cpu_ms']:.2f} ms CPU)\n"
        f"  jitter:  |gap-20ms| p50 {recv.get('jitter_ms_p50', 0):.3f} ms,"
        f" p99 {recv.get('jitter_ms_p99', 0):.3f} ms, max {recv.get('jitter_ms_max', 0):.3f} ms"
        f" (clock wake-up p99 {sender['clock_lateness_ms_p99']:.2f} ms)\n"
        f"  loss:    {recv.get('streams')} streams at {recv.get('rate_per_stream', 0):.2f} pkt/s;"
        f" sequence gaps {recv.get('seq_not_plus_1')}, send errors {sender['send_errors']:.0f}"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--far-ends":
        run_far_ends(float(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--layout", action="append", help="e.g. 1x100, 50x5, 1x100+30x5")
    ap.add_argument("-d", type=float, default=10.0, help="seconds measured per run")
    ap.add_argument("--record", action="store_true", help="a group tap on every conference")
    args = ap.parse_args()
    for layout in args.layout or ["1x100", "50x5", "1x100+30x5"]:
        bench(layout, args.d, args.record)


if __name__ == "__main__":
    main()
