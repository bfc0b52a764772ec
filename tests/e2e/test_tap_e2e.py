"""`calling.tap` / `calling.tap.stop` and SWML `tap` / `stop_tap` against the real server.

The far end (a SIP UA in the test process) sends a 440 Hz tone as PCMU RTP while callplane plays
a 1 kHz tone to it (`calling.play`). The taps' destinations are sockets of the test itself: plain
UDP sockets that parse every RTP header, and a `websockets` server. What arrives is checked
packet by packet (rate, sequence numbers, timestamps, SSRC, payload type) and decoded: `speak`
carries the far end's 440 Hz only, `listen` callplane's 1 kHz only, `both` the two.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import socket
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import soundfile
from farend import FarEnd, peaks
from harness import LOOPBACK, Receiver, Server, free_port, swml
from harness import until as wait_for
from ticks import Emitted, TickSession, tick_call, tick_services
from websockets.asyncio.server import ServerConnection, serve

from callplane import AsyncRestClient, RestError
from callplane.engine.operations.tap import TapSettings, start_tap
from callplane.media.g711 import alaw_decode, ulaw_decode

FROM = "+15559876543"
TAP_EVENT = "calling.call.tap"


def sine(freq: float, seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * 8000)) / 8000
    return np.round(0.2 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


async def dial_far_end(client: AsyncRestClient, far_end: FarEnd, *methods: dict[str, Any]) -> str:
    leg = await client.calling.dial(
        from_=FROM, to=far_end.uri, swml=swml(*(methods or ({"sleep": -1},)))
    )
    await asyncio.wait_for(far_end.answered.wait(), 10)
    return str(leg["id"])


def tap_events(receiver: Receiver, path: str, control_id: str) -> list[dict[str, Any]]:
    return [
        e["params"]
        for e in receiver.events(path, TAP_EVENT)
        if e["params"].get("control_id") == control_id
    ]


def tap_states(receiver: Receiver, path: str, control_id: str) -> list[str]:
    return [p["state"] for p in tap_events(receiver, path, control_id)]


def tone_peaks(samples: np.ndarray, n: int) -> list[int]:
    return [round(f / 10) * 10 for f in peaks(samples.astype(np.float64), n)]


def leak(samples: np.ndarray, freq: float) -> float:
    """Energy at `freq` relative to the strongest component."""
    x = samples.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / 8000)
    return float(spectrum[np.abs(freqs - freq) < 15].max() / spectrum.max())


# ---------------------------------------------------------------------------------------------
# Tap destinations


@dataclass
class RtpPacket:
    at: float
    source: tuple[str, int]
    version: int
    marker: bool
    pt: int
    seq: int
    ts: int
    ssrc: int
    payload: bytes


@dataclass
class RtpSink:
    """A UDP socket of the test that parses every RTP packet it receives."""

    sock: socket.socket = field(
        default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    )
    packets: list[RtpPacket] = field(default_factory=list)
    port: int = 0

    def start(self) -> RtpSink:
        self.sock.bind((LOOPBACK, 0))
        self.port = int(self.sock.getsockname()[1])
        self.sock.setblocking(False)
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._read)
        return self

    def _read(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(4096)
            except BlockingIOError:
                return
            b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", data[:12])
            self.packets.append(
                RtpPacket(
                    time.monotonic(),
                    (str(addr[0]), int(addr[1])),
                    b0 >> 6,
                    bool(b1 & 0x80),
                    b1 & 0x7F,
                    seq,
                    ts,
                    ssrc,
                    data[12:],
                )
            )

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()

    def check_stream(self, pt: int, ptime: int = 20) -> np.ndarray:
        """Assert one well-formed RTP stream at `ptime`; return its audio (skipping 0.3 s)."""
        p = self.packets
        assert len(p) > 20, len(p)
        samples = ptime * 8
        assert {x.version for x in p} == {2}
        assert {x.pt for x in p} == {pt}
        assert len({x.ssrc for x in p}) == 1
        assert len({x.source for x in p}) == 1 and p[0].source[0] == LOOPBACK
        assert p[0].marker and not any(x.marker for x in p[1:])
        assert {len(x.payload) for x in p} == {samples}
        assert all((b.seq - a.seq) % 65536 == 1 for a, b in itertools.pairwise(p))
        assert all((b.ts - a.ts) % 2**32 == samples for a, b in itertools.pairwise(p))
        rate = (len(p) - 1) / (p[-1].at - p[0].at)
        expected = 1000 / ptime
        assert abs(rate - expected) < 0.1 * expected, (rate, expected)
        decode = ulaw_decode if pt == 0 else alaw_decode
        audio = decode(b"".join(x.payload for x in p))
        return audio[2400:]


@asynccontextmanager
async def ws_server() -> AsyncIterator[tuple[int, dict[str, list[tuple[float, str | bytes]]]]]:
    """A WebSocket server of the test: every connection's messages by path. `/drop` closes
    each connection right after its first message."""
    received: dict[str, list[tuple[float, str | bytes]]] = {}

    async def handler(ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else "?"
        messages = received.setdefault(path, [])
        async for message in ws:
            messages.append((time.monotonic(), message))
            if path == "/drop":
                await ws.close(1011, "going away")
                return
        messages.append((time.monotonic(), f"closed {ws.close_code}"))

    async with serve(handler, LOOPBACK, 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield port, received


# ---------------------------------------------------------------------------------------------


async def test_rtp_taps_fork_each_direction_and_stop(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    buf = io.BytesIO()
    soundfile.write(buf, sine(1000, 8.0), 8000, format="WAV", subtype="PCM_16")
    tone_url = receiver.serve_file("/tone.wav", buf.getvalue(), "audio/wav")
    names = ("speak", "listen", "both", "speak40", "listen10")
    sinks = {name: RtpSink().start() for name in names}
    status = receiver.url("/tap")

    def rtp(name: str, **extra: Any) -> dict[str, Any]:
        return {"type": "rtp", "params": {"addr": LOOPBACK, "port": sinks[name].port, **extra}}

    def audio(direction: str) -> dict[str, Any]:
        return {"type": "audio", "params": {"direction": direction}}

    try:
        async with AsyncRestClient(server.project, server.token, server.host) as client:
            call_id = await dial_far_end(client, far_end)
            await client.calling.play(
                call_id, control_id="p1", play=[{"type": "audio", "params": {"url": tone_url}}]
            )
            player = asyncio.create_task(far_end.play(sine(440, 5.0)))
            await asyncio.sleep(0.3)
            await client.calling.tap(
                call_id, control_id="t-speak", tap=audio("speak"), device=rtp("speak"),
                status_url=status,
            )  # fmt: skip
            await client.calling.tap(
                call_id, control_id="t-listen", tap=audio("listen"),
                device=rtp("listen", codec="PCMA", ptime=20), status_url=status,
            )  # fmt: skip
            await client.calling.tap(
                call_id, control_id="t-both", tap=audio("both"), device=rtp("both"),
                status_url=status,
            )  # fmt: skip
            await client.calling.tap(
                call_id, control_id="t-40", tap=audio("speak"),
                device=rtp("speak40", codec="pcmu", ptime=40), status_url=status,
            )  # fmt: skip
            await client.calling.tap(
                call_id, control_id="t-10", tap=audio("listen"),
                device=rtp("listen10", codec="PCMA", ptime=10), status_url=status,
            )  # fmt: skip
            # What cannot be done is refused; a running control_id cannot be reused.
            with pytest.raises(RestError) as opus:
                await client.calling.tap(
                    call_id, control_id="t-opus", tap=audio("speak"),
                    device=rtp("speak", codec="OPUS"),
                )  # fmt: skip
            assert opus.value.status_code == 501
            with pytest.raises(RestError) as again:
                await client.calling.tap(
                    call_id, control_id="t-speak", tap=audio("speak"), device=rtp("speak")
                )
            assert again.value.status_code == 409
            with pytest.raises(RestError) as unknown:
                await client.calling.tap_stop(call_id, control_id="nope")
            assert unknown.value.status_code == 422

            await asyncio.sleep(2.5)
            for control_id in ("t-speak", "t-listen", "t-both", "t-40", "t-10"):
                await client.calling.tap_stop(call_id, control_id=control_id)
            stopped_at = {name: len(sink.packets) for name, sink in sinks.items()}
            await asyncio.sleep(0.5)
            # Stopped: not one more packet (only those already in flight, within a tick).
            for name, sink in sinks.items():
                assert len(sink.packets) - stopped_at[name] <= 1, name
            await wait_for(
                lambda: all(
                    tap_states(receiver, "/tap", c) == ["tapping", "finished"]
                    for c in ("t-speak", "t-listen", "t-both", "t-40", "t-10")
                ),
                what="every tap to finish",
            )
            # The call goes on: a stopped tap is not the call's end.
            assert server.call_status(call_id) == "answered"
            player.cancel()
            await client.calling.end(call_id)
    finally:
        for sink in sinks.values():
            sink.close()

    speak = sinks["speak"].check_stream(pt=0)
    assert tone_peaks(speak, 1) == [440] and leak(speak, 1000) < 0.01
    listen = sinks["listen"].check_stream(pt=8)
    assert tone_peaks(listen, 1) == [1000] and leak(listen, 440) < 0.01
    both = sinks["both"].check_stream(pt=0)
    assert tone_peaks(both, 2) == [440, 1000]
    speak40 = sinks["speak40"].check_stream(pt=0, ptime=40)
    assert tone_peaks(speak40, 1) == [440]
    listen10 = sinks["listen10"].check_stream(pt=8, ptime=10)
    assert tone_peaks(listen10, 1) == [1000]
    # Each tap is its own stream from its own socket.
    assert len({s.packets[0].ssrc for s in sinks.values()}) == len(sinks)
    assert len({s.packets[0].source for s in sinks.values()}) == len(sinks)
    # The speak tap is the far end's tone without dropouts. The jitter buffer starts with no
    # margin and grows by a frame when a packet comes late, so a loaded machine may see one or
    # two silent frames while it adapts; a tap that lost audio would miss far more.
    frames = speak[: len(speak) // 160 * 160].reshape(-1, 160).astype(np.float64)
    quiet = np.sqrt((frames**2).mean(axis=1)) < 0.1 * 32767 * 0.5
    assert quiet.sum() <= 2, f"{quiet.sum()} of {len(frames)} frames without the tone"

    for control_id, direction, device in (
        ("t-speak", "speak", rtp("speak", codec="PCMU", ptime=20)),
        ("t-listen", "listen", rtp("listen", codec="PCMA", ptime=20)),
        ("t-both", "both", rtp("both", codec="PCMU", ptime=20)),
        ("t-40", "speak", rtp("speak40", codec="PCMU", ptime=40)),
        ("t-10", "listen", rtp("listen10", codec="PCMA", ptime=10)),
    ):
        events = tap_events(receiver, "/tap", control_id)
        for p in events:
            assert p["call_id"] == call_id and p["node_id"] and p["segment_id"]
            assert p["tap"] == audio(direction)
            assert p["device"] == device
            assert "reason" not in p


async def test_ws_tap_streams_audio_and_failures_finish_without_harm(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    status = receiver.url("/tap")
    speak = {"type": "audio", "params": {"direction": "speak"}}
    async with ws_server() as (port, received):
        base = f"ws://{LOOPBACK}:{port}"
        dead = f"ws://{LOOPBACK}:{free_port()}/nobody"
        async with AsyncRestClient(server.project, server.token, server.host) as client:
            call_id = await dial_far_end(client, far_end)
            player = asyncio.create_task(far_end.play(sine(440, 5.0)))
            await asyncio.sleep(0.3)
            for control_id, uri in (
                ("ws", f"{base}/tap"),
                ("dead", dead),
                ("drop", f"{base}/drop"),
            ):
                await client.calling.tap(
                    call_id,
                    control_id=control_id,
                    tap=speak,
                    device={"type": "ws", "params": {"uri": uri}},
                    status_url=status,
                )
            # A WebSocket that refuses or drops the connection finishes its tap, with a reason.
            await wait_for(
                lambda: (
                    tap_states(receiver, "/tap", "dead") == ["finished"]
                    and tap_states(receiver, "/tap", "drop") == ["tapping", "finished"]
                ),
                what="the failing taps to finish",
            )
            await asyncio.sleep(2.0)
            # ... and the call and the working tap go on.
            assert server.call_status(call_id) == "answered"
            assert tap_states(receiver, "/tap", "ws") == ["tapping"]
            # The call's end finishes the tap (before the call's `ended`) and closes the socket.
            await client.calling.end(call_id)
            player.cancel()
            await wait_for(lambda: tap_states(receiver, "/tap", "ws") == ["tapping", "finished"])
            await wait_for(lambda: server.call_status(call_id) == "ended", what="the call to end")
            await wait_for(
                lambda: str(received.get("/tap", [(0, "")])[-1][1]).startswith("closed"),
                what="the tap's WebSocket to close",
            )

    messages = received["/tap"]
    first = json.loads(messages[0][1])
    assert first == {
        "event": "start",
        "call_id": call_id,
        "control_id": "ws",
        "direction": "speak",
        "codec": "PCMU",
        "rate": 8000,
        "channels": 1,
        "ptime": 20,
    }
    assert json.loads(messages[-2][1]) == {"event": "stop", "call_id": call_id, "control_id": "ws"}
    assert messages[-1][1] == "closed 1000"
    frames = [(at, m) for at, m in messages[1:-2]]
    assert all(isinstance(m, bytes) and len(m) == 160 for _, m in frames)
    rate = (len(frames) - 1) / (frames[-1][0] - frames[0][0])
    assert 45 < rate < 55, rate
    audio = ulaw_decode(b"".join(m for _, m in frames if isinstance(m, bytes)))[2400:-2400]
    assert tone_peaks(audio, 1) == [440]

    events = {c: tap_events(receiver, "/tap", c) for c in ("ws", "dead", "drop")}
    assert "reason" not in events["ws"][-1]
    assert events["ws"][0]["device"] == {
        "type": "ws",
        "params": {"uri": f"{base}/tap", "codec": "PCMU"},
    }
    assert "nobody" not in received and "cannot connect" in events["dead"][0]["reason"]
    assert "closed" in events["drop"][-1]["reason"]
    log = [
        (
            e["event_type"],
            e["params"].get("control_id"),
            e["params"].get("state") or e["params"].get("call_state"),
        )
        for e in server.get(f"/api/calling/calls/{call_id}/events").json()["data"]
    ]
    assert log.index((TAP_EVENT, "ws", "tapping")) < log.index((TAP_EVENT, "ws", "finished"))
    assert log.index((TAP_EVENT, "ws", "finished")) < log.index(
        ("calling.call.state", None, "ended")
    )


async def test_swml_tap_and_stop_tap_set_their_variables(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    sink = RtpSink().start()
    report = receiver.url("/vars")
    try:
        async with AsyncRestClient(server.project, server.token, server.host) as client:
            call_id = await dial_far_end(
                client,
                far_end,
                {
                    "tap": {
                        "uri": f"rtp://{LOOPBACK}:{sink.port}",
                        "status_url": receiver.url("/tap"),
                    }
                },
                {
                    "request": {
                        "url": report,
                        "method": "POST",
                        "body": {
                            name: "${" + name + "}"
                            for name in (
                                "tap_uri",
                                "tap_result",
                                "tap_control_id",
                                "tap_rtp_src_addr",
                                "tap_rtp_src_port",
                                "tap_ptime",
                                "tap_codec",
                                "tap_rate",
                            )
                        },
                    }
                },
                {"sleep": 2000},
                {"stop_tap": {}},
                {
                    "request": {
                        "url": report,
                        "method": "POST",
                        "body": {"stopped": "${stop_tap_result}"},
                    }
                },
                {"stop_tap": {}},  # nothing left to stop
                {
                    "request": {
                        "url": report,
                        "method": "POST",
                        "body": {"again": "${stop_tap_result}"},
                    }
                },
                {"sleep": -1},
            )
            player = asyncio.create_task(far_end.play(sine(440, 3.0)))
            hits = await wait_for(
                lambda: (
                    (h := [h for h in receiver.hits if h.path == "/vars"]) and len(h) == 3 and h
                ),
                what="the script's three requests",
            )
            count = len(sink.packets)
            await asyncio.sleep(0.5)
            assert len(sink.packets) - count <= 1
            player.cancel()
            await client.calling.end(call_id)
    finally:
        sink.close()

    variables = hits[0].body
    control_id = variables["tap_control_id"]
    assert control_id
    assert variables == {
        "tap_uri": f"rtp://{LOOPBACK}:{sink.port}",
        "tap_result": "success",
        "tap_control_id": control_id,
        "tap_rtp_src_addr": LOOPBACK,
        "tap_rtp_src_port": str(sink.packets[0].source[1]),
        "tap_ptime": "20",
        "tap_codec": "PCMU",
        "tap_rate": "8000",
    }
    assert hits[1].body == {"stopped": "success"}
    assert hits[2].body == {"again": "failed"}  # the second stop_tap found nothing
    assert tap_states(receiver, "/tap", control_id) == ["tapping", "finished"]
    finished = tap_events(receiver, "/tap", control_id)[-1]
    assert finished["tap"] == {"type": "audio", "params": {"direction": "speak"}}
    assert finished["device"] == {
        "type": "rtp",
        "params": {"addr": LOOPBACK, "port": sink.port, "codec": "PCMU", "ptime": 20},
    }
    audio = sink.check_stream(pt=0)
    assert tone_peaks(audio, 1) == [440]


async def test_a_listen_tap_loses_no_tick_while_digits_are_sent(
    server: Server, receiver: Receiver, far_end: FarEnd
) -> None:
    """Bug: while SWML `send_digits` sent RFC 4733 events, listeners got no outbound frames, so
    a `listen` tap lost about 0.6 s of "1234". Now the tapped stream has 50 frames a second
    throughout, the digits included."""
    sink = RtpSink().start()
    try:
        async with AsyncRestClient(server.project, server.token, server.host) as client:
            call_id = await dial_far_end(
                client,
                far_end,
                {"tap": {"uri": f"rtp://{LOOPBACK}:{sink.port}", "direction": "listen"}},
                {"sleep": 500},
                {"send_digits": {"digits": "1234"}},
                {"sleep": 500},
                {"stop_tap": {}},
                {"request": {"url": receiver.url("/done"), "method": "POST", "body": {}}},
                {"sleep": -1},
            )
            await wait_for(lambda: any(h.path == "/done" for h in receiver.hits), 15, "/done")
            await client.calling.end(call_id)
    finally:
        sink.close()
    assert far_end.digits() == "1234"  # the digits did go out while the tap ran
    p = sink.packets
    span = p[-1].at - p[0].at
    assert span > 1.4, span  # 0.5 s + the digits (~0.8 s) + 0.5 s
    assert all((b.ts - a.ts) % 2**32 == 160 for a, b in itertools.pairwise(p))
    # One packet per tick: nothing missing over the whole span, digits included.
    assert len(p) - 1 >= round(span * 50) - 2, (len(p), span)
    # The bug left a hole as long as the digits (~0.8 s); a loaded machine may delay one
    # tick by up to a few (a parallel CI run saw 0.1007 s).
    gaps = [b.at - a.at for a, b in itertools.pairwise(p)]
    assert max(gaps) < 0.25, max(gaps)


async def test_each_tick_is_sent_at_once_in_the_tapped_direction() -> None:
    """In process, driven by TickFrames: every tick sends exactly one 20 ms packet, during the
    tick itself (no lag, no FIFO), holding `speak` = inbound + speak, `listen` = outbound,
    `both` = the sum, clipped."""

    def frame(value: int) -> np.ndarray:
        return np.full(160, value, dtype=np.int16)

    session = TickSession()
    call = tick_call(session)
    emitted = Emitted()
    services = tick_services(emitted)
    sockets: dict[str, socket.socket] = {}
    for direction in ("speak", "listen", "both"):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((LOOPBACK, 0))
        sock.settimeout(1.0)
        sockets[direction] = sock
        settings = TapSettings(
            direction=direction,  # type: ignore[arg-type]
            device="rtp",
            codec="PCMU",
            ptime=20,
            addr=LOOPBACK,
            port=sock.getsockname()[1],
        )
        op = start_tap(services, call, control_id=direction, settings=settings, status_url=None)
        assert op.state == "tapping"
    got: dict[str, list[int]] = {d: [] for d in sockets}
    seqs: dict[str, list[int]] = {d: [] for d in sockets}
    ticks = [
        (frame(1000), frame(100), None),
        (frame(2000), frame(200), frame(20)),
        (None, frame(300), None),  # nothing arrived: silence on the speak side
        (frame(30000), frame(30000), None),  # the sum clips
    ]
    for inbound, outbound, speak in ticks:
        session.tick(inbound, outbound, speak)
        for direction, sock in sockets.items():
            packet = sock.recv(2048)  # already there: sent inside the tick
            assert len(packet) == 12 + 160
            seqs[direction].append(struct.unpack("!H", packet[2:4])[0])
            got[direction].append(int(np.median(ulaw_decode(packet[12:]))))
    for direction in sockets:
        first = seqs[direction][0]
        assert seqs[direction] == [(first + k) & 0xFFFF for k in range(4)]

    def near(values: list[int], expected: list[int]) -> bool:  # G.711 is lossy
        return all(
            abs(v - e) <= max(8, abs(e) // 16) for v, e in zip(values, expected, strict=True)
        )

    assert near(got["speak"], [1000, 2020, 0, 30000]), got["speak"]
    assert near(got["listen"], [100, 200, 300, 30000]), got["listen"]
    assert near(got["both"], [1100, 2220, 300, 32767]), got["both"]
    for op in list(call.operations.values()):
        await op.stop()
    assert session.listeners == []
    for sock in sockets.values():
        sock.close()
