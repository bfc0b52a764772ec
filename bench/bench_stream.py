"""Benchmark media streams and noise reduction: CPU per stream-second, message jitter, and the
cost of one denoised call.

    .venv/bin/python bench/bench_stream.py                 # 200 streams, 10 s
    .venv/bin/python bench/bench_stream.py -n 50 -d 5
    .venv/bin/python bench/bench_stream.py --codec PCMU@60i   # 60 ms per media message

Streams: N calls (RTP sessions of a real ``MediaEngine``, each playing a tone to a UDP socket
nobody reads) each get a real ``StreamOperation`` (one-way, ``outbound_track``, PCMU) to a
WebSocket server in ANOTHER process (this script with ``--receiver``), which timestamps every
``media`` message. Figures: the CPU the streams add to the process per stream-second (the process
CPU with streams minus the same calls' CPU before the streams started), and p50/p99/max of
|gap - ptime| between consecutive messages of one stream at the receiver (``--codec`` takes any
stream codec, with the ``@<rate>h`` / ``@<ptime>i`` modifiers).

Denoise: the time of ``Denoiser.process`` on one 20 ms frame (resampling to 48 kHz, two RNNoise
frames, back to 8 kHz), i.e. the CPU one denoised call adds to each tick. With ``--quality``:
flite speech (``rms``, three sentences) mixed at 5 dB SNR with white noise and with babble (four
other flite voices talking at once), through G.711 and ``Denoiser`` exactly as the media clock
applies it, gives the SNR (speech frames over speech-free frames, as tests/e2e/test_denoise_e2e
measures it) and the word error rate of callplane's recogniser (PocketSphinx, open model) with
and without noise reduction.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import numpy as np

from benchkit import free_port
from callplane.media import rnnoise


async def receiver(port: int, seconds: float, codec: str) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    from callplane.engine.operations.stream import parse_codec

    ptime = parse_codec(codec)[2] / 1000
    settle = round(3.0 / ptime)  # the first 3 s: streams still starting

    arrivals: dict[int, list[float]] = {}

    async def handler(ws: ServerConnection) -> None:
        times = arrivals.setdefault(id(ws), [])
        async for raw in ws:
            if '"media"' in str(raw)[:20]:
                times.append(time.monotonic())

    async with serve(handler, "127.0.0.1", port, compression=None):
        print("ready", flush=True)
        cpu0 = time.process_time()
        await asyncio.sleep(seconds)
        receiver_cpu = (time.process_time() - cpu0) / seconds
    gaps = np.concatenate([np.diff(t[settle:]) for t in arrivals.values() if len(t) > settle + 10])
    dev = np.abs(gaps - ptime) * 1000
    print(
        json.dumps(
            {
                "streams": len(arrivals),
                "messages": int(sum(len(t) for t in arrivals.values())),
                "p50_ms": float(np.percentile(dev, 50)),
                "p99_ms": float(np.percentile(dev, 99)),
                "max_ms": float(dev.max()),
                "receiver_cpu_share": receiver_cpu,
            }
        ),
        flush=True,
    )


async def senders(n: int, seconds: float, codec: str) -> dict[str, Any]:
    """n calls' RTP sessions on a real MediaEngine, each with a real StreamOperation."""
    import socket
    from types import SimpleNamespace

    from callplane.engine.calls import Call, CallStatus
    from callplane.engine.operations.stream import StreamOperation, settings_from
    from callplane.media import sources
    from callplane.media.engine import MediaEngine
    from callplane.netpolicy import TargetPolicy

    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--receiver",
        str(port),
        "-d",
        str(seconds + 8),
        "--codec",
        codec,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert (await proc.stdout.readline()).strip() == b"ready"
    # The calls' RTP goes to a socket nobody reads (the kernel drops it): only the send counts.
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    engine = MediaEngine("127.0.0.1", (0, 0))
    await engine.start()
    tone = sources.tone(440, None, -12.0)
    calls = []
    for _ in range(n):
        session = await engine.open_session()
        session.configure(sink.getsockname(), payload_type=0)
        session.play(tone)
        call = Call(
            project_id="bench",
            from_="+15550000001",
            to="+15550000002",
            direction="outbound-api",
            call_type="relay_sip_call",
            status=CallStatus.ANSWERED,
        )
        call.media = session
        calls.append(call)
    await asyncio.sleep(1.0)
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(2.0)
    engine_only = (time.process_time() - cpu0) / (time.monotonic() - wall0)

    services: Any = SimpleNamespace(
        emit=lambda op, params: None, config=SimpleNamespace(targets=TargetPolicy())
    )
    ops = []
    for k, call in enumerate(calls):
        settings = settings_from(
            {"url": f"ws://127.0.0.1:{port}/s{k}", "track": "outbound_track", "codec": codec}
        )
        op = StreamOperation(
            call, f"s{k}", None, services.emit, services=services, settings=settings
        )
        op.start()
        ops.append(op)
    await asyncio.wait_for(asyncio.gather(*(op.ready for op in ops)), 30)
    await asyncio.sleep(1.0)
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - wall0
    dropped = sum(op._ws.frames_dropped for op in ops if op._ws is not None)
    for op in ops:
        await op.stop()
    await engine.stop()
    sink.close()
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    result = json.loads(out.decode().strip().splitlines()[-1])
    result.update(
        cpu_ms_per_stream_second=1000 * (cpu / wall - engine_only) / n,
        total_cpu_share=cpu / wall,
        engine_only_share=engine_only,
        dropped=dropped,
    )
    return result


