"""The RTP jitter buffer, driven by a virtual clock: packets "arrive" between 20 ms pops, and the
popped audio is checked sample by sample against what was sent."""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callplane.media.jitter import JitterBuffer
from callplane.media.rtp import SEQ_MOD, TS_MOD
from callplane.media.sources import FRAME_SAMPLES, Frame

F = FRAME_SAMPLES


def ramp(n: int, start: int = 0) -> Frame:
    """Never-zero samples, unique over 32000 samples (4 s): silence and shifts both show."""
    return ((np.arange(start, start + n) % 32000) + 1).astype(np.int16)


@dataclass
class Packet:
    arrival_ms: float
    seq: int
    ts: int
    samples: Frame


def stream(
    seconds: float,
    ptime_ms: int = 20,
    *,
    seq0: int = 1000,
    ts0: int = 50_000,
    clock: float = 1.0,
    offset: int = 0,
) -> tuple[Frame, list[Packet]]:
    """The sent audio and its packets; packet i leaves at i*ptime/clock ms (clock > 1: a sender
    running fast) and arrives 1 ms later."""
    n = ptime_ms * 8
    count = int(seconds * 1000 / ptime_ms)
    src = ramp(n * count, offset)
    packets = [
        Packet(
            i * ptime_ms / clock + 1.0,
            (seq0 + i) % SEQ_MOD,
            (ts0 + i * n) % TS_MOD,
            src[i * n : (i + 1) * n],
        )
        for i in range(count)
    ]
    return src, packets


def run(
    jb: JitterBuffer, packets: Iterable[Packet], ticks: int, phase_ms: float = 10.0
) -> tuple[Frame, list[bool], list[float]]:
    """Pop every 20 ms at k*20 + phase; packets are pushed, in arrival order, before the first
    pop after their arrival. Returns the popped audio, the per-pop flags and delay_ms per pop."""
    pending = sorted(packets, key=lambda p: p.arrival_ms)
    out = np.empty(ticks * F, dtype=np.int16)
    flags: list[bool] = []
    delays: list[float] = []
    j = 0
    for k in range(ticks):
        now = k * 20 + phase_ms
        while j < len(pending) and pending[j].arrival_ms < now:
            p = pending[j]
            jb.push(p.seq, p.ts, p.samples)
            j += 1
        flags.append(jb.pop_into(out[k * F : (k + 1) * F]))
        assert jb.delay_ms <= jb.max_frames * 20
        delays.append(jb.delay_ms)
    return out, flags, delays


def ramp_steps(x: Frame) -> npt.NDArray[np.int64]:
    """How far the ramp advanced from each sample to the next (1 = contiguous)."""
    return np.mod(np.diff(x.astype(np.int64)), 32000)


def assert_contiguous(out: Frame) -> None:
    """``out`` is one unbroken stretch of the ramp."""
    assert out.all()
    assert (ramp_steps(out) == 1).all()


def assert_in_order(out: Frame) -> None:
    """What played is the ramp moving forward only: gaps, but no repeats or reversals."""
    steps = ramp_steps(out[out != 0])
    assert ((steps >= 1) & (steps < 16000)).all()


def assert_plays(out: Frame, src: Frame, delay_frames: int) -> None:
    """``out`` is ``delay_frames`` of silence then exactly ``src`` (then silence)."""
    lead = delay_frames * F
    assert not out[:lead].any()
    np.testing.assert_array_equal(out[lead : lead + src.size], src)
    assert not out[lead + src.size :].any()


# -- basics ------------------------------------------------------------------------------------


def test_arguments_are_validated() -> None:
    with pytest.raises(ValueError):
        JitterBuffer(max_frames=0)
    with pytest.raises(ValueError):
        JitterBuffer(target_frames=-1)
    with pytest.raises(ValueError):
        JitterBuffer(target_frames=3, max_frames=3)


def test_silence_before_the_first_packet() -> None:
    jb = JitterBuffer()
    out = np.full(F, 7, dtype=np.int16)
    for _ in range(3):
        assert jb.pop_into(out) is False
        assert not out.any()
    assert jb.delay_ms == 0
    assert jb.stats.concealed == 0 and jb.stats.played == 0
    assert not jb.pop().any()
    assert jb.push(1, 0, np.zeros(0, dtype=np.int16)) is False
    assert jb.stats.pushed == 0


