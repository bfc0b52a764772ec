"""Sans-IO RFC 4733 telephone-events (DTMF): payload format, a per-tick sender plan, a receiver.

Payload (RFC 4733 §2.3): event (8 bits) | E (1) | R (1) | volume (6) | duration (16, in timestamp
units). All packets of one event share the RTP timestamp of its start; the first carries the
marker bit; the duration grows while the key is held; the end is sent three times (E bit set) so a
lost packet does not lose the digit (§2.5.1.4).
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

EVENT_CODES: dict[str, int] = {
    **{str(d): d for d in range(10)},
    "*": 10,
    "#": 11,
    "A": 12,
    "B": 13,
    "C": 14,
    "D": 15,
}
EVENT_DIGITS: dict[int, str] = {code: digit for digit, code in EVENT_CODES.items()}

#: Pauses understood by send_digits strings: SWML documents ``w`` = 0.5 s and ``W`` = 1 s; ``,``
#: is the usual dialler notation for a 1 s pause.
PAUSES_MS: dict[str, int] = {"w": 500, "W": 1000, ",": 1000}

END_PACKETS = 3
_PAYLOAD = struct.Struct("!BBH")
MAX_DURATION_UNITS = 0xFFFF  # longer events need segments (§2.5.1.3); we refuse them instead


class DtmfError(ValueError):
    """Malformed telephone-event payload or an unsendable digit string."""


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    event: int
    end: bool
    volume: int  # 0..63, in -dBm0
    duration: int  # timestamp units

    def build(self) -> bytes:
        if not 0 <= self.event <= 255:
            raise DtmfError(f"event {self.event} outside 0..255")
        if not 0 <= self.volume <= 63:
            raise DtmfError(f"volume {self.volume} outside 0..63")
        if not 0 <= self.duration <= MAX_DURATION_UNITS:
            raise DtmfError(f"duration {self.duration} outside 16 bits")
        return _PAYLOAD.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)

    @property
    def digit(self) -> str | None:
        return EVENT_DIGITS.get(self.event)


def parse_event(payload: bytes | bytearray | memoryview) -> TelephoneEvent:
    """Parse a telephone-event payload (extra bytes, e.g. redundancy, are ignored)."""
    if len(payload) < 4:
        raise DtmfError(f"telephone-event payload of {len(payload)} bytes, need 4")
    event, flags, duration = _PAYLOAD.unpack_from(bytes(payload[:4]))
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


@dataclass(frozen=True, slots=True)
class DtmfPacket:
    """One telephone-event packet to send on one tick.

    ``start``: first packet of an event, so the sender takes the current RTP timestamp as the
    event timestamp and sets the marker bit; later packets reuse that timestamp.
    """

    payload: bytes
    start: bool
    end: bool


#: A per-tick plan entry: a packet to send instead of audio, or None (send audio this tick).
TickAction = DtmfPacket | None


def digit_packets(
    digit: str,
    duration_ms: int = 100,
    volume: int = 10,
    samples_per_tick: int = 160,
    tick_ms: int = 20,
) -> list[DtmfPacket]:
    """The packets for one digit, one per tick: growing duration, then three end packets."""
    code = EVENT_CODES.get(digit.upper() if digit in "abcd" else digit)
    if code is None:
        raise DtmfError(f"not a DTMF digit: {digit!r}")
    ticks = max(1, -(-duration_ms // tick_ms))
    total = ticks * samples_per_tick
    if total > MAX_DURATION_UNITS:
        raise DtmfError(f"digit duration {duration_ms} ms too long for one event")
    packets = [
        DtmfPacket(
            TelephoneEvent(code, False, volume, (i + 1) * samples_per_tick).build(), i == 0, False
        )
        for i in range(ticks)
    ]
    end = TelephoneEvent(code, True, volume, total).build()
    packets.extend(DtmfPacket(end, False, True) for _ in range(END_PACKETS))
    return packets


def plan_digits(
    digits: str, duration_ms: int = 100, gap_ms: int = 100, volume: int = 10, tick_ms: int = 20
) -> list[TickAction]:
    """The whole per-tick plan for a digit string: packets, gaps (None) between digits, pauses.

    Validates the whole string first so nothing is sent for an invalid one.
    """
    for ch in digits:
        if ch not in PAUSES_MS and (ch.upper() if ch in "abcd" else ch) not in EVENT_CODES:
            raise DtmfError(f"invalid character {ch!r} in digits {digits!r}")
    plan: list[TickAction] = []
    gap_ticks = max(0, -(-gap_ms // tick_ms))
    for ch in digits:
        if ch in PAUSES_MS:
            plan.extend([None] * (PAUSES_MS[ch] // tick_ms))
            continue
        plan.extend(digit_packets(ch, duration_ms, volume, tick_ms=tick_ms))
        plan.extend([None] * gap_ticks)
    return plan


class DtmfReceiver:
    """Turns received telephone-event packets into digits, each reported exactly once.

    ``feed`` returns the digits completed by this packet as (digit, duration_ms). An event is
    identified by its RTP timestamp; the repeated end packets, and any retransmission after it,
    are dropped. An event whose end packets were all lost is reported when the next event starts
    or when ``poll`` finds it silent for ``timeout`` seconds.
    """

    def __init__(self, clock_rate: int = 8000, timeout: float = 0.3) -> None:
        self.clock_rate = clock_rate
        self.timeout = timeout
        self._current: tuple[int, TelephoneEvent] | None = None  # (timestamp, last event)
        self._last_seen = 0.0
        self._done: deque[int] = deque(maxlen=16)

    @property
    def pending(self) -> bool:
        """An event has started and its end has not been seen yet."""
        return self._current is not None

    def _report(self, ev: TelephoneEvent) -> tuple[str, int] | None:
        digit = ev.digit
        if digit is None:
            return None  # non-DTMF events (flash, tones) are not digits
        return digit, round(ev.duration * 1000 / self.clock_rate)

    def feed(self, payload: bytes, timestamp: int, now: float = 0.0) -> list[tuple[str, int]]:
        ev = parse_event(payload)
        out: list[tuple[str, int]] = []
        if timestamp in self._done:
            return out
        if self._current is not None and self._current[0] != timestamp:
            # A new event began without the old one's end arriving: finish the old one.
            old_ts, old_ev = self._current
            self._done.append(old_ts)
            reported = self._report(old_ev)
            if reported:
                out.append(reported)
            self._current = None
        self._last_seen = now
        if ev.end:
            self._done.append(timestamp)
            self._current = None
            reported = self._report(ev)
            if reported:
                out.append(reported)
        else:
            self._current = (timestamp, ev)
        return out

    def poll(self, now: float) -> list[tuple[str, int]]:
        """Report an event whose end never arrived once it has been silent for ``timeout``."""
        if self._current is not None and now - self._last_seen > self.timeout:
            ts, ev = self._current
            self._current = None
            self._done.append(ts)
            reported = self._report(ev)
            return [reported] if reported else []
        return []
