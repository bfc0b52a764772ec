"""Benchmark conferences on the media clock: CPU per participant-second, send jitter, loss.

    .venv/bin/python bench/bench_conference.py                     # 1x100, 50x5, 1x100+30x5
    .venv/bin/python bench/bench_conference.py --layout 2x50 -d 20

A layout is a `+`-joined list of `<conferences>x<participants>`; `1x100+30x5` runs one
conference of 100 and thirty of 5 at the same time (250 participants). Every participant is an
RTP session in one mix group per conference and talks all the time (a speak-direction tone
stands for its far end's voice, so every member's voice goes through the mix-minus: the worst
case); `--record` adds a group tap per conference (what a conference recording reads). Packets go
to a receiver in ANOTHER process (bench_media.py's, kernel receive timestamps), which reports
the gap between consecutive packets of each stream (|gap - 20 ms|: send jitter) and sequence
gaps (lost or reordered packets). CPU is this process's CPU over the steady state.
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
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit import free_port

BENCH_MEDIA = Path(__file__).resolve().parent / "bench_media.py"


def parse_layout(text: str) -> list[int]:
    """`1x100+30x5` -> the size of each conference."""
    sizes: list[int] = []
    for part in text.split("+"):
        count, _, size = part.partition("x")
        sizes += [int(size)] * int(count)
    return sizes


async def run_conferences(
    sizes: list[int], seconds: float, record: bool, recv_port: int
) -> dict[str, float]:
    from callplane.media import sources
    from callplane.media.engine import MediaEngine

    engine = MediaEngine("127.0.0.1", (0, 0))
    await engine.start()
    freqs = (300, 500, 700, 1100, 1300, 1700, 1900, 2300)
    sessions = []
    taps = 0

    def tap(tick: int, total: np.ndarray) -> None:
        nonlocal taps
        taps += 1

    for size in sizes:
        group = engine.mix_group()
        for k in range(size):
            s = await engine.open_session()
            s.configure(("127.0.0.1", recv_port), payload_type=0)
            s.play(sources.tone(freqs[k % len(freqs)], None, -24.0), direction="speak")
            group.add(s)
            sessions.append(s)
        if record:
            group.add_tap(tap)
    await asyncio.sleep(1.0)  # warm up
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
    # Not bench_media's fixed port: another benchmark running meanwhile must not get our packets.
    recv_port = free_port(socket.SOCK_DGRAM)
    receiver = subprocess.Popen(
        [sys.executable, str(BENCH_MEDIA), "--receiver", str(recv_port), str(seconds + 3.0)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert receiver.stdout is not None
    if receiver.stdout.readline().strip() != "ready":
        raise SystemExit("receiver failed to start")
    try:
        import uvloop

        sender = uvloop.run(run_conferences(sizes, seconds, record, recv_port))
        loop_kind = "uvloop"
    except ImportError:
        sender = asyncio.run(run_conferences(sizes, seconds, record, recv_port))
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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--layout", action="append", help="e.g. 1x100, 50x5, 1x100+30x5")
    ap.add_argument("-d", type=float, default=10.0, help="seconds measured per run")
    ap.add_argument("--record", action="store_true", help="a group tap on every conference")
    args = ap.parse_args()
    for layout in args.layout or ["1x100", "50x5", "1x100+30x5"]:
        bench(layout, args.d, args.record)


if __name__ == "__main__":
    main()