@pytest.mark.parametrize("target", [0, 1, 2, 4])
def test_in_order_20ms_plays_exactly_after_the_target_delay(target: int) -> None:
    jb = JitterBuffer(target_frames=target)
    src, packets = stream(2.0)
    out, flags, delays = run(jb, packets, 100 + target + 3)
    assert_plays(out, src, target)
    assert flags == [False] * target + [True] * 100 + [False] * 3
    assert jb.stats.played == 100 and jb.stats.pushed == 100
    assert jb.stats.concealed == 3  # the three pops after the stream stopped
    assert jb.stats.late == jb.stats.duplicates == jb.stats.resyncs == jb.stats.shrunk == 0
    # Steady state: one frame in the buffer per target frame, between the pop and the arrival.
    assert delays[target + 10] == target * 20
    assert jb.stats.max_delay_ms == target * 20


def test_pop_returns_a_fresh_frame() -> None:
    jb = JitterBuffer(target_frames=0)
    jb.push(5, 1000, ramp(F))
    a = jb.pop()
    b = jb.pop()
    assert a is not b and a.shape == (F,) and a.dtype == np.int16
    np.testing.assert_array_equal(a, ramp(F))
    assert not b.any()


@pytest.mark.parametrize("ptime", [10, 20, 30, 40, 60])
@pytest.mark.parametrize("phase", [1.5, 10.0, 20.5])
def test_any_ptime_is_recut_into_exact_frames(ptime: int, phase: float) -> None:
    jb = JitterBuffer(target_frames=1)
    src, packets = stream(2.4, ptime)
    ticks = src.size // F + 4
    out, _, _ = run(jb, packets, ticks, phase)
    assert_plays(out, src, 1)
    assert jb.stats.played == src.size // F
    assert jb.stats.late == jb.stats.late_trimmed == jb.stats.overflow_dropped == 0


# -- order, duplicates, loss ---------------------------------------------------------------------


def test_reordered_packets_land_in_place() -> None:
    jb = JitterBuffer(target_frames=2)
    src, packets = stream(2.0)
    for i in range(2, len(packets) - 1, 2):  # every pair swapped (but the one anchoring)
        packets[i].arrival_ms, packets[i + 1].arrival_ms = (
            packets[i + 1].arrival_ms,
            packets[i].arrival_ms + 0.5,
        )
    # and a few three deep
    for i in (30, 60):
        packets[i].arrival_ms += 25
    out, _, _ = run(jb, packets, 110)
    assert_plays(out, src, 2)
    assert jb.stats.late == jb.stats.concealed - 8 == 0


def test_duplicates_are_dropped_and_counted() -> None:
    jb = JitterBuffer(target_frames=1)
    src, packets = stream(1.0)
    twice = [
        q
        for p in packets
        for q in (p, Packet(p.arrival_ms + 0.2, p.seq, p.ts, np.full(F, -5, np.int16)))
    ]
    results: list[bool] = []
    out = np.empty(60 * F, dtype=np.int16)
    pending = iter(twice)
    for k in range(60):
        for _ in range(2 if k < 50 else 0):
            p = next(pending)
            results.append(jb.push(p.seq, p.ts, p.samples))
        jb.pop_into(out[k * F : (k + 1) * F])
    assert results == [True, False] * 50
    assert_plays(out, src, 1)
    assert jb.stats.duplicates == 50


def test_partial_overlap_fills_only_the_gap() -> None:
    jb = JitterBuffer(target_frames=1)
    src = ramp(4 * F)
    assert jb.push(1, 0, src[:F])
    assert jb.push(3, 2 * F, src[2 * F : 3 * F])
    # A 40 ms packet over frames 1 and 2: frame 2 is already here (its copy is ignored).
    bogus = src[F : 3 * F].copy()
    bogus[F:] = -1
    assert jb.push(2, F, bogus)
    assert jb.stats.duplicates == 1
    assert jb.push(4, 3 * F, src[3 * F :])
    out = np.concatenate([jb.pop() for _ in range(5)])
    assert_plays(out, src, 1)


