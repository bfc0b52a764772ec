"""MediaEngine end to end over real UDP sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from callplane.media import g711, sources
from callplane.media.engine import MediaEngine, RtpSession, TickFrames
from callplane.media.sources import Frame, FrameReader, Source

PORTS = (40200, 40399)


@pytest.fixture
async def engine() -> AsyncIterator[MediaEngine]:
    m = MediaEngine("127.0.0.1", PORTS)
    await m.start()
    yield m
    await m.stop()


async def pair(engine: MediaEngine, pt: int = 0) -> tuple[RtpSession, RtpSession]:
    a = await engine.open_session()
    b = await engine.open_session()
    a.configure(("127.0.0.1", b.local_port), payload_type=pt)
    b.configure(("127.0.0.1", a.local_port), payload_type=pt)
    return a, b


class Collector:
    def __init__(self, session: RtpSession, direction: str = "inbound") -> None:
        self.frames: list[Frame] = []
        self.direction = direction
        session.add_listener(self)

    def __call__(self, tick: TickFrames) -> None:
        frame = getattr(tick, self.direction)
        if frame is not None:
            self.frames.append(frame)

    def audio(self) -> np.ndarray:
        return np.concatenate(self.frames) if self.frames else np.zeros(0, np.int16)

    def clear(self) -> None:
        self.frames.clear()


def loud_frames(audio: np.ndarray) -> np.ndarray:
    """The frames that carry any signal, concatenated (drops the idle silence around a tone)."""
    frames = audio.reshape(-1, 160)
    return frames[np.abs(frames).max(axis=1) > 0].reshape(-1)


def rms_db(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)) / 32767 + 1e-12))


def peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(x.size)))
    return float(np.argmax(spec) * 8000 / x.size)


async def test_tone_between_two_sessions(engine: MediaEngine) -> None:
    a, b = await pair(engine)
    rx = Collector(b)
    pb = a.play(sources.tone(1000, 1.0, level_dbfs=-10))
    assert await asyncio.wait_for(pb.done, 3) == "finished"
    assert pb.state == "finished"
    await asyncio.sleep(0.1)
    loud = loud_frames(rx.audio())
    assert loud.size == 8000
    assert peak_hz(loud[:4000]) == pytest.approx(1000, abs=3)
    assert rms_db(loud[:4000]) == pytest.approx(-13, abs=0.5)
    assert a.local_port % 2 == 0 and b.local_port % 2 == 0


async def test_packet_rate_sequence_and_timestamps(engine: MediaEngine) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    far_port = sock.getsockname()[1]  # OS-chosen: parallel runs never clash
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        s = await engine.open_session()
        s.configure(("127.0.0.1", far_port))
        s.play(sources.tone(1000, None))
        packets: list[tuple[float, bytes]] = []
        while len(packets) < 101:
            data, _ = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), 2)
            packets.append((time.monotonic(), data))
    finally:
        sock.close()
    headers = [struct.unpack("!BBHII", d[:12]) for _, d in packets]
    assert all(len(d) == 172 for _, d in packets)
    assert headers[0][1] & 0x80  # marker on the first packet of the stream
    assert all(h[0] == 0x80 and h[1] & 0x7F == 0 for h in headers)
    assert len({h[4] for h in headers}) == 1
    for prev, cur in itertools.pairwise(headers):
        assert cur[2] == (prev[2] + 1) % 65536
        assert cur[3] == (prev[3] + 160) % 2**32
    span = packets[-1][0] - packets[0][0]
    assert span == pytest.approx(2.0, abs=0.1)  # 100 intervals at 50 packets/s


async def test_silence_is_sent_when_nothing_plays(engine: MediaEngine) -> None:
    a, b = await pair(engine)
    rx = Collector(b)
    await asyncio.sleep(0.5)
    assert len(rx.frames) >= 20
    assert not rx.audio().any()
    assert a.packets_sent >= 20


async def test_pcma(engine: MediaEngine) -> None:
    a, b = await pair(engine, pt=8)
    rx = Collector(b)
    await asyncio.wait_for(a.play(sources.tone(697, 0.6)).done, 2)
    await asyncio.sleep(0.1)
    loud = loud_frames(rx.audio())
    assert peak_hz(loud[:4000]) == pytest.approx(697, abs=3)


async def test_volume_change_is_measured_in_received_signal(engine: MediaEngine) -> None:
    a, b = await pair(engine)
    rx = Collector(b)
    pb = a.play(sources.tone(1000, None, level_dbfs=-10))
    await asyncio.sleep(0.5)
    before = rx.audio()[-2400:]
    pb.set_volume(-6.0)
    await asyncio.sleep(0.1)
    rx.clear()
    await asyncio.sleep(0.4)
    after = rx.audio()[-2400:]
    pb.set_volume(4.0)
    await asyncio.sleep(0.1)
    rx.clear()
    await asyncio.sleep(0.4)
    louder = rx.audio()[-2400:]
    pb.stop()
    assert rms_db(after) - rms_db(before) == pytest.approx(-6.0, abs=1.0)
    assert rms_db(louder) - rms_db(before) == pytest.approx(4.0, abs=1.0)
    assert pb.volume_db == 4.0
    assert await pb.done == "stopped"


def ramp_source(frames: int) -> Source:
    """Frame k holds the constant value 100 * (k + 1): position is readable after G.711."""
    values = np.repeat(np.arange(1, frames + 1, dtype=np.int16) * 100, 160)
    return sources.pcm(values)


def frame_indices(audio: np.ndarray) -> list[int]:
    frames = audio.reshape(-1, 160)
    idx = []
    for f in frames:
        v = float(np.median(f))
        if v > 50:
            idx.append(round(v / 100))
    return idx


async def test_pause_resume_continues_where_it_paused(engine: MediaEngine) -> None:
    a, b = await pair(engine)
    rx = Collector(b)
    sent = Collector(a, "outbound")  # exact pre-encoding values: G.711 would blur the ramp
    pb = a.play(ramp_source(100))
    await asyncio.sleep(0.3)
    pb.pause()
    assert pb.state == "paused"
    await asyncio.sleep(0.05)
    seen_before = frame_indices(sent.audio())
    rx.clear()
    sent.clear()
    await asyncio.sleep(0.3)
    assert not rx.audio().any()  # the far end hears silence while paused...
    assert len(rx.frames) >= 10  # ...and the stream keeps flowing
    pb.resume()
    assert pb.state == "playing"
    await asyncio.sleep(0.3)
    pb.stop()
    seen_after = frame_indices(sent.audio())
    assert seen_before == list(range(1, len(seen_before) + 1))
    assert seen_after[0] == seen_before[-1] + 1
    assert seen_after == list(range(seen_after[0], seen_after[0] + len(seen_after)))
    assert await pb.done == "stopped"
    assert np.count_nonzero(rx.audio()) > 1000


async def test_playlist_and_loops(engine: MediaEngine) -> None:
    a, b = await pair(engine)
    rx = Collector(b)
    t0 = time.monotonic()
    pb = a.play([sources.tone(500, 0.1), sources.silence(0.1), sources.tone(1500, 0.1)], loop=2)
    assert await asyncio.wait_for(pb.done, 3) == "finished"
    assert time.monotonic() - t0 == pytest.approx(0.6, abs=0.1)
    await asyncio.sleep(0.1)
    audio = rx.audio()
    on = np.abs(audio.reshape(-1, 160)).max(axis=1) > 0
    assert on.sum() == 20  # 4 tone segments x 5 frames


async def test_loop_forever_until_stopped_and_mixing(engine: MediaEngine) -> None:
    a, b = await pair(engine)
    rx = Collector(b)
    p1 = a.play(sources.tone(400, 0.1, level_dbfs=-12), loop=0)
    p2 = a.play(sources.tone(1200, 0.1, level_dbfs=-12), loop=0)
    await asyncio.sleep(0.6)
    assert p1.state == p2.state == "playing"
    tail = rx.audio()[-3200:]
    spec = np.abs(np.fft.rfft(tail * np.hanning(tail.size)))
    freqs = np.fft.rfftfreq(tail.size, 1 / 8000)
    top = sorted(freqs[np.argsort(spec)[-2:]])
    assert top == [pytest.approx(400, abs=5), pytest.approx(1200, abs=5)]
    p1.stop()
    await a.close()
    assert await p1.done == "stopped" and await p2.done == "stopped"


class _Broken(Source):
    def __init__(self) -> None:
        super().__init__(np.zeros(160, np.int16), 1600, "broken")

    def reader(self) -> FrameReader:
        class R(FrameReader):
            def next_frame(self) -> Frame | None:
                raise RuntimeError("decoder exploded")

        return R(np.zeros((1, 160), np.int16), None, None)


async def test_source_error_ends_playback_with_error(engine: MediaEngine) -> None:
    a, _ = await pair(engine)
    good = a.play(sources.tone(440, 0.2))
    bad = a.play(_Broken())
    assert await asyncio.wait_for(bad.done, 1) == "error"
    assert isinstance(bad.error, RuntimeError)
    assert await asyncio.wait_for(good.done, 1) == "finished"  # the clock kept running


async def test_dtmf_send_receive_exact_digits(engine: MediaEngine) -> None:
    a, b = await pair(engine)
    got: list[tuple[str, int]] = []
    b.on_dtmf = lambda d, ms: got.append((d, ms))
    a.play(sources.tone(440, None))  # digits interleave with audio on the same stream
    t0 = time.monotonic()
    await asyncio.wait_for(a.send_digits("159#*0ABCD"), 5)
    assert time.monotonic() - t0 == pytest.approx(10 * 0.26 - 0.1, abs=0.15)
    await asyncio.sleep(0.1)
    assert [d for d, _ in got] == list("159#*0ABCD")
    assert all(ms == 100 for _, ms in got)


async def test_dtmf_pauses(engine: MediaEngine) -> None:
    a, b = await pair(engine)
    got: list[str] = []
    b.on_dtmf = lambda d, ms: got.append(d)
    t0 = time.monotonic()
    await a.send_digits("1w2W3,")
    elapsed = time.monotonic() - t0
    assert elapsed == pytest.approx(3 * 0.26 + 0.5 + 1.0 + 1.0, abs=0.15)
    assert got == ["1", "2", "3"]


async def test_dtmf_errors(engine: MediaEngine) -> None:
    a, _ = await pair(engine)
    with pytest.raises(ValueError, match="invalid character"):
        await a.send_digits("12x")
    a.configure(("127.0.0.1", 40398), telephone_event_pt=None)
    with pytest.raises(RuntimeError, match="not negotiated"):
        await a.send_digits("1")


async def test_dtmf_packets_share_ssrc_and_sequence_space(engine: MediaEngine) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    far_port = sock.getsockname()[1]  # OS-chosen: parallel runs never clash
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        s = await engine.open_session()
        s.configure(("127.0.0.1", far_port), telephone_event_pt=101)
        task = asyncio.create_task(s.send_digits("7"))
        packets = []
        while len(packets) < 20:
            data, _ = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), 2)
            packets.append(data)
        await task
    finally:
        sock.close()
    hdr = [struct.unpack("!BBHII", p[:12]) for p in packets]
    for prev, cur in itertools.pairwise(hdr):
        assert cur[2] == (prev[2] + 1) % 65536
    events = [(h, p[12:]) for h, p in zip(hdr, packets, strict=False) if h[1] & 0x7F == 101]
    assert len(events) == 8
    assert events[0][0][1] & 0x80  # marker on the event's first packet
    assert len({h[3] for h, _ in events}) == 1  # one timestamp for the whole event
    assert [p[1] & 0x80 for _, p in events] == [0] * 5 + [0x80] * 3


async def test_symmetric_rtp_latches_to_source_address(engine: MediaEngine) -> None:
    a = await engine.open_session()
    b = await engine.open_session()
    a.configure(("127.0.0.1", 40398))  # wrong address from "SDP"
    b.configure(("127.0.0.1", a.local_port))
    rx = Collector(b)
    await asyncio.sleep(0.2)
    assert a.remote == ("127.0.0.1", b.local_port)
    a.play(sources.tone(1000, 0.4))
    await asyncio.sleep(0.6)
    assert np.count_nonzero(rx.audio()) > 2000


async def test_port_allocation_even_and_exhaustion() -> None:
    m = MediaEngine("127.0.0.1", (40500, 40505))
    await m.start()
    try:
        sessions = [await m.open_session() for _ in range(2)]
        assert [s.local_port for s in sessions] == [40500, 40502]
        await m.open_session()  # 40504 + 40505
        with pytest.raises(OSError, match="no free even RTP port"):
            await m.open_session()
        await sessions[0].close()
        again = await m.open_session()
        assert again.local_port == 40500
    finally:
        await m.stop()


async def test_every_pair_of_the_range_is_tried_before_giving_up() -> None:
    """A range of one pair holds one session; with the next pair taken by another socket, the
    pair freed by a call that ended is found again (not a false "no ports")."""
    one = MediaEngine("127.0.0.1", (40510, 40511))
    await one.start()
    try:
        assert (await one.open_session()).local_port == 40510
    finally:
        await one.stop()
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 40522))
    m = MediaEngine("127.0.0.1", (40520, 40523))
    await m.start()
    try:
        first = await m.open_session()
        assert first.local_port == 40520
        with pytest.raises(OSError, match="no free even RTP port"):
            await m.open_session()
        await first.close()
        assert (await m.open_session()).local_port == 40520
    finally:
        other.close()
        await m.stop()


async def test_latch_only_sends_nothing_until_a_packet_comes_then_only_to_its_source(
    engine: MediaEngine,
) -> None:
    def udp() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        return sock

    def count(sock: socket.socket) -> int:
        n = 0
        with contextlib.suppress(BlockingIOError):
            while sock.recv(2048):
                n += 1
        return n

    named, real = udp(), udp()
    try:
        s = await engine.open_session()
        s.latch_only = True
        s.configure(("127.0.0.1", named.getsockname()[1]))
        await asyncio.sleep(0.3)
        assert s.remote is None and s.packets_sent == 0 and count(named) == 0
        real.sendto(
            struct.pack("!BBHII", 0x80, 0, 1, 160, 7) + b"\xff" * 160, ("127.0.0.1", s.local_port)
        )
        await asyncio.sleep(0.3)
        assert s.remote == real.getsockname()
        assert count(real) >= 10 and count(named) == 0
        s.latch_only = False  # a trusted peer: the SDP's address is the fallback again
        assert s.remote == real.getsockname()  # but the latched source still wins
    finally:
        named.close()
        real.close()


async def test_clock_has_no_drift(engine: MediaEngine) -> None:
    t0 = time.monotonic()
    ticks0 = engine.stats.ticks
    await asyncio.sleep(1.0)
    elapsed = time.monotonic() - t0
    assert engine.stats.ticks - ticks0 == pytest.approx(elapsed / 0.02, abs=2)


async def test_clock_catches_up_after_a_stall(engine: MediaEngine) -> None:
    _, b = await pair(engine)
    rx = Collector(b)
    await asyncio.sleep(0.1)
    time.sleep(0.1)  # noqa: ASYNC251 - deliberately block the loop for 5 ticks
    await asyncio.sleep(0.2)
    assert engine.stats.caught_up_ticks >= 3
    assert engine.stats.max_lateness >= 0.08
    headers_ok = b._rx.lost == 0
    assert headers_ok and len(rx.frames) >= 18


async def test_outbound_listener_sees_what_is_sent(engine: MediaEngine) -> None:
    a, _ = await pair(engine)
    out = Collector(a, "outbound")
    await asyncio.wait_for(a.play(sources.tone(1000, 0.2)).done, 2)
    sent = loud_frames(out.audio())
    expected = sources.tone(1000, 0.2).render()
    assert sent.size == expected.size
    assert np.array_equal(sent, expected)


async def test_rtcp_sender_report_is_sent() -> None:
    from callplane.media import engine as engine_mod
    from callplane.media.rtp import SenderReport, parse_rtcp

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 40407))
    sock.setblocking(False)
    m = MediaEngine("127.0.0.1", PORTS)
    old = engine_mod.RTCP_INTERVAL
    engine_mod.RTCP_INTERVAL = 0.3
    await m.start()
    try:
        s = await m.open_session()
        s.configure(("127.0.0.1", 40406))
        data, _ = await asyncio.wait_for(asyncio.get_running_loop().sock_recvfrom(sock, 2048), 3)
        (sr,) = parse_rtcp(data)
        assert isinstance(sr, SenderReport) and sr.ssrc == s.ssrc and sr.packet_count > 0
    finally:
        engine_mod.RTCP_INTERVAL = old
        sock.close()
        await m.stop()


def test_silence_code_sanity() -> None:
    assert g711.ulaw_encode(np.zeros(1, np.int16))[0] == 0xFF


@pytest.mark.parametrize(
    ("direction", "far_end_hears", "spoken"),
    [
        ("listen", True, False),
        ("speak", False, True),
        ("both", True, True),
    ],
)
async def test_play_direction_decides_who_hears_it(
    engine: MediaEngine, direction: str, far_end_hears: bool, spoken: bool
) -> None:
    a, b = await pair(engine)
    rx = Collector(b)
    said = Collector(a, "speak")
    sent = Collector(a, "outbound")
    pb = a.play(sources.tone(1000, 0.4, level_dbfs=-10), direction=direction)  # type: ignore[arg-type]
    assert await asyncio.wait_for(pb.done, 3) == "finished"
    await asyncio.sleep(0.1)
    assert (loud_frames(rx.audio()).size == 3200) is far_end_hears
    assert (loud_frames(sent.audio()).size == 3200) is far_end_hears
    heard = said.audio()
    assert (heard.size == 3200) is spoken
    if spoken:
        assert peak_hz(heard) == pytest.approx(1000, abs=3)


async def test_play_direction_is_validated(engine: MediaEngine) -> None:
    a, _ = await pair(engine)
    with pytest.raises(ValueError, match="direction"):
        a.play(sources.silence(0.1), direction="sideways")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# The media graph: ticks for every listener, hold, mix groups, live sources


class TickCounter:
    def __init__(self, session: RtpSession) -> None:
        self.ticks: list[TickFrames] = []
        session.add_listener(self.ticks.append)


async def test_listeners_get_one_tick_frames_every_tick_even_while_digits_are_sent(
    engine: MediaEngine,
) -> None:
    a, _b = await pair(engine)
    seen = TickCounter(a)
    a.play(sources.tone(700, None, level_dbfs=-12))
    await asyncio.sleep(0.2)
    first = len(seen.ticks)
    t0 = time.monotonic()
    await a.send_digits("1234")
    elapsed = time.monotonic() - t0
    got = len(seen.ticks) - first
    # Before the graph, outbound frames stopped for the whole of send_digits (~0.7 s).
    assert got == pytest.approx(elapsed / 0.02, abs=3)
    ticks = [t.tick for t in seen.ticks]
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))  # no tick missing
    during = seen.ticks[first + 5 : first + 25]
    assert all(peak_hz(t.outbound) == pytest.approx(700, abs=60) for t in during)


async def test_inbound_is_one_frame_per_tick_and_silent_when_the_far_end_stops(
    engine: MediaEngine,
) -> None:
    a, b = await pair(engine)
    seen = TickCounter(b)
    pb = a.play(sources.tone(1000, 0.5, level_dbfs=-10))
    await asyncio.wait_for(pb.done, 3)
    await a.close()  # the far end stops sending altogether
    await asyncio.sleep(0.5)
    heard = [t.heard for t in seen.ticks]
    assert any(heard)
    last_heard = max(i for i, h in enumerate(heard) if h)
    quiet = seen.ticks[last_heard + 1 :]
    assert len(quiet) >= 20  # ticks keep coming without any packet
    assert not any(t.heard or t.inbound.any() for t in quiet)
    assert all(t.inbound.size == 160 and t.outbound.size == 160 for t in seen.ticks)


async def test_hold_stops_sending_and_unhold_resumes_on_the_wall_clock(engine: MediaEngine) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    far_port = sock.getsockname()[1]  # OS-chosen: parallel runs never clash
    sock.setblocking(False)
    loop = asyncio.get_running_loop()

    async def packets_for(seconds: float) -> list[bytes]:
        got: list[bytes] = []
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                data, _ = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), left)
            except TimeoutError:
                break
            got.append(data)
        return got

    try:
        s = await engine.open_session()
        s.configure(("127.0.0.1", far_port))
        seen = TickCounter(s)
        before = await packets_for(0.3)
        s.set_direction("recvonly")  # the far end put us on hold (it sent a=sendonly)
        await asyncio.sleep(0.02)
        while True:  # what left before the hold took effect
            try:
                before.append(sock.recv(2048))
            except BlockingIOError:
                break
        held = await packets_for(0.4)
        ticks_on_hold = len(seen.ticks)
        s.set_direction("sendrecv")
        after = await packets_for(0.3)
    finally:
        sock.close()
    assert len(before) >= 10 and held == [] and len(after) >= 10
    assert len(seen.ticks) > ticks_on_hold  # listeners tick on through the hold
    last = struct.unpack("!BBHII", before[-1][:12])
    first = struct.unpack("!BBHII", after[0][:12])
    assert first[1] & 0x80  # marker: a new talkspurt
    assert first[2] == (last[2] + 1) % 65536  # no sequence gap: nothing was sent
    gap_ticks = ((first[3] - last[3]) % 2**32) / 160
    assert gap_ticks >= 0.4 / 0.02 - 2  # timestamps followed the wall clock through the hold


async def test_bridge_each_party_hears_the_other_and_not_itself(engine: MediaEngine) -> None:
    # far end A <-> leg A  ==bridge==  leg B <-> far end B
    far_a, leg_a = await pair(engine)
    far_b, leg_b = await pair(engine)
    at_far_a = Collector(far_a)
    at_far_b = Collector(far_b)
    far_a.play(sources.tone(500, None, level_dbfs=-12))
    far_b.play(sources.tone(1300, None, level_dbfs=-12))
    bridge = engine.mix_group()
    bridge.add(leg_a)
    bridge.add(leg_b)
    await asyncio.sleep(0.6)
    heard_a = at_far_a.audio()[-4000:]
    heard_b = at_far_b.audio()[-4000:]
    assert peak_hz(heard_a) == pytest.approx(1300, abs=5)
    assert peak_hz(heard_b) == pytest.approx(500, abs=5)
    assert rms_db(heard_a) == pytest.approx(-15, abs=1.0)  # -12 dBFS peak sine: -15 dB RMS
    # Mute B (it speaks no more): A hears silence; B still hears A.
    bridge.set(leg_b, speaks=False)
    at_far_a.clear()
    at_far_b.clear()
    await asyncio.sleep(0.4)
    assert not at_far_a.audio()[-1600:].any()
    assert peak_hz(at_far_b.audio()[-1600:]) == pytest.approx(500, abs=10)
    bridge.close()
    at_far_b.clear()
    await asyncio.sleep(0.3)
    assert not at_far_b.audio()[-1600:].any()  # unbridged: each leg alone again


async def test_bridge_carries_speak_playbacks_to_the_peer(engine: MediaEngine) -> None:
    far_a, leg_a = await pair(engine)
    far_b, leg_b = await pair(engine)
    at_far_a = Collector(far_a)
    at_far_b = Collector(far_b)
    bridge = engine.mix_group()
    bridge.add(leg_a)
    bridge.add(leg_b)
    leg_a.play(sources.tone(900, None, level_dbfs=-12), direction="speak")
    await asyncio.sleep(0.5)
    assert peak_hz(at_far_b.audio()[-3200:]) == pytest.approx(900, abs=5)  # A's leg "said" it
    assert not at_far_a.audio()[-3200:].any()  # not sent to A's far end


async def test_three_party_mix_minus(engine: MediaEngine) -> None:
    tones = (440, 1100, 1900)
    fars, legs = [], []
    for _ in tones:
        far, leg = await pair(engine)
        fars.append(far)
        legs.append(leg)
    collectors = [Collector(f) for f in fars]
    for far, hz in zip(fars, tones, strict=True):
        far.play(sources.tone(hz, None, level_dbfs=-18))
    room = engine.mix_group()
    for leg in legs:
        room.add(leg)
    await asyncio.sleep(0.6)
    for k, col in enumerate(collectors):
        x = col.audio()[-4000:].astype(np.float64)
        spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
        power = {hz: spec[int(hz * x.size / 8000)] for hz in tones}
        own = tones[k]
        others = [hz for hz in tones if hz != own]
        assert all(power[hz] > 50 * power[own] for hz in others), (k, power)


async def test_live_source_plays_what_is_pushed_and_silence_when_dry(engine: MediaEngine) -> None:
    a, _b = await pair(engine)
    sent = Collector(a, "outbound")
    live = sources.LiveSource("peer")
    pb = a.play(live)
    ramp = (np.arange(1600, dtype=np.int16) - 800) * 10
    live.push(ramp[:1000])  # not a whole number of frames: re-cut
    live.push(ramp[1000:])
    await asyncio.sleep(0.5)
    assert pb.state == "playing"  # dry, but not ended
    audio = sent.audio()
    start = int(np.flatnonzero(audio)[0])
    assert np.array_equal(audio[start : start + 1600], ramp)
    assert live.dry_frames > 0
    live.close()
    assert await asyncio.wait_for(pb.done, 1) == "finished"


async def test_coach_whispers_to_one_member_and_a_tap_gets_the_room(engine: MediaEngine) -> None:
    tones = (440, 1100, 1900)  # A, B, and C who coaches A
    fars, legs = [], []
    for _ in tones:
        far, leg = await pair(engine)
        fars.append(far)
        legs.append(leg)
    collectors = [Collector(f) for f in fars]
    for far, hz in zip(fars, tones, strict=True):
        far.play(sources.tone(hz, None, level_dbfs=-18))
    room = engine.mix_group()
    room.add(legs[0])
    room.add(legs[1])
    room.add(legs[2], heard_by=legs[0])
    tapped: list[np.ndarray] = []
    ticks: list[int] = []

    def tap(tick: int, total: np.ndarray) -> None:
        ticks.append(tick)
        tapped.append(total)

    room.add_tap(tap)
    await asyncio.sleep(0.6)

    def power(x: np.ndarray) -> dict[int, float]:
        x = x.astype(np.float64)
        spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
        return {hz: spec[int(hz * x.size / 8000)] for hz in tones}

    at_a, at_b, at_c = (power(c.audio()[-4000:]) for c in collectors)
    assert at_a[1100] > 50 * at_a[440] and at_a[1900] > 50 * at_a[440]  # B and the coach
    assert at_b[440] > 50 * at_b[1900]  # B hears A, not the coach
    assert at_c[440] > 50 * at_c[1900] and at_c[1100] > 50 * at_c[1900]  # coach hears the room
    room_audio = power(np.concatenate(tapped[-25:]))
    assert room_audio[440] > 50 * room_audio[1900] and room_audio[1100] > 50 * room_audio[1900]
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))  # one frame every tick
    room.set(legs[2], heard_by=None)  # the coach now speaks to everyone
    collectors[1].clear()
    await asyncio.sleep(0.4)
    at_b = power(collectors[1].audio()[-3200:])
    assert at_b[1900] > 10 * at_b[1100]
    room.remove_tap(tap)
    n = len(tapped)
    await asyncio.sleep(0.1)
    assert len(tapped) == n


async def test_an_inbound_filter_comes_before_listeners_and_the_bridged_peer(
    engine: MediaEngine,
) -> None:
    # far end A -> leg A (filtered)  ==bridge==  leg B -> far end B
    far_a, leg_a = await pair(engine)
    far_b, leg_b = await pair(engine)
    at_leg_a = Collector(leg_a)
    at_far_b = Collector(far_b)
    far_a.play(sources.tone(500, None, level_dbfs=-12))
    bridge = engine.mix_group()
    bridge.add(leg_a)
    bridge.add(leg_b)
    filtered: list[int] = []

    def halve(frame: Frame) -> None:
        filtered.append(1)
        frame //= 2

    leg_a.inbound_filter = halve
    await asyncio.sleep(0.6)
    assert filtered, "the filter never ran"
    assert rms_db(at_leg_a.audio()[-4000:]) == pytest.approx(-21, abs=1.0)  # -15 dB, halved
    assert rms_db(at_far_b.audio()[-4000:]) == pytest.approx(-21, abs=1.0)
    leg_a.inbound_filter = None
    at_leg_a.clear()
    await asyncio.sleep(0.3)
    assert rms_db(at_leg_a.audio()[-1600:]) == pytest.approx(-15, abs=1.0)
    # A filter that raises is removed; the clock and the call go on.
    leg_a.inbound_filter = lambda frame: 1 / 0  # type: ignore[func-returns-value]
    await asyncio.sleep(0.1)
    assert leg_a.inbound_filter is None
    bridge.close()