def denoise_cost(frames: int = 2000) -> float | None:
    if not rnnoise.available():
        return None
    d = rnnoise.Denoiser()
    rng = np.random.default_rng(1)
    x = np.round(rng.normal(0, 2000, 160 * frames)).astype(np.int16)
    t0 = time.perf_counter()
    for k in range(frames):
        d.process(x[k * 160 : (k + 1) * 160])
    d.close()
    return (time.perf_counter() - t0) / frames * 1000


SENTENCES = (
    "I would like to speak to someone about my bill",
    "please call me back tomorrow morning",
    "the weather is nice today",
)
BABBLE = (
    "the quick brown fox jumps over the lazy dog near the river bank",
    "we will meet at the station at half past nine on monday",
    "can you send the report to the whole team before lunch",
    "my favourite colour used to be green but now it is blue",
)


def _flite(text: str, voice: str) -> np.ndarray:
    import subprocess
    import tempfile
    from pathlib import Path

    import soundfile

    from callplane.media.sources import resample

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "x.wav"
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(out)], check=True)
        data, rate = soundfile.read(out, dtype="float64")
    x = resample(data * 32767.0, rate, 8000)
    loud = np.flatnonzero(np.abs(x) > 200)
    return np.asarray(x[loud[0] : loud[-1] + 1], dtype=np.float64)


