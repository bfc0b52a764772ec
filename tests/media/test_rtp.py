"""RTP/RTCP packet format (RFC 3550), bookkeeping and fuzzing."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callplane.media.rtp import (
    OtherRtcp,
    ReceiverReport,
    ReceiveStats,
    ReportBlock,
    RtpError,
    RtpExtension,
    RtpPacket,
    SenderReport,
    SendState,
    build_rr,
    build_sr,
    is_rtcp,
    ntp_from_unix,
    parse_rtcp,
    parse_rtp,
    seq_delta,
    ts_delta,
)


def test_minimal_packet_layout() -> None:
    data = RtpPacket(0, 0x1234, 0xDEADBEEF, 0xCAFEBABE, b"\xff" * 160, marker=True).build()
    assert len(data) == 172
    assert data[0] == 0x80 and data[1] == 0x80
    assert struct.unpack("!HII", data[2:12]) == (0x1234, 0xDEADBEEF, 0xCAFEBABE)
    pkt = parse_rtp(data)
    assert (pkt.payload_type, pkt.sequence, pkt.timestamp, pkt.ssrc) == (
        0,
        0x1234,
        0xDEADBEEF,
        0xCAFEBABE,
    )
    assert pkt.marker and pkt.payload == b"\xff" * 160


def test_csrc_extension_padding_round_trip() -> None:
    pkt = RtpPacket(
        101,
        65535,
        2**32 - 1,
        7,
        b"abc",
        csrcs=(1, 2, 3),
        extension=RtpExtension(0xBEDE, b"\x10\x20\x30\x40"),
        padding=5,
    )
    data = pkt.build()
    assert data[0] & 0x20 and data[0] & 0x10 and data[0] & 0x0F == 3
    assert data[-1] == 5
    assert parse_rtp(data) == pkt


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x00", "shorter than the 12-byte header"),
        (b"\x40" + bytes(11), "version 1"),
        (b"\x82" + bytes(11) + bytes(4), "too short for 2 CSRCs"),
        (b"\x90" + bytes(11) + b"\x00\x00", "extension"),
        (b"\x90" + bytes(11) + b"\x00\x00\x00\x05", "runs past"),
        (b"\xa0" + bytes(11) + b"\x00", "padding count is 0"),
        (b"\xa0" + bytes(11) + b"\x20", "runs into the header"),
    ],
)
def test_malformed_packets_raise_clear_errors(data: bytes, message: str) -> None:
    with pytest.raises(RtpError, match=message):
        parse_rtp(data)


def test_build_rejects_out_of_range_fields() -> None:
    for bad in (
        RtpPacket(128, 0, 0, 0),
        RtpPacket(0, 65536, 0, 0),
        RtpPacket(0, 0, 2**32, 0),
        RtpPacket(0, 0, 0, 0, csrcs=tuple(range(16))),
        RtpPacket(0, 0, 0, 0, extension=RtpExtension(1, b"abc")),
    ):
        with pytest.raises(RtpError):
            bad.build()


packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 65535),
    timestamp=st.integers(0, 2**32 - 1),
    ssrc=st.integers(0, 2**32 - 1),
    payload=st.binary(max_size=300),
    marker=st.booleans(),
    csrcs=st.lists(st.integers(0, 2**32 - 1), max_size=15).map(tuple),
    extension=st.none()
    | st.builds(
        RtpExtension,
        st.integers(0, 65535),
        st.integers(0, 10).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n)),
    ),
    padding=st.integers(0, 255),
)


@given(packets)
def test_build_parse_round_trip(pkt: RtpPacket) -> None:
    assert parse_rtp(pkt.build()) == pkt


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_parse_random_bytes_only_raises_rtp_error(data: bytes) -> None:
    try:
        pkt = parse_rtp(data)
    except RtpError:
        return
    assert 0 <= pkt.payload_type <= 127
    assert len(pkt.payload) <= len(data) - 12


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_parse_rtcp_random_bytes_only_raises_rtp_error(data: bytes) -> None:
    with contextlib.suppress(RtpError):
        parse_rtcp(data)


def test_seq_and_timestamp_wraparound() -> None:
    state = SendState(ssrc=1, sequence=65534, timestamp=2**32 - 160)
    assert state.advance(160, 160) == (65534, 2**32 - 160)
    assert state.advance(160, 160) == (65535, 0)
    assert state.advance(160, 160) == (0, 160)
    assert state.packets == 3 and state.octets == 480
    assert seq_delta(2, 65534) == 4
    assert seq_delta(65534, 2) == -4
    assert ts_delta(100, 2**32 - 60) == 160


def test_receive_stats_counts_wraps_duplicates_and_loss() -> None:
    rx = ReceiveStats()
    seqs = [65533, 65534, 65535, 0, 1, 1, 3, 2, 5]
    results = [rx.update(s, s * 160 % 2**32, i * 0.02) for i, s in enumerate(seqs)]
    assert results == [True, True, True, True, True, False, True, True, True]
    assert rx.cycles == 65536
    assert rx.extended_max == 65536 + 5
    assert rx.received == 8 and rx.duplicates == 1
    assert rx.expected == 9 and rx.lost == 1  # seq 4 never came
    block = rx.report_block(ssrc=42)
    assert block.cumulative_lost == 1 and block.highest_seq == 65536 + 5
    assert block.fraction_lost == (1 << 8) // 9


def test_receive_stats_jitter_zero_for_perfect_stream() -> None:
    rx = ReceiveStats()
    for i in range(100):
        rx.update(i, i * 160, i * 0.02)
    assert rx.jitter < 1.0


def test_sender_and_receiver_reports_round_trip() -> None:
    block = ReportBlock(0x1111, 12, -3, 70000, 33, 0xAABBCCDD, 655)
    sr = SenderReport(0x2222, ntp_from_unix(1_700_000_000.5), 123456, 500, 80000, (block,))
    rr = ReceiverReport(0x3333, (block, block))
    compound = build_sr(sr) + build_rr(rr) + bytes([0x81, 202, 0, 1]) + b"\x00\x00\x00\x01"
    assert is_rtcp(compound)
    parsed = parse_rtcp(compound)
    assert parsed[0] == sr and parsed[1] == rr
    assert isinstance(parsed[2], OtherRtcp) and parsed[2].packet_type == 202
    assert len(build_sr(sr)) == 28 + 24
    assert (sr.ntp_timestamp >> 32) == 1_700_000_000 + 2_208_988_800
    assert (sr.ntp_timestamp & 0xFFFFFFFF) == 1 << 31


def test_rtcp_errors() -> None:
    with pytest.raises(RtpError):
        parse_rtcp(b"\x80\xc8")
    with pytest.raises(RtpError, match="runs past"):
        parse_rtcp(bytes([0x80, 200, 0, 20]) + bytes(8))
    with pytest.raises(RtpError, match="too short"):
        parse_rtcp(bytes([0x81, 201, 0, 1]) + bytes(4))


def test_is_rtcp_demux() -> None:
    assert not is_rtcp(RtpPacket(0, 1, 2, 3).build())
    assert not is_rtcp(RtpPacket(8, 1, 2, 3, marker=True).build())
    assert is_rtcp(build_rr(ReceiverReport(1)))
