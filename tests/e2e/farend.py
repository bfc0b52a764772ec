"""A far end in the test process: a SIP user agent (callplane's own SipEndpoint, a separate stack
from the server under test) whose SDP points at a plain UDP socket that records every RTP packet
and can send audio and RFC 4733 digits. The tests read and write the RTP headers themselves."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from dataclasses import dataclass, field

import numpy as np
from harness import LOOPBACK

from callplane.media.g711 import ulaw_decode, ulaw_encode
from callplane.sip import sdp
from callplane.sip.endpoint import IncomingCall, SipEndpoint

TELEPHONE_EVENT_PT = 101
EVENT_NAMES = "0123456789*#ABCD"


@dataclass
class Packet:
    at: float
    seq: int
    ts: int
    pt: int
    marker: bool
    payload: bytes


@dataclass
class FarEnd:
    """Answers every call and records the RTP it receives."""

    endpoint: SipEndpoint = field(default_factory=lambda: SipEndpoint(LOOPBACK, 0))
    sock: socket.socket = field(
        default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    )
    packets: list[Packet] = field(default_factory=list)
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    calls: list[IncomingCall] = field(default_factory=list)
    request_uri: str = ""
    remote_rtp: tuple[str, int] | None = None
    answer_delay: float = 0.0  # seconds between 180 Ringing and the 200
    answered_at: float | None = None
    _seq: int = 0
    _ts: int = 0
    _ssrc: int = 0x5EEDF00D

    @property
    def uri(self) -> str:
        return f"sip:far@{LOOPBACK}:{self.endpoint.port}"

    async def start(self) -> None:
        self.sock.bind((LOOPBACK, 0))
        self.sock.setblocking(False)
        self.endpoint.on_incoming = self._on_incoming
        await self.endpoint.start()
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._read)

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(2048)
            except BlockingIOError:
                return
            b0, b1, seq, ts = struct.unpack("!BBHI", data[:8])
            assert b0 >> 6 == 2
            self.packets.append(
                Packet(time.monotonic(), seq, ts, b1 & 0x7F, bool(b1 & 0x80), data[12:])
            )

    async def _on_incoming(self, call: IncomingCall) -> None:
        assert call.remote_sdp is not None
        answer, chosen = sdp.negotiate_answer(
            call.remote_sdp, LOOPBACK, self.sock.getsockname()[1], ("PCMU",)
        )
        self.request_uri = call.request_uri
        assert chosen is not None and chosen.payload_type == 0
        self.remote_rtp = (chosen.remote_ip, chosen.remote_port)
        self.calls.append(call)
        await call.ringing()
        if self.answer_delay:
            await asyncio.sleep(self.answer_delay)
        await call.answer(answer)
        self.answered_at = time.monotonic()
        self.answered.set()

    def _send(
        self, pt: int, payload: bytes, *, marker: bool = False, ts: int | None = None
    ) -> None:
        assert self.remote_rtp is not None, "no call answered yet"
        self._seq = (self._seq + 1) % 65536
        header = struct.pack(
            "!BBHII",
            0x80,
            (0x80 if marker else 0) | pt,
            self._seq,
            ts if ts is not None else self._ts,
            self._ssrc,
        )
        self.sock.sendto(header + payload, self.remote_rtp)

    def send_frame(self, payload: bytes) -> None:
        """One PCMU packet now, the timestamp moving on by its length (the caller paces)."""
        self._send(0, payload)
        self._ts = (self._ts + len(payload)) % 2**32

    async def play(self, samples: np.ndarray) -> None:
        """Send 8 kHz int16 audio as PCMU RTP, one packet every 20 ms (an absolute schedule)."""
        frames = len(samples) // 160
        start = time.monotonic()
        for n in range(frames):
            frame = samples[n * 160 : (n + 1) * 160]
            self._send(0, ulaw_encode(frame).tobytes())
            self._ts = (self._ts + 160) % 2**32
            await asyncio.sleep(max(0.0, start + (n + 1) * 0.02 - time.monotonic()))

    async def silence(self, seconds: float) -> None:
        await self.play(np.zeros(int(seconds * 8000), dtype=np.int16))

    async def send_digits(self, digits: str, duration_ms: int = 100, gap_ms: int = 100) -> None:
        """RFC 4733 events: marker on the first packet, growing duration, three end packets."""
        for digit in digits:
            code = EVENT_NAMES.index(digit.upper())
            event_ts = self._ts
            steps = duration_ms // 20
            for step in range(1, steps + 1):
                end = step == steps
                payload = struct.pack("!BBH", code, (0x80 if end else 0) | 10, step * 160)
                for _ in range(3 if end else 1):
                    self._send(TELEPHONE_EVENT_PT, payload, marker=step == 1, ts=event_ts)
                await asyncio.sleep(0.02)
            self._ts = (self._ts + steps * 160) % 2**32
            await self.silence(gap_ms / 1000)

    async def stop(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        await self.endpoint.stop()
        self.sock.close()

    def audio(self, start: float, end: float) -> np.ndarray:
        chosen = [p for p in self.packets if start <= p.at < end and p.pt == 0]
        return ulaw_decode(b"".join(p.payload for p in chosen)).astype(np.float64)

    def loud_packets(
        self, start: float, end: float = float("inf"), level: float = 300.0
    ) -> list[float]:
        """Arrival times of the PCMU packets in [start, end) whose RMS is above `level`."""
        return [
            p.at
            for p in self.packets
            if start <= p.at < end
            and p.pt == 0
            and np.sqrt(np.mean(ulaw_decode(p.payload).astype(np.float64) ** 2)) > level
        ]

    def digits(self) -> str:
        """RFC 4733 events received, one character per event (an event spans one timestamp)."""
        events: dict[int, int] = {}
        for p in self.packets:
            if p.pt == TELEPHONE_EVENT_PT:
                events.setdefault(p.ts, p.payload[0])
        return "".join(EVENT_NAMES[code] for _, code in sorted(events.items()))


def tone(hz: float, seconds: float, level: float = 0.3) -> np.ndarray:
    """A sine at `level` of full scale, 8 kHz int16, for a far end to send."""
    t = np.arange(int(seconds * 8000)) / 8000
    return (level * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def peaks(samples: np.ndarray, n: int = 2) -> list[float]:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    freqs = np.fft.rfftfreq(len(samples), 1 / 8000)
    found: list[float] = []
    for index in np.argsort(spectrum)[::-1]:
        if all(abs(freqs[index] - f) > 20 for f in found):
            found.append(float(freqs[index]))
        if len(found) == n:
            break
    return sorted(found)


def rms_db(samples: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(samples**2)) + 1e-9))
