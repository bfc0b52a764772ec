"""Sans-IO RTP and RTCP (RFC 3550): packet build/parse and sequence/timestamp bookkeeping.

Nothing here touches sockets or clocks: callers feed bytes and times in and get bytes and values
out, so every rule is unit-testable and fuzzable.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

RTP_VERSION = 2
HEADER = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence, timestamp, SSRC
HEADER_SIZE = HEADER.size

SEQ_MOD = 1 << 16
TS_MOD = 1 << 32

# RTCP packet types (RFC 3550 §12.1).
RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_APP = 204

# Seconds between the NTP epoch (1900) and the Unix epoch (1970), for SR timestamps.
NTP_UNIX_OFFSET = 2_208_988_800


class RtpError(ValueError):
    """Malformed RTP or RTCP input; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class RtpExtension:
    """The RFC 3550 §5.3.1 header extension: a 16-bit profile id and 32-bit-word aligned data."""

    profile: int
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    padding: int = 0  # number of padding bytes including the final count byte (0 = none)

    def build(self) -> bytes:
        """Serialise; raises RtpError when a field is out of range."""
        if not 0 <= self.payload_type <= 127:
            raise RtpError(f"payload type {self.payload_type} outside 0..127")
        if not 0 <= self.sequence < SEQ_MOD:
            raise RtpError(f"sequence {self.sequence} outside 0..65535")
        if not 0 <= self.timestamp < TS_MOD:
            raise RtpError(f"timestamp {self.timestamp} outside 32 bits")
        if not 0 <= self.ssrc < TS_MOD:
            raise RtpError(f"SSRC {self.ssrc} outside 32 bits")
        if len(self.csrcs) > 15:
            raise RtpError(f"{len(self.csrcs)} CSRCs, at most 15 fit the CC field")
        if not 0 <= self.padding <= 255:
            raise RtpError(f"padding {self.padding} outside 0..255")
        first = (
            (RTP_VERSION << 6)
            | (0x20 if self.padding else 0)
            | (0x10 if self.extension is not None else 0)
            | len(self.csrcs)
        )
        second = (0x80 if self.marker else 0) | self.payload_type
        parts = [HEADER.pack(first, second, self.sequence, self.timestamp, self.ssrc)]
        for csrc in self.csrcs:
            if not 0 <= csrc < TS_MOD:
                raise RtpError(f"CSRC {csrc} outside 32 bits")
            parts.append(struct.pack("!I", csrc))
        if self.extension is not None:
            ext = self.extension
            if not 0 <= ext.profile < SEQ_MOD:
                raise RtpError(f"extension profile {ext.profile} outside 16 bits")
            if len(ext.data) % 4:
                raise RtpError("extension data must be a whole number of 32-bit words")
            parts.append(struct.pack("!HH", ext.profile, len(ext.data) // 4))
            parts.append(ext.data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


def parse_rtp(data: bytes | bytearray | memoryview) -> RtpPacket:
    """Parse one RTP packet; raises RtpError on anything malformed."""
    buf = bytes(data)
    n = len(buf)
    if n < HEADER_SIZE:
        raise RtpError(f"RTP packet of {n} bytes is shorter than the 12-byte header")
    first, second, seq, ts, ssrc = HEADER.unpack_from(buf)
    version = first >> 6
    if version != RTP_VERSION:
        raise RtpError(f"RTP version {version}, expected 2")
    cc = first & 0x0F
    offset = HEADER_SIZE + 4 * cc
    if n < offset:
        raise RtpError(f"packet of {n} bytes too short for {cc} CSRCs")
    csrcs = struct.unpack_from(f"!{cc}I", buf, HEADER_SIZE) if cc else ()
    extension = None
    if first & 0x10:
        if n < offset + 4:
            raise RtpError("packet too short for the header extension")
        profile, words = struct.unpack_from("!HH", buf, offset)
        offset += 4
        if n < offset + 4 * words:
            raise RtpError(f"header extension of {words} words runs past the packet end")
        extension = RtpExtension(profile, buf[offset : offset + 4 * words])
        offset += 4 * words
    end = n
    padding = 0
    if first & 0x20:
        padding = buf[-1]
        if padding == 0:
            raise RtpError("padding bit set but the padding count is 0")
        if offset + padding > n:
            raise RtpError(f"padding count {padding} runs into the header")
        end = n - padding
    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=seq,
        timestamp=ts,
        ssrc=ssrc,
        payload=buf[offset:end],
        marker=bool(second & 0x80),
        csrcs=tuple(csrcs),
        extension=extension,
        padding=padding,
    )


def is_rtcp(data: bytes | bytearray | memoryview) -> bool:
    """RFC 5761 §4 demultiplexing: RTCP when the second byte is a packet type 192..223."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def seq_delta(newer: int, older: int) -> int:
    """Signed distance between two 16-bit sequence numbers, in -32768..32767 (wraparound-aware)."""
    return ((newer - older + 0x8000) % SEQ_MOD) - 0x8000


def ts_delta(newer: int, older: int) -> int:
    """Signed distance between two 32-bit RTP timestamps (wraparound-aware)."""
    return ((newer - older + 0x8000_0000) % TS_MOD) - 0x8000_0000


@dataclass
class SendState:
    """Outgoing sequence number and timestamp with wraparound (RFC 3550 §5.1: random starts)."""

    ssrc: int
    sequence: int
    timestamp: int
    packets: int = 0
    octets: int = 0

    def advance(self, samples: int, payload_octets: int) -> tuple[int, int]:
        """Return the (sequence, timestamp) for the packet being sent, then step both."""
        seq, ts = self.sequence, self.timestamp
        self.sequence = (seq + 1) % SEQ_MOD
        self.timestamp = (ts + samples) % TS_MOD
        self.packets += 1
        self.octets += payload_octets
        return seq, ts


@dataclass
class ReceiveStats:
    """RFC 3550 Appendix A.1/A.3/A.8 receiver bookkeeping for one source.

    ``update`` classifies each packet: True when it is new and in order enough to use; False for a
    duplicate or a packet too old to matter (the caller drops those).
    """

    clock_rate: int = 8000
    max_dropout: int = 3000
    max_misorder: int = 100
    base_seq: int = -1
    max_seq: int = 0
    cycles: int = 0
    received: int = 0
    duplicates: int = 0
    jitter: float = 0.0  # in timestamp units
    _expected_prior: int = 0
    _received_prior: int = 0
    _transit: int | None = None
    _seen: set[int] = field(default_factory=set)

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        return 0 if self.base_seq < 0 else self.extended_max - self.base_seq + 1

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)

    def update(self, seq: int, timestamp: int, arrival: float) -> bool:
        """Account for a packet with ``seq``/``timestamp`` arriving at ``arrival`` (seconds)."""
        max_seq = self.max_seq
        if seq == (max_seq + 1) & 0xFFFF and self.base_seq >= 0:
            # Fast path, the next packet in order (nearly every packet): it cannot be a
            # duplicate, since everything in _seen is at most extended_max.
            if seq == 0:
                self.cycles += SEQ_MOD
            self.max_seq = seq
            seen = self._seen
            seen.add(self.cycles + seq)
            if len(seen) > 512:
                floor = self.cycles + seq - 256
                self._seen = {s for s in seen if s >= floor}
            self.received += 1
            transit = int(arrival * self.clock_rate) - timestamp
            previous = self._transit
            if previous is not None:
                d = transit - previous if transit >= previous else previous - transit
                if d < TS_MOD // 2:
                    self.jitter += (d - self.jitter) / 16.0
            self._transit = transit
            return True
        if self.base_seq < 0:
            self.base_seq = self.max_seq = seq
            self._seen = {seq}
            self.received = 1
            self._update_jitter(timestamp, arrival)
            return True
        delta = seq_delta(seq, self.max_seq)
        ext = self.extended_max + delta
        if ext in self._seen:
            self.duplicates += 1
            return False
        if delta > 0:
            if delta > self.max_dropout:
                # A big jump: the source restarted; resynchronise rather than count a huge loss.
                self.base_seq = seq
                self.cycles = 0
                self.max_seq = seq
                self._seen = {seq}
                self.received += 1
                self._transit = None
                self._update_jitter(timestamp, arrival)
                return True
            if seq < self.max_seq:
                self.cycles += SEQ_MOD
            self.max_seq = seq
        elif -delta > self.max_misorder:
            return False
        self._seen.add(ext)
        if len(self._seen) > 512:
            floor = self.extended_max - 256
            self._seen = {s for s in self._seen if s >= floor}
        self.received += 1
        self._update_jitter(timestamp, arrival)
        return True

    def _update_jitter(self, timestamp: int, arrival: float) -> None:
        transit = int(arrival * self.clock_rate) - timestamp
        if self._transit is not None:
            d = abs(transit - self._transit)
            if d < TS_MOD // 2:
                self.jitter += (d - self.jitter) / 16.0
        self._transit = transit

    def report_block(self, ssrc: int, lsr: int = 0, dlsr: int = 0) -> ReportBlock:
        """Build the RR/SR report block for this source and reset the interval counters."""
        expected = self.expected
        interval_expected = expected - self._expected_prior
        interval_received = self.received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self.received
        interval_lost = interval_expected - interval_received
        fraction = 0
        if interval_expected > 0 and interval_lost > 0:
            fraction = min(255, (interval_lost << 8) // interval_expected)
        return ReportBlock(
            ssrc=ssrc,
            fraction_lost=fraction,
            cumulative_lost=min(self.lost, 0x7FFFFF),
            highest_seq=self.extended_max % TS_MOD,
            jitter=int(self.jitter),
            lsr=lsr,
            dlsr=dlsr,
        )


# ---------------------------------------------------------------------------------------------
# RTCP


@dataclass(frozen=True, slots=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int
    cumulative_lost: int  # 24-bit signed on the wire
    highest_seq: int
    jitter: int
    lsr: int = 0
    dlsr: int = 0


@dataclass(frozen=True, slots=True)
class SenderReport:
    ssrc: int
    ntp_timestamp: int  # 64-bit NTP format
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class OtherRtcp:
    """An RTCP packet this module does not interpret (SDES, BYE, APP, feedback...)."""

    packet_type: int
    count: int
    body: bytes


RtcpPacket = SenderReport | ReceiverReport | OtherRtcp

_BLOCK = struct.Struct("!IB3sIIII")


def ntp_from_unix(unix_seconds: float) -> int:
    """64-bit NTP timestamp (RFC 3550 §4) for a Unix time."""
    secs = int(unix_seconds)
    frac = int((unix_seconds - secs) * (1 << 32)) & 0xFFFF_FFFF
    return ((secs + NTP_UNIX_OFFSET) & 0xFFFF_FFFF) << 32 | frac


def _pack_blocks(blocks: tuple[ReportBlock, ...]) -> bytes:
    out = []
    for b in blocks:
        lost = b.cumulative_lost & 0xFFFFFF  # two's complement in 24 bits
        out.append(
            _BLOCK.pack(
                b.ssrc,
                b.fraction_lost,
                lost.to_bytes(3, "big"),
                b.highest_seq,
                b.jitter,
                b.lsr,
                b.dlsr,
            )
        )
    return b"".join(out)


def _rtcp_header(packet_type: int, count: int, body_len: int) -> bytes:
    if count > 31:
        raise RtpError("at most 31 report blocks fit one RTCP packet")
    # Length is in 32-bit words minus one, header included.
    return struct.pack("!BBH", 0x80 | count, packet_type, (body_len + 4) // 4 - 1)


def build_sr(sr: SenderReport) -> bytes:
    body = struct.pack(
        "!IQIII",
        sr.ssrc,
        sr.ntp_timestamp,
        sr.rtp_timestamp % TS_MOD,
        sr.packet_count % TS_MOD,
        sr.octet_count % TS_MOD,
    ) + _pack_blocks(sr.reports)
    return _rtcp_header(RTCP_SR, len(sr.reports), len(body)) + body


def build_rr(rr: ReceiverReport) -> bytes:
    body = struct.pack("!I", rr.ssrc) + _pack_blocks(rr.reports)
    return _rtcp_header(RTCP_RR, len(rr.reports), len(body)) + body


def _parse_blocks(buf: bytes, offset: int, count: int) -> tuple[ReportBlock, ...]:
    blocks = []
    for i in range(count):
        ssrc, frac, lost3, hi, jit, lsr, dlsr = _BLOCK.unpack_from(buf, offset + 24 * i)
        lost = int.from_bytes(lost3, "big")
        if lost & 0x800000:
            lost -= 1 << 24
        blocks.append(ReportBlock(ssrc, frac, lost, hi, jit, lsr, dlsr))
    return tuple(blocks)


def parse_rtcp(data: bytes | bytearray | memoryview) -> list[RtcpPacket]:
    """Parse a compound RTCP packet; raises RtpError on malformed input."""
    buf = bytes(data)
    packets: list[RtcpPacket] = []
    offset = 0
    if len(buf) < 4:
        raise RtpError(f"RTCP packet of {len(buf)} bytes is shorter than its 4-byte header")
    while offset < len(buf):
        if len(buf) - offset < 4:
            raise RtpError("trailing bytes after the last RTCP packet")
        first, ptype, words = struct.unpack_from("!BBH", buf, offset)
        if first >> 6 != RTP_VERSION:
            raise RtpError(f"RTCP version {first >> 6}, expected 2")
        size = (words + 1) * 4
        if offset + size > len(buf):
            raise RtpError(f"RTCP packet length {size} runs past the datagram")
        count = first & 0x1F
        end = offset + size
        if first & 0x20:
            pad = buf[end - 1]
            if pad == 0 or pad > size - 4:
                raise RtpError(f"bad RTCP padding count {pad}")
            end -= pad
        body_start = offset + 4
        if ptype == RTCP_SR:
            if end - body_start < 24 + 24 * count:
                raise RtpError(f"SR too short for {count} report blocks")
            ssrc, ntp, rtp_ts, pkts, octets = struct.unpack_from("!IQIII", buf, body_start)
            packets.append(
                SenderReport(
                    ssrc, ntp, rtp_ts, pkts, octets, _parse_blocks(buf, body_start + 24, count)
                )
            )
        elif ptype == RTCP_RR:
            if end - body_start < 4 + 24 * count:
                raise RtpError(f"RR too short for {count} report blocks")
            (ssrc,) = struct.unpack_from("!I", buf, body_start)
            packets.append(ReceiverReport(ssrc, _parse_blocks(buf, body_start + 4, count)))
        else:
            packets.append(OtherRtcp(ptype, count, buf[body_start:end]))
        offset += size
    return packets