def test_single_and_burst_loss_are_silence_in_place() -> None:
    jb = JitterBuffer(target_frames=1)
    src, packets = stream(2.0)
    lost = {10, 40, 41, 42, 43, 44, 99}
    kept = [p for i, p in enumerate(packets) if i not in lost]
    out, flags, _ = run(jb, kept, 101)
    expected = src.copy()
    for i in lost:
        expected[i * F : (i + 1) * F] = 0
    assert_plays(out, expected, 1)
    assert [k - 1 for k, f in enumerate(flags) if not f][1:] == sorted(lost)
    assert jb.stats.concealed == len(lost)
    assert jb.stats.played == 100 - len(lost)


def test_timestamp_and_sequence_wraparound() -> None:
    jb = JitterBuffer(target_frames=2)
    src, packets = stream(2.0, seq0=SEQ_MOD - 30, ts0=TS_MOD - 37 * F - 13)
    packets[35].arrival_ms, packets[36].arrival_ms = packets[36].arrival_ms, packets[35].arrival_ms
    out, _, _ = run(jb, packets, 103)
    assert_plays(out, src, 2)
    assert jb.stats.resyncs == jb.stats.late == 0
    assert jb.playout_timestamp == (TS_MOD - 37 * F - 13 + (103 - 2) * F) % TS_MOD


# -- late packets ---------------------------------------------------------------------------------


def test_wholly_late_packet_with_audio_buffered_is_dropped_and_the_delay_grows() -> None:
    jb = JitterBuffer(target_frames=1)
    src, packets = stream(1.0)
    packets[5].arrival_ms = 5 * 20 + 35  # after the pop at 130 that needed it; 6 is buffered
    out, _, delays = run(jb, packets, 53)
    # Frame 5 is lost; then one held (silent) frame, and the rest one frame later.
    expected = np.concatenate([src[: 5 * F], np.zeros(2 * F, np.int16), src[6 * F :]])
    assert_plays(out, expected, 1)
    assert jb.stats.late == 1 and jb.stats.held == 1 and jb.stats.adapted == 0
    assert delays[20] == 40


def test_partly_late_packet_keeps_the_part_not_yet_played() -> None:
    jb = JitterBuffer(target_frames=1)
    src, packets = stream(1.2, 40)
    packets[3].arrival_ms += 30  # after its first frame's pop (150), and after packet 4
    packets[4].arrival_ms = 149.5
    out, _, _ = run(jb, packets, 65)
    expected = np.concatenate([src[: 6 * F], np.zeros(2 * F, np.int16), src[7 * F :]])
    assert_plays(out, expected, 1)
    assert jb.stats.late_trimmed == 1 and jb.stats.late == 0 and jb.stats.held == 1


def test_partly_late_packet_in_underrun_reanchors_and_plays_whole() -> None:
    jb = JitterBuffer(target_frames=1)
    src, packets = stream(1.2, 40)
    for p in packets[3:]:
        p.arrival_ms += 30  # the path got 30 ms slower: packet 3's first frame is due first
    out, _, _ = run(jb, packets, 65)
    expected = np.concatenate([src[: 6 * F], np.zeros(F, np.int16), src[6 * F :]])
    assert_plays(out, expected, 1)
    assert jb.stats.adapted == 1 and jb.stats.late_trimmed == jb.stats.late == 0


def test_late_stream_in_underrun_reanchors_and_delay_grows() -> None:
    """The network delay grows by 50 ms at packet 20: a short gap, then nothing else is lost."""
    jb = JitterBuffer(target_frames=1)
    src, packets = stream(2.0)
    for p in packets[20:]:
        p.arrival_ms += 50
    out, _, delays = run(jb, packets, 110)
    assert jb.stats.adapted == 1 and jb.stats.late == 0
    # Frames 0..19 play on time, then the gap, then 20.. contiguous.
    np.testing.assert_array_equal(out[F : 21 * F], src[: 20 * F])
    gap = out[21 * F :]
    first = int(np.flatnonzero(gap)[0])
    assert first % F == 0 and 0 < first // F <= 3
    np.testing.assert_array_equal(gap[first : first + 80 * F], src[20 * F :])
    assert jb.stats.concealed == 110 - 1 - 100  # the gap and the pops after the end: no audio lost
    assert max(delays[30:]) <= 40


