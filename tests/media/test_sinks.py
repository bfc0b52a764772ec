"""Media sinks: RtpSink packetisation (ptime 10/20/40) and order, party_frame's directions."""

from __future__ import annotations

import asyncio
import socket
import struct

import numpy as np

from callplane.media.engine import TickFrames
from callplane.media.g711 import ulaw_decode
from callplane.media.sinks import RtpSink, party_frame


def frame(value: int) -> np.ndarray:
    return np.full(160, value, dtype=np.int16)


def receiver() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(1.0)
    return sock


def parse(packet: bytes) -> tuple[int, int, int, int]:
    _, second, seq, ts, _ = struct.unpack("!BBHII", packet[:12])
    return second, seq, ts, int(np.median(ulaw_decode(packet[12:])))


async def test_ptime_10_packets_stay_in_order_when_frames_come_back_to_back() -> None:
    """A media clock catching up hands a sink several frames at once: the 10 ms packets
    scheduled for the first frame leave before the next frame's."""
    dest = receiver()
    sink = RtpSink.open("127.0.0.1", dest.getsockname(), payload_type=0, ptime=10)
    for value in (100, 200, 300):
        sink.send(frame(value))
    await asyncio.sleep(0.05)
    got = [parse(dest.recv(2048)) for _ in range(6)]
    seqs = [g[1] for g in got]
    assert seqs == [(seqs[0] + k) & 0xFFFF for k in range(6)]
    assert [g[2] - got[0][2] for g in got] == [80 * k for k in range(6)]
    levels = (100, 100, 200, 200, 300, 300)
    assert all(abs(g[3] - v) <= 8 for g, v in zip(got, levels, strict=True)), got
    assert got[0][0] & 0x80 and not any(g[0] & 0x80 for g in got[1:])  # marker on the first
    sink.close()
    dest.close()


async def test_ptime_40_sends_one_packet_per_two_frames() -> None:
    dest = receiver()
    sink = RtpSink.open("127.0.0.1", dest.getsockname(), payload_type=0, ptime=40)
    sink.send(frame(100))
    dest.settimeout(0.05)
    try:
        dest.recv(2048)
        raise AssertionError("a 40 ms packet left after 20 ms of audio")
    except TimeoutError:
        pass
    sink.send(frame(100))
    assert len(dest.recv(2048)) == 12 + 320
    assert sink.packets_sent == 1
    sink.close()
    dest.close()


def test_party_frame_directions() -> None:
    ticks = TickFrames(
        tick=7, inbound=frame(1000), outbound=frame(32000), speak=frame(20), heard=True
    )
    assert int(party_frame(ticks, "speak")[0]) == 1020
    assert int(party_frame(ticks, "listen")[0]) == 32000
    assert int(party_frame(ticks, "both")[0]) == 32767  # clipped, not wrapped
    quiet = TickFrames(tick=8, inbound=frame(5), outbound=frame(6), speak=None, heard=False)
    assert int(party_frame(quiet, "both")[0]) == 11
