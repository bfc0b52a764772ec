"""Two real SIP user agents (baresip) talk through a callplane bridge: each one's ears (the
`sndfile` module's recording of what it heard) hold the other one's voice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
from audiomatch import global_lag, piecewise_ncc
from harness import Baresip, Receiver, Server, baresip_available, wait_until

pytestmark = pytest.mark.skipif(not baresip_available(), reason="baresip is not installed")


def voice(seed: int, seconds: float = 30.0) -> np.ndarray:
    """A noise-like signal no other party sends: only the right audio correlates with it."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(int(seconds * 8000))
    x = np.convolve(x, np.ones(4) / 4, mode="same")  # keep it inside the telephone band
    return (0.25 * 32767 * x / np.abs(x).max()).astype(np.int16)


def best_correlation(heard: np.ndarray, sent: np.ndarray) -> float:
    """How faithfully a stretch of `heard` holds the part of `sent` it lines up with
    (`audiomatch.piecewise_ncc`)."""
    lag = global_lag(sent, heard)
    if lag < 0 or lag + len(heard) > len(sent):
        return 0.0
    return piecewise_ncc(sent, heard, lag)


@pytest.fixture
def parties(tmp_path: Path) -> Iterator[tuple[Baresip, Baresip, np.ndarray, np.ndarray]]:
    sounds = []
    peers = []
    for name, seed in (("a", 1), ("b", 2)):
        samples = voice(seed)
        wav = tmp_path / f"{name}.wav"
        soundfile.write(wav, samples, 8000, subtype="PCM_16")
        sounds.append(samples)
        peers.append(
            Baresip(tmp_path / f"baresip-{name}", record_dir=tmp_path / f"heard-{name}").start(wav)
        )
    yield peers[0], peers[1], sounds[0], sounds[1]
    for peer in peers:
        peer.stop()


def test_each_party_hears_the_other_through_connect(
    make_server: object,
    receiver: Receiver,
    parties: tuple[Baresip, Baresip, np.ndarray, np.ndarray],
) -> None:
    a, b, said_by_a, said_by_b = parties
    route = receiver.serve_swml(
        "/agent",
        {
            "version": "1.0.0",
            "sections": {
                "main": [{"connect": {"to": b.uri, "status_url": receiver.url("/connect")}}]
            },
        },
    )
    server: Server = make_server(routes={"agent": route})  # type: ignore[operator]
    a.command("dial", f"sip:agent@127.0.0.1:{server.sip_port}")
    wait_until(
        lambda: any(
            e["params"]["connect_state"] == "connected" for e in receiver.events("/connect")
        ),
        15,
        "the bridge",
    )
    time.sleep(4.0)
    a.command("hangup")
    wait_until(
        lambda: any(
            e["params"]["connect_state"] == "disconnected" for e in receiver.events("/connect")
        ),
        15,
        "the end of the bridge",
    )
    a.stop()
    b.stop()  # sndfile closes its files on exit
    heard_by_a, _ = soundfile.read(a.recordings("dec")[-1], dtype="int16")
    heard_by_b, _ = soundfile.read(b.recordings("dec")[-1], dtype="int16")
    # 2 s from the middle of each recording, well inside the bridged stretch.
    for heard, other, own in (
        (heard_by_a, said_by_b, said_by_a),
        (heard_by_b, said_by_a, said_by_b),
    ):
        loud = np.flatnonzero(np.abs(heard) > 1000)
        assert loud.size > 8000 * 2, "nothing came through the bridge"
        middle = (loud[0] + loud[-1]) // 2
        stretch = heard[middle - 8000 : middle + 8000]
        assert best_correlation(stretch, other) > 0.9
        assert best_correlation(stretch, own) < 0.2