def test_old_packet_in_underrun_is_not_replayed() -> None:
    jb = JitterBuffer(target_frames=0)
    src = ramp(3 * F)
    for i in range(3):
        jb.push(i, i * F, src[i * F : (i + 1) * F])
    out = np.concatenate([jb.pop() for _ in range(4)])
    assert_plays(out, src, 0)
    assert jb.push(1, F, src[F : 2 * F]) is False  # a late copy while nothing is buffered
    assert jb.stats.late == 1 and jb.stats.adapted == 0
    assert not jb.pop().any()


# -- bounds and jumps ---------------------------------------------------------------------------


def test_burst_after_a_stall_is_bounded_then_shrinks_back() -> None:
    jb = JitterBuffer(target_frames=1, max_frames=10)
    _src, packets = stream(20.0)
    for p in packets[50:80]:
        p.arrival_ms = 80 * 20 + 1.0  # 600 ms stall, then everything at once
    out, _, delays = run(jb, packets, 1003)
    assert max(delays) <= 200
    assert jb.stats.overflow_dropped > 0
    assert jb.stats.shrunk >= 7  # back to the target from the full 10 frames
    assert max(delays[-200:-3]) == 20
    assert_in_order(out)
    # The last 150 frames play unbroken.
    assert_contiguous(out[-153 * F : -3 * F])


def test_a_packet_larger_than_the_buffer_keeps_its_tail() -> None:
    jb = JitterBuffer(target_frames=1, max_frames=3)
    src = ramp(5 * F)
    assert jb.push(7, 0, src)
    assert jb.delay_ms == 60
    assert jb.stats.overflow_dropped == 2 * F
    out = np.concatenate([jb.pop() for _ in range(4)])
    assert_plays(out, src[2 * F :], 0)


def test_a_burst_beyond_max_frames_drops_the_oldest_audio() -> None:
    jb = JitterBuffer(target_frames=1, max_frames=3)
    src = ramp(6 * F)
    results = [jb.push(i, i * F, src[i * F : (i + 1) * F]) for i in range(6)]
    assert results == [True] * 6
    assert jb.delay_ms == 60
    # Frames 0..2 made room for 3..5 (the slot before frame 0, the target delay, held nothing).
    assert jb.stats.overflow_dropped == 3 * F
    out = np.concatenate([jb.pop() for _ in range(4)])
    assert_plays(out, src[3 * F :], 0)


