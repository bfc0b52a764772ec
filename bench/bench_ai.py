"""The AI agent (SWML `ai`) through a WHOLE `callplane serve` process: turn latency, barge-in
latency and the CPU of one live agent.

    .venv/bin/python bench/bench_ai.py [--turns 10] [--barge-ins 5] [--seconds 10]
                                       [--asr pocketsphinx|whisper]

A local OpenAI-compatible model (tests/providers/llm_server.py, 127.0.0.1) answers after a
fixed 100 ms to the first token; an in-process far end (tests/e2e/farend.py) is called and
speaks flite `rms` phrases over PCMU.

* **turn latency**: from the end of the caller's phrase (its last voiced packet sent) to the
  first loud packet of the reply at the far end, minus the configured `end_of_speech_timeout`
  and the model's 100 ms: callplane's own share (recognition's endpointing slack, the HTTP
  round trip, TTS of the first sentence, the jitter buffer and a tick). Median and p90.
* **media stalls**: the longest gaps (p99, max) between the agent leg's packets (one per tick,
  silence included) at the far end during those turns: the server's media clock held up.
* **barge-in latency**: the far end talks into a long reply; from the first voiced packet it
  sends to the last loud packet of the agent's audio it receives.
* **CPU of one agent**: server CPU per second while the far end speaks continuously to an
  agent (recognition, the model round trips, TTS), minus the same call running `sleep`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "tests" / "providers"))
sys.path.insert(0, str(ROOT / "tests" / "media" / "dsp"))

from dsp_audio import flite, to_frames  # noqa: E402
from farend import FarEnd  # noqa: E402
from llm_server import ModelServer, Turn  # noqa: E402

from benchkit import PROJECT, TOKEN, ServerProcess, cpu_seconds  # noqa: E402
from callplane import AsyncRestClient, TransportError  # noqa: E402

FIRST_TOKEN = 0.1
EOS_MS = 500
LOUD = 300.0


def voice(text: str) -> np.ndarray:
    """flite `rms`, trimmed to its voiced part (so timing starts and ends on speech)."""
    x = to_frames(flite(text, "rms"))
    rms = np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=1))
    voiced = np.flatnonzero(rms > LOUD)
    return x[voiced[0] : voiced[-1] + 1].ravel()


def swml(ai: dict[str, Any]) -> dict[str, Any]:
    # The caller opens every conversation measured here (the agent's opening turn is not).
    params = {"wait_for_user": True, **ai.get("params", {})}
    return {"version": "1.0.0", "sections": {"main": [{"ai": {**ai, "params": params}}]}}


async def call(client: AsyncRestClient, far: FarEnd, document: dict[str, Any]) -> str:
    far.answered.clear()
    leg = await client.calling.dial(from_="+15559876543", to=far.uri, swml=document)
    await asyncio.wait_for(far.answered.wait(), 10)
    await far.silence(1.0)
    return str(leg["id"])


async def end(client: AsyncRestClient, call_id: str) -> None:
    try:
        await client.calling.end(call_id)
    except TransportError:
        # The server closed the idle keep-alive connection just as the client reused it.
        await client.calling.end(call_id)


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its living descendants (the speech decoding processes)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    family, total = {pid}, 0.0
    grew = True
    while grew:
        kids = {p for p, pp in parents.items() if pp in family and p not in family}
        family |= kids
        grew = bool(kids)
    for p in family:
        with contextlib.suppress(OSError):  # it ended meanwhile
            total += cpu_seconds(p)
    return total


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


async def turns(
    client: AsyncRestClient, model: ModelServer, n: int, wait: float
) -> tuple[list[float], list[float]]:
    far = FarEnd()
    await far.start()
    phrase = voice("what are your opening hours")
    model.default = Turn("We are open from nine to five.", first_token_delay=FIRST_TOKEN)
    doc = swml({"prompt": {"text": "bench"}, "params": {"end_of_speech_timeout": EOS_MS}})
    shares: list[float] = []
    try:
        call_id = await call(client, far, doc)
        began = time.monotonic()
        for _ in range(n):
            await far.play(phrase)
            ended = time.monotonic()
            await far.silence(wait)
            first = far.loud_packets(ended, ended + wait, LOUD)
            if first:
                shares.append(first[0] - ended - EOS_MS / 1000 - FIRST_TOKEN)
        # The agent's leg sends a packet every tick (silence while it is quiet): a longer gap
        # at the far end is the server's media clock stalling (e.g. a thread holding the GIL).
        arrivals = [p.at for p in far.packets if p.pt == 0 and p.at >= began]
        gaps = list(np.diff(arrivals)) if len(arrivals) > 1 else [0.0]
        await end(client, call_id)
    finally:
        await far.stop()
    return shares, gaps


async def barge_ins(client: AsyncRestClient, model: ModelServer, n: int) -> list[float]:
    far = FarEnd()
    await far.start()
    long_reply = " ".join(f"Point {k} is one more thing to say about it." for k in range(12))
    ask, stop = voice("tell me everything"), voice("stop please")
    doc = swml({"prompt": {"text": "bench"}, "params": {"end_of_speech_timeout": EOS_MS}})
    delays: list[float] = []
    try:
        call_id = await call(client, far, doc)
        for _ in range(n):
            model.script(Turn(long_reply), Turn("Sure."))
            await far.play(ask)
            await far.silence(2.5)  # the reply is playing by now
            spoke = time.monotonic()
            await far.play(stop)
            await far.silence(2.0)
            loud = far.loud_packets(spoke, spoke + 1.0, LOUD)
            delays.append((loud[-1] - spoke) if loud else 0.0)
            await far.silence(1.5)  # the short answer to "stop please"
        await end(client, call_id)
    finally:
        await far.stop()
    return delays


async def cpu(client: AsyncRestClient, server: ServerProcess, seconds: float) -> dict[str, float]:
    speech = voice("please tell me the price of the blue lamp in the window")
    out: dict[str, float] = {}
    docs = {
        "sleep": {"version": "1.0.0", "sections": {"main": [{"sleep": -1}]}},
        "ai": swml({"prompt": {"text": "bench"}}),
    }
    for name, doc in docs.items():
        far = FarEnd()
        await far.start()
        try:
            call_id = await call(client, far, doc)
            c0, t0 = tree_cpu(server.pid), time.monotonic()
            while time.monotonic() - t0 < seconds:
                await far.play(speech)
                await far.silence(0.8)
            out[name] = (tree_cpu(server.pid) - c0) / (time.monotonic() - t0)
            await end(client, call_id)
        finally:
            await far.stop()
    out["agent"] = out["ai"] - out["sleep"]
    return out


async def main(args: argparse.Namespace) -> None:
    model = await ModelServer(default=Turn("Fine.", first_token_delay=FIRST_TOKEN)).start()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(
            Path(tmp),
            extra_args=["--llm-url", model.url, "--llm-model", "bench", "--asr", args.asr],
        ).start()
        try:
            async with AsyncRestClient(PROJECT, TOKEN, server.host) as client:
                # whisper decodes the whole utterance after its end: ~1 s more per turn
                wait = 3.0 if args.asr == "pocketsphinx" else 5.0
                shares, gaps = await turns(client, model, args.turns, wait)
                barges = await barge_ins(client, model, args.barge_ins)
                load = await cpu(client, server, args.seconds)
        finally:
            server.stop()
    await model.stop()
    result = {
        "turns_measured": len(shares),
        "callplane_share_ms": {
            "median": round(statistics.median(shares) * 1000, 1),
            "p90": round(pct(shares, 0.9) * 1000, 1),
        },
        "packet_gap_ms_during_turns": {
            "p99": round(pct(gaps, 0.99) * 1000, 1),
            "max": round(max(gaps) * 1000, 1),
        },
        "barge_in_ms": {
            "median": round(statistics.median(barges) * 1000, 1),
            "p90": round(pct(barges, 0.9) * 1000, 1),
        },
        "cpu_ms_per_s": {k: round(v * 1000, 1) for k, v in load.items()},
        "recognizer": args.asr,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--barge-ins", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--asr", choices=("pocketsphinx", "whisper"), default="pocketsphinx")
    asyncio.run(main(parser.parse_args()))
