"""RFC 4733 telephone-event payloads, sender plan and receiver."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callplane.media.dtmf import (
    DtmfError,
    DtmfPacket,
    DtmfReceiver,
    TelephoneEvent,
    digit_packets,
    parse_event,
    plan_digits,
)


def test_payload_layout() -> None:
    ev = TelephoneEvent(event=11, end=True, volume=10, duration=800)
    assert ev.build() == bytes([11, 0x80 | 10, 0x03, 0x20])
    assert parse_event(ev.build()) == ev
    assert ev.digit == "#"


@given(st.integers(0, 255), st.booleans(), st.integers(0, 63), st.integers(0, 65535))
def test_payload_round_trip(event: int, end: bool, volume: int, duration: int) -> None:
    ev = TelephoneEvent(event, end, volume, duration)
    assert parse_event(ev.build()) == ev


def test_payload_errors() -> None:
    with pytest.raises(DtmfError):
        parse_event(b"\x01\x02")
    with pytest.raises(DtmfError):
        TelephoneEvent(1, False, 64, 0).build()


def test_digit_packets_sequence() -> None:
    pkts = digit_packets("5", duration_ms=100)
    assert len(pkts) == 5 + 3
    events = [parse_event(p.payload) for p in pkts]
    assert [p.start for p in pkts] == [True] + [False] * 7
    assert [e.duration for e in events[:5]] == [160, 320, 480, 640, 800]
    assert all(e.end and e.duration == 800 for e in events[5:])
    assert not any(e.end for e in events[:5])
    assert {e.event for e in events} == {5}


def test_plan_includes_gaps_and_pauses() -> None:
    plan = plan_digits("1w2W3,", duration_ms=100, gap_ms=100)
    kinds = "".join("p" if isinstance(a, DtmfPacket) else "-" for a in plan)
    digit = "p" * 8 + "-" * 5
    assert kinds == digit + "-" * 25 + digit + "-" * 50 + digit + "-" * 50


def test_plan_rejects_invalid_characters_before_sending_anything() -> None:
    with pytest.raises(DtmfError, match="invalid character 'x'"):
        plan_digits("12x")


def _feed_all(rx: DtmfReceiver, digit: str, ts: int) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for p in digit_packets(digit):
        out += rx.feed(p.payload, ts)
    return out


def test_receiver_reports_each_digit_once_despite_three_end_packets() -> None:
    rx = DtmfReceiver()
    assert _feed_all(rx, "7", 1000) == [("7", 100)]
    assert _feed_all(rx, "#", 5000) == [("#", 100)]
    # A late retransmission of an old end packet is ignored.
    assert rx.feed(digit_packets("7")[-1].payload, 1000) == []


def test_receiver_same_digit_twice_is_two_events() -> None:
    rx = DtmfReceiver()
    assert _feed_all(rx, "1", 0) + _feed_all(rx, "1", 1600) == [("1", 100), ("1", 100)]


def test_receiver_recovers_digit_whose_end_packets_were_lost() -> None:
    rx = DtmfReceiver(timeout=0.3)
    pkts = digit_packets("4")
    for i, p in enumerate(pkts[:5]):
        assert rx.feed(p.payload, 800, now=i * 0.02) == []
    assert rx.pending
    # Next event arrives: the lost one is reported first.
    assert rx.feed(digit_packets("5")[0].payload, 4000, now=0.5) == [("4", 100)]
    # And one that just goes quiet is reported by poll().
    assert rx.poll(0.6) == []
    assert rx.poll(0.9) == [("5", 20)]
    assert not rx.pending