def test_pop_into_allocates_nothing() -> None:
    jb = JitterBuffer(target_frames=1)
    _, packets = stream(4.0)
    out = np.empty(F, dtype=np.int16)
    for p in packets[:10]:
        jb.push(p.seq, p.ts, p.samples)
    jb.pop_into(out)
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        played = 0
        for _ in range(15):  # 9 frames with audio, then silent ones
            played += jb.pop_into(out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert played == 9
    # A 160-sample array alone is 320 bytes of data; a few counters' int/float objects are not.
    assert peak - base < 320


@pytest.mark.parametrize("jump", [8000 * 5, -8000 * 5, 2**31 - 1, -(2**31)])
def test_huge_timestamp_jump_resyncs(jump: int) -> None:
    jb = JitterBuffer(target_frames=2)
    src, packets = stream(1.0)
    src2, packets2 = stream(1.0, seq0=3, ts0=(50_000 + 50 * F + jump) % TS_MOD, offset=7777)
    for p in packets2:
        p.arrival_ms += 1000
    out, _, _ = run(jb, packets + packets2, 106)
    assert jb.stats.resyncs == 1
    # The new timeline starts right after what the old one had buffered: nothing cut, no gap.
    assert_plays(out[: 52 * F], src, 2)
    assert_plays(out[52 * F :], src2, 0)
    assert jb.stats.late == 0 and jb.stats.concealed == 106 - 2 - 100  # only after the end


def test_a_restart_plays_after_the_audio_already_buffered() -> None:
    jb = JitterBuffer(target_frames=1)
    a, b = ramp(4 * F), ramp(2 * F, 20_000)
    for i in range(4):  # a burst: four frames of the old stream waiting
        assert jb.push(100 + i, 5000 + i * F, a[i * F : (i + 1) * F])
    for i in range(2):  # the sender restarted: new sequence and timestamp bases
        assert jb.push(7 + i, 3_000_000_000 + i * F, b[i * F : (i + 1) * F])
    assert jb.stats.resyncs == 1
    out = np.concatenate([jb.pop() for _ in range(8)])
    assert_plays(out, np.concatenate([a, b]), 1)


def test_very_late_straggler_is_not_a_restart() -> None:
    jb = JitterBuffer(target_frames=1)
    _src, packets = stream(2.0)
    run(jb, packets[:60], 60)
    # packet 3 shows up 1.2 s late: old sequence number, timestamp far behind.
    p = packets[3]
    assert jb.push(p.seq, p.ts, p.samples) is False
    assert jb.stats.late == 1 and jb.stats.resyncs == 0


def test_reset_starts_a_new_stream() -> None:
    jb = JitterBuffer(target_frames=1)
    _src, packets = stream(0.4)
    run(jb, packets[:15], 10)  # 5 packets still buffered
    jb.reset()
    assert jb.delay_ms == 0
    out = np.full(F, 3, np.int16)
    assert jb.pop_into(out) is False and not out.any()
    src2, packets2 = stream(0.4, seq0=9, ts0=123, offset=999)
    out2, _, _ = run(jb, packets2, 22)
    assert_plays(out2, src2, 1)
    assert jb.stats.resyncs == 0


# -- network models -------------------------------------------------------------------------------


@pytest.mark.parametrize("ptime", [10, 20, 30, 60])
@pytest.mark.parametrize("target", [1, 2])
@pytest.mark.parametrize("seed", [1, 2])
def test_random_jitter_15ms_loses_nothing_after_adaptation(
    ptime: int, target: int, seed: int
) -> None:
    rng = random.Random(seed)
    src, packets = stream(60.0, ptime)
    for p in packets:
        p.arrival_ms += rng.uniform(-15, 15) + 15  # +15: nothing arrives before it is sent
    jb = JitterBuffer(target_frames=target)
    out, _, delays = run(jb, packets, src.size // F + 10)
    print(f"ptime {ptime} target {target} seed {seed}: max delay {max(delays)} ms, {jb.stats}")
    assert jb.stats.shrunk == jb.stats.overflow_dropped == 0
    # After the first two seconds (adaptation) not a sample is lost or repeated: the audio
    # played is the rest of the source, in order...
    last = int(np.flatnonzero(out)[-1])
    tail = out[100 * F : (last // F + 1) * F]
    assert_contiguous(tail[tail != 0])
    assert out[last] == src[-1]
    # ...with at most one silent frame: a rare late re-anchor inserts it, losing nothing.
    assert (~tail.reshape(-1, F).any(axis=1)).sum() <= 1
    assert max(delays[100:]) <= 100


@pytest.mark.parametrize("clock", [1.005, 0.995])
def test_sender_clock_drift_keeps_the_delay_bounded(clock: float) -> None:
    jb = JitterBuffer(target_frames=1)
    _src, packets = stream(60.0, clock=clock)
    ticks = int(3000 / clock) + 10
    out, _, delays = run(jb, packets, ticks)
    print(f"clock {clock}: max delay {max(delays)} ms, {jb.stats}")
    assert max(delays[100:]) <= 60
    assert jb.stats.max_delay_ms <= 60
    if clock > 1:
        assert jb.stats.shrunk >= 10  # ~15 extra frames arrive in 60 s
        assert jb.stats.concealed <= 10
    else:
        assert jb.stats.shrunk == 0
        assert 5 <= jb.stats.concealed <= 40  # ~15 missing frames, plus the 10 after the end
    assert_in_order(out)


# -- property -------------------------------------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("push"),
            st.sampled_from([1, 1, 1, 2, 0, -1]) | st.integers(-5, 70000),  # seq step
            # ts step: mostly a packet or two, sometimes anything (jumps, wraparound)
            st.one_of(
                *[st.sampled_from([0, 80, 160, 160, 160, 240, 480, -80, -160, 320])] * 6,
                st.integers(-20000, 20000),
                st.integers(0, TS_MOD - 1),
            ),
            st.sampled_from([80, 160, 160, 240, 480]) | st.integers(0, 700),  # samples
        ),
        *[st.tuples(st.just("pop"), st.just(0), st.just(0), st.just(0))] * 2,
        st.tuples(st.just("reset"), st.just(0), st.just(0), st.just(0)),
    ),
    min_size=5,
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(
    ops=ops,
    target=st.integers(0, 4),
    extra=st.integers(1, 8),
)
def test_any_sequence_of_operations_is_safe(
    ops: Sequence[tuple[str, int, int, int]], target: int, extra: int
) -> None:
    jb = JitterBuffer(target_frames=target, max_frames=target + extra)
    seq = ts = 0
    out = np.empty(F, dtype=np.int16)
    pops = 0
    resyncs = 0
    resync_pop = -1000
    for op, a, b, n in ops:
        if op == "push":
            seq = (seq + a) % SEQ_MOD
            ts = (ts + b) % TS_MOD
            jb.push(seq, ts, ((ts + np.arange(n)) % TS_MOD % 32000 + 1).astype(np.int16))
        elif op == "pop":
            at = jb.playout_timestamp
            shrunk = jb.stats.shrunk
            had = jb.pop_into(out)
            pops += 1
            if at is not None:
                at += (
                    jb.stats.shrunk - shrunk
                ) * F  # a shrink skips the frame at the playout point
            assert had == bool(out.any())
            if at is None:
                assert not had
            elif pops - resync_pop > jb.max_frames:
                # Every sample played sits at its own timestamp (pushed content is a function
                # of the timestamp): nothing is shifted, reordered or mixed up. Only audio
                # buffered across a resync moves, to where the new timeline begins.
                want = ((at + np.arange(F)) % TS_MOD % 32000 + 1).astype(np.int16)
                audio = out != 0
                np.testing.assert_array_equal(out[audio], want[audio])
        else:
            jb.reset()
        if jb.stats.resyncs != resyncs:
            resyncs = jb.stats.resyncs
            resync_pop = pops
        assert 0 <= jb.delay_ms <= jb.max_frames * 20
    s = jb.stats
    assert s.played + s.concealed <= pops
    assert s.max_delay_ms <= jb.max_frames * 20


def ts_content(ts: int, n: int) -> Frame:
    """Samples whose values are a function of their own RTP timestamp."""
    return ((ts + np.arange(n)) % TS_MOD % 32000 + 1).astype(np.int16)


@pytest.mark.parametrize("seed", range(12))
def test_random_network_every_played_sample_is_at_its_timestamp(seed: int) -> None:
    """A long random walk through a hostile network (mixed ptimes, loss, duplicates, reordering,
    delay steps, stalls, bursts, jumps): the depth stays bounded and every sample played is the
    one sent for that timestamp, except for audio carried across a resync."""
    rng = random.Random(seed)
    target = rng.randint(0, 3)
    jb = JitterBuffer(target_frames=target, max_frames=target + rng.randint(1, 8))
    out = np.empty(F, dtype=np.int16)
    seq, ts, sent_ms, extra_ms = rng.randrange(SEQ_MOD), rng.randrange(TS_MOD), 0.0, 0.0
    arrivals: list[tuple[float, int, int, Frame]] = []
    for _ in range(3000):
        n = rng.choice([80, 160, 160, 160, 240, 320, 480])
        r = rng.random()
        if r < 0.003:
            ts = rng.randrange(TS_MOD)  # a jump / restart
        elif r < 0.006:
            extra_ms += rng.uniform(-40, 80)  # the path's delay changes
            extra_ms = max(0.0, extra_ms)
        elif r < 0.008:
            sent_ms += rng.uniform(100, 600)  # sender paused, timestamps did not
        arrival = sent_ms + extra_ms + rng.uniform(0, 30)
        if rng.random() > 0.03:  # 3 % loss
            arrivals.append((arrival, seq, ts, ts_content(ts, n)))
        if rng.random() < 0.02:  # duplicates
            arrivals.append((arrival + rng.uniform(0, 50), seq, ts, ts_content(ts, n)))
        seq = (seq + 1) % SEQ_MOD
        ts = (ts + n) % TS_MOD
        sent_ms += n / 8
    arrivals.sort(key=lambda a: a[0])
    resyncs, resync_pop, played = 0, -1000, 0
    j = 0
    for k in range(int(arrivals[-1][0] / 20) + 20):
        while j < len(arrivals) and arrivals[j][0] < k * 20 + 10:
            _, pseq, pts, samples = arrivals[j]
            jb.push(pseq, pts, samples)
            j += 1
        if jb.stats.resyncs != resyncs:
            resyncs, resync_pop = jb.stats.resyncs, k
        at = jb.playout_timestamp
        shrunk = jb.stats.shrunk
        had = jb.pop_into(out)
        assert jb.delay_ms <= jb.max_frames * 20
        assert had == bool(out.any())
        if at is not None and k - resync_pop > jb.max_frames:
            at += (jb.stats.shrunk - shrunk) * F  # a shrink skips the frame at the playout point
            want = ts_content(at, F)
            audio = out != 0
            np.testing.assert_array_equal(out[audio], want[audio])
            played += had
    assert played > 1000
    print(f"seed {seed} target {target}: {jb.stats}")


# -- fixed delay (fax mode) ----------------------------------------------------------------------


def test_fixed_mode_keeps_the_delay_through_a_burst() -> None:
    """Adaptive mode would skip frames to shrink back after a burst; fixed mode loses nothing."""
    jb = JitterBuffer(target_frames=0)
    jb.set_fixed(3)
    src, packets = stream(6.0)
    for p in packets[50:52]:
        p.arrival_ms = 52 * 20 + 1.0  # 40 ms stall, then all at once: within the fixed delay
    out, _, _ = run(jb, packets, 320)
    assert jb.stats.shrunk == 0 and jb.stats.overflow_dropped == 0 and jb.stats.late == 0
    assert_plays(out, src, 3)


def test_fixed_mode_loses_a_straggler_without_moving_the_timeline() -> None:
    jb = JitterBuffer(target_frames=1)
    jb.set_fixed(1)
    src, packets = stream(1.0)
    packets[5].arrival_ms = 5 * 20 + 35  # too late for its pop; frame 6 is buffered
    out, _, _ = run(jb, packets, 53)
    # Adaptive mode holds one frame after the loss; fixed mode plays frame 6 on its time.
    expected = src.copy()
    expected[5 * F : 6 * F] = 0
    assert_plays(out, expected, 1)
    assert jb.stats.late == 1 and jb.stats.held == 0


def test_fixed_mode_reanchors_an_underrun_at_the_fixed_delay() -> None:
    jb = JitterBuffer(target_frames=0)
    jb.set_fixed(2)
    src, packets = stream(2.0)
    for p in packets[20:]:
        p.arrival_ms += 50  # the path got 50 ms slower
    out, _, delays = run(jb, packets, 110)
    assert jb.stats.adapted == 1 and jb.stats.shrunk == 0
    np.testing.assert_array_equal(out[2 * F : 22 * F], src[: 20 * F])
    assert_in_order(out)
    # After the gap the stream plays unbroken, still 2 frames behind its arrival.
    tail = out[22 * F :]
    first = int(np.flatnonzero(tail)[0])
    np.testing.assert_array_equal(tail[first : first + 80 * F], src[20 * F :])
    assert max(delays[40:100]) <= 40


def test_switching_to_fixed_mode_grows_the_delay_once_and_back() -> None:
    jb = JitterBuffer(target_frames=0)
    _src, packets = stream(2.0)
    out = np.empty(0, np.int16)
    pending = iter(packets)
    frames = []
    for k in range(100):
        if k == 30:
            jb.set_fixed(2)
            assert jb.fixed
        if k == 70:
            jb.set_fixed(None)
            assert not jb.fixed
        jb.push(*(lambda p: (p.seq, p.ts, p.samples))(next(pending)))
        frames.append(jb.pop())
    out = np.concatenate(frames)
    # Two silent frames where the delay grew, everything else in order and nothing lost.
    assert int((~out.reshape(-1, F).any(axis=1)).sum()) == 2
    assert_in_order(out)
    with pytest.raises(ValueError):
        jb.set_fixed(jb.max_frames)