def _snr_db(clean: np.ndarray, heard: np.ndarray) -> float:
    corr = np.correlate(heard, clean[: clean.size // 2], mode="valid")
    lag = int(np.argmax(np.abs(corr)))
    y = heard[lag : lag + clean.size]
    n = y.size // 160
    power_y = (y[: n * 160].reshape(n, 160) ** 2).mean(axis=1)
    power_s = (clean[: n * 160].reshape(n, 160) ** 2).mean(axis=1)
    noise = float(power_y[power_s == 0].mean())
    signal = float(power_y[power_s > power_s.max() * 1e-3].mean()) - noise
    if signal <= 0:  # the speech frames are no louder than the speech-free ones
        return float("nan")
    return float(10 * np.log10(signal / noise))


def quality() -> None:
    from callplane.media.g711 import ulaw_decode, ulaw_encode
    from callplane.providers.asr import PocketSphinxRecognizer, word_error_rate

    recognizer = PocketSphinxRecognizer()
    recognizer.warm_up()
    rng = np.random.default_rng(11)
    voices = ("kal", "awb", "slt", "kal16")
    talkers = [_flite(text, voice) for text, voice in zip(BABBLE, voices, strict=True)]

    def babble(n: int) -> np.ndarray:
        out = np.zeros(n)
        for t in talkers:
            reps = np.tile(t, n // t.size + 2)
            start = int(rng.integers(0, t.size))
            out += reps[start : start + n] / np.sqrt((t**2).mean())
        return out

    def g711(x: np.ndarray) -> np.ndarray:
        pcm = np.clip(np.round(x), -32768, 32767).astype(np.int16)
        return ulaw_decode(ulaw_encode(pcm).tobytes()).astype(np.int16)

    def denoise(x: np.ndarray) -> np.ndarray:
        d = rnnoise.Denoiser()
        y = x.copy()
        for k in range(0, y.size - 159, 160):
            d.process(y[k : k + 160])
        d.close()
        return y

    def recognise(x: np.ndarray) -> str:
        frames = x[: x.size // 160 * 160].reshape(-1, 160)
        s = recognizer.open_session("en-US", None, end_silence_timeout=0.8)
        events = s.feed_many(list(frames))
        s.close()
        final = [e for e in events if e.terminal]
        return (final[-1].text or "") if final else ""

    for kind, snr in (("white", 5), ("babble", 5), ("white", 15), ("babble", 15)):
        rows = []
        for sentence in SENTENCES:
            voice = _flite(sentence, "rms")
            pad = np.zeros(4000)
            clean = np.concatenate([pad, voice, pad, np.zeros(12000)])
            noise = rng.normal(0, 1, clean.size) if kind == "white" else babble(clean.size)
            speech_power = float((voice**2).mean())
            noise *= np.sqrt(speech_power / (noise**2).mean()) / 10 ** (snr / 20)
            noisy = g711(clean + noise)
            cleaned = g711(denoise(noisy))
            rows.append(
                (
                    _snr_db(clean, noisy.astype(np.float64)),
                    _snr_db(clean, cleaned.astype(np.float64)),
                    word_error_rate(sentence, recognise(noisy)),
                    word_error_rate(sentence, recognise(cleaned)),
                )
            )
        snr0, snr1, wer0, wer1 = (float(np.mean(c)) for c in zip(*rows, strict=True))
        print(
            f"{kind} noise at {snr} dB: SNR {snr0:.1f} -> {snr1:.1f} dB with denoise; "
            f"WER {100 * wer0:.0f} % -> {100 * wer1:.0f} % (mean of {len(rows)} sentences)"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("-d", type=float, default=10.0)
    ap.add_argument("--receiver", type=int)
    ap.add_argument("--codec", default="PCMU", help="e.g. PCMA, L16, L16@24000h@40i")
    ap.add_argument("--quality", action="store_true", help="only the denoise SNR / WER figures")
    args = ap.parse_args()
    if args.quality:
        quality()
        return
    run: Any = asyncio.run
    try:
        import uvloop

        run = uvloop.run  # as `callplane serve` runs when uvloop is installed
    except ImportError:
        pass
    if args.receiver:
        run(receiver(args.receiver, args.d, args.codec))
        return
    with open("/proc/loadavg") as f:
        print(f"load average before: {f.read().split()[0]} (2 cores shared with other work)")
    r = run(senders(args.n, args.d, args.codec))
    print(
        f"{args.n} calls with a one-way {args.codec} stream each, {args.d:.0f} s: the streams cost "
        f"{r['cpu_ms_per_stream_second']:.3f} ms CPU per stream-second (the process: "
        f"{100 * r['total_cpu_share']:.0f} % of a core, of which the calls' RTP alone "
        f"{100 * r['engine_only_share']:.0f} %); message gap "
        f"|gap-ptime| p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.1f} ms;"
        f" {r['messages']} messages at the receiver, {r['dropped']} dropped; the receiver "
        f"used {100 * r['receiver_cpu_share']:.0f} % of a core"
    )
    cost = denoise_cost()
    if cost is None:
        print("denoise: librnnoise not installed")
    else:
        print(
            f"denoise: {cost:.3f} ms CPU per 20 ms frame per call "
            f"({100 * cost / 20:.1f} % of a core per denoised call)"
        )


if __name__ == "__main__":
    main()
