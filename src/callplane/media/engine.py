"""The media engine: RTP sessions driven by one 20 ms media clock, as a media graph.

See docs/architecture.md ("engine -> media"). One clock task serves every session. Per tick it

1. pops exactly one inbound frame per session from the session's jitter buffer (packets are only
   pushed there as they arrive: ordering, any ptime and loss are the buffer's business);
2. pulls the next frame of every active playback (a view into a precomputed matrix, or a live
   source fed from outside) and mixes them with volume for all sessions at once;
3. adds, for sessions in a mix group (a bridge, later a conference), every other member's voice
   (mix-minus, batched over all groups: `media.mix`);
4. encodes every session's frame with one vectorised G.711 table lookup, writes the 12-byte
   headers in place and sends one packet per session;
5. only then hands every listener of a session one :class:`TickFrames` (inbound, outbound,
   speak), every tick, so operations never see gaps and their timers count ticks.

Nothing per tick allocates per sample, and nothing per session runs more than a few Python
statements: that is what lets one core hold hundreds of calls.

The clock runs on an absolute schedule (tick n is due at start + n * 20 ms): a late wake-up does
not shift later ticks, it is caught up by sending the missed ticks at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt

from callplane.media import g711
from callplane.media.dtmf import DtmfError, DtmfPacket, DtmfReceiver, TickAction, plan_digits
from callplane.media.jitter import JitterBuffer
from callplane.media.mix import MemberRow, MixPlan
from callplane.media.rtp import (
    HEADER,
    ReceiverReport,
    ReceiveStats,
    ReportBlock,
    RtpError,
    SenderReport,
    build_rr,
    build_sr,
    ntp_from_unix,
    parse_rtcp,
    parse_rtp,
)
from callplane.media.sources import FRAME_SAMPLES, Frame, LiveSource, Reader, Source

log = logging.getLogger(__name__)


@dataclass(slots=True)
class TickFrames:
    """One 20 ms tick of one RTP session, given to every listener once per tick, every tick
    (RFC 4733 digit sending and hold included), after all of the tick's packets were sent.

    The leg's own voice (the "speak" side of recordings, taps and detectors) is ``inbound`` plus
    ``speak``; the "listen" side is ``outbound``. Frames are owned copies a listener may keep.
    """

    tick: int  # the media clock's tick number (50 per second), shared by all sessions
    inbound: Frame  # from the far end, jitter-buffered; silence where nothing arrived
    outbound: Frame  # what this leg sent (or, during digits or on hold, would have sent)
    speak: Frame | None  # what speak-direction playbacks said on this leg (not sent)
    heard: bool  # inbound held received audio (False: silence because nothing arrived)


FrameListener = Callable[[TickFrames], None]
# Rewrites a session's inbound frame in place, right after the jitter buffer (noise reduction).
InboundFilter = Callable[[Frame], None]
PlayDirection = Literal["listen", "speak", "both"]
MediaDirection = Literal["sendrecv", "sendonly", "recvonly", "inactive"]
DtmfCallback = Callable[[str, int], None]
PlaybackState = Literal["playing", "paused", "finished", "stopped", "error"]
Playable = Source | LiveSource

_MEDIA_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
PCMU = 0
PCMA = 8
TICK = 0.020  # seconds per frame (ptime 20)
PACKET_SIZE = HEADER.size + FRAME_SAMPLES  # 12-byte header + 160 G.711 bytes
MAX_CATCH_UP = 10  # ticks sent back-to-back after a stall; a longer stall is skipped, not burst
RTCP_INTERVAL = 5.0
_TS_MASK = 0xFFFF_FFFF
_SEQ_MASK = 0xFFFF
_DTMF_HEADER = struct.Struct("!BBHII")
_HEADER_UNPACK_FROM = HEADER.unpack_from
_DECODE = {PCMU: g711.ULAW_DECODE, PCMA: g711.ALAW_DECODE}
_U8 = np.dtype(np.uint8)


@dataclass
class ClockStats:
    """Media clock health, for logs and the benchmark."""

    ticks: int = 0
    late_ticks: int = 0  # wake-ups more than 2 ms after their scheduled time
    max_lateness: float = 0.0  # seconds
    skipped_ticks: int = 0  # ticks dropped after a stall longer than MAX_CATCH_UP ticks
    caught_up_ticks: int = 0  # ticks sent back-to-back to catch up after a late wake-up
    tick_cpu: float = 0.0  # process CPU seconds spent inside ticks
    # When the last packet of a tick left, relative to the tick's scheduled time (seconds):
    # wake-up lateness plus the time to produce and send every session's packet.
    max_send_lateness: float = 0.0
    send_lateness: deque[float] = field(default_factory=lambda: deque(maxlen=50 * 60))
    lateness: deque[float] = field(default_factory=lambda: deque(maxlen=50 * 60))


class Playback:
    """A handle on one playback (one source or a playlist) on one session.

    ``state``: ``playing`` | ``paused`` | ``finished`` | ``stopped`` | ``error``.
    ``done`` resolves with ``"finished"`` (played through all loops), ``"stopped"`` (stop() or
    session closed) or ``"error"`` (a source raised; ``error`` holds the exception).
    """

    __slots__ = (
        "_far",
        "_gain",
        "_index",
        "_loop",
        "_plays",
        "_reader",
        "_session",
        "_sources",
        "_speaks",
        "direction",
        "done",
        "error",
        "state",
        "volume_db",
    )

    def __init__(
        self,
        session: RtpSession,
        sources: Sequence[Playable],
        volume_db: float,
        loop: int,
        done: asyncio.Future[str],
        direction: PlayDirection = "listen",
    ) -> None:
        self._session = session
        self.direction: PlayDirection = direction
        # `listen`: the far end hears it; `speak`: it is spoken *by* this leg (what a bridged
        # peer or a recording of the leg's speak side hears), not sent to the far end.
        self._far = direction in ("listen", "both")
        self._speaks = direction in ("speak", "both")
        self._sources = list(sources)
        self._index = 0
        self._plays = 0
        self._loop = loop
        self._reader: Reader = self._sources[0].reader()
        self.volume_db = float(volume_db)
        self._gain = _db_to_gain(volume_db)
        self.state: PlaybackState = "playing"
        self.done = done
        self.error: BaseException | None = None

    def pause(self) -> None:
        """Stop producing audio; resume() continues where it paused. No-op unless playing."""
        if self.state == "playing":
            self.state = "paused"
            self._session._deactivate(self)

    def resume(self) -> None:
        """Continue a paused playback from where it paused. No-op unless paused."""
        if self.state == "paused":
            self.state = "playing"
            self._session._activate(self)

    def stop(self) -> None:
        """End the playback now; ``done`` resolves with ``"stopped"``. No-op once ended."""
        if self.state in ("playing", "paused"):
            self._end("stopped")

    def set_volume(self, db: float) -> None:
        """Change the gain (dB relative to the source) from the next frame on."""
        self.volume_db = float(db)
        self._gain = _db_to_gain(db)

    def _end(self, state: Literal["finished", "stopped", "error"]) -> None:
        self.state = state
        self._session._deactivate(self)
        self._session._playbacks.discard(self)
        if not self.done.done():
            self.done.set_result(state)

    def _next_frame(self) -> Frame | None:
        """The next frame, moving through the playlist and loops; None once finished."""
        try:
            frame = self._reader.next_frame()
            if frame is not None:
                return frame
            # Current source exhausted: try each next source once per full pass, so a playlist
            # of empty sources with loop=0 ends instead of spinning.
            for _ in range(len(self._sources) + 1):
                self._index += 1
                if self._index >= len(self._sources):
                    self._plays += 1
                    if self._loop and self._plays >= self._loop:
                        break
                    self._index = 0
                self._reader = self._sources[self._index].reader()
                frame = self._reader.next_frame()
                if frame is not None:
                    return frame
            self._end("finished")
            return None
        except Exception as exc:  # a broken source must not break the clock for every call
            log.exception("playback source failed")
            self.error = exc
            self._end("error")
            return None

    def __repr__(self) -> str:
        return f"<Playback {self.state} {[s for s in self._sources]!r}>"


def _db_to_gain(db: float) -> float:
    if not math.isfinite(db):
        raise ValueError(f"volume must be a finite number of dB, got {db}")
    return float(10 ** (db / 20))


class _RtpProtocol(asyncio.DatagramProtocol):
    def __init__(self, session: RtpSession, rtcp: bool) -> None:
        self._session = session
        self._rtcp = rtcp
        self._handle = session._on_rtcp if rtcp else session._on_datagram

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            self._handle(data, addr)
        except Exception:  # one bad packet or listener must not kill the socket
            log.exception("error handling an inbound packet")

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the peer may not be listening yet. Keep sending.
        self._session.stats_send_errors += 1


class RtpSession:
    """One RTP stream (G.711 + RFC 4733) on an even local port; RTCP on port+1.

    Created by :meth:`MediaEngine.open_session`. Until :meth:`configure` is called it sends
    nothing; afterwards it sends one packet every 20 ms (silence when nothing plays) to the
    configured address, or, once packets arrive, to their source (symmetric RTP, RFC 4961),
    unless its media direction (hold) says it must not send; with `latch_only` it waits for
    the first packet and never sends to the configured address. Inbound audio goes through the
    session's jitter buffer: one frame per tick.
    """

    def __init__(
        self,
        engine: MediaEngine,
        sock: socket.socket,
        rtcp_sock: socket.socket | None,
    ) -> None:
        self._engine = engine
        self._sock = sock
        self._rtcp_sock = rtcp_sock
        self._sendto = sock.sendto
        self.local_port: int = sock.getsockname()[1]
        self.local_host: str = sock.getsockname()[0]
        self.ssrc = random.getrandbits(32)
        # RFC 3550 §5.1: random initial sequence number and timestamp.
        self._seq = random.getrandbits(16)
        self._ts = random.getrandbits(32)
        self._marker = True
        self._pt = PCMU
        self._law_offset = 0
        self._te_pt: int | None = 101
        self._configured_remote: tuple[str, int] | None = None
        # Where packets go until some arrive: the SDP's address, or nowhere when latch_only.
        self._unlatched_remote: tuple[str, int] | None = None
        self._latch_only = False
        self._latched: tuple[str, int] | None = None
        self._latched_ssrc: int | None = None
        self._rtcp_remote: tuple[str, int] | None = None
        self._configured = False
        self._closed = False
        self._sends = True  # the negotiated direction lets us send (not recvonly / inactive)
        self.direction: MediaDirection = "sendrecv"
        # Start with no margin and let late packets grow it: a bridge then adds 0-20 ms, not 20-40.
        self.jitter = JitterBuffer(target_frames=0)
        self._group: MixGroup | None = None
        self._active: list[Playback] = []  # playing, in start order (mixed together)
        self._playbacks: set[Playback] = set()  # playing or paused
        self._listeners: list[FrameListener] = []
        self._inbound_filter: InboundFilter | None = None
        self.on_dtmf: DtmfCallback | None = None
        self._dtmf_rx = DtmfReceiver()
        self._dtmf_plan: deque[TickAction | asyncio.Future[None]] = deque()
        self._dtmf_ts = 0
        self._rx = ReceiveStats()
        self._last_sr: tuple[int, float] | None = None  # (middle 32 bits of NTP, arrival time)
        self._transports: list[asyncio.BaseTransport] = []
        self._dtmf_poll: asyncio.TimerHandle | None = None
        self.packets_sent = 0
        self.octets_sent = 0
        self.packets_received = 0
        self.stats_send_errors = 0
        self.stats_bad_packets = 0

    # -- configuration -------------------------------------------------------------------------

    @property
    def remote(self) -> tuple[str, int] | None:
        """Where packets go now: the latched source address, else the configured one (unless
        `latch_only`)."""
        return self._latched or self._unlatched_remote

    @property
    def latch_only(self) -> bool:
        """Send nothing (RTP or RTCP) until a packet arrives, then only to its source (symmetric
        RTP, RFC 4961), never to the address the SDP names. For peers that are not trusted:
        whoever writes an SDP cannot aim our media at a third party (no reflection)."""
        return self._latch_only

    @latch_only.setter
    def latch_only(self, value: bool) -> None:
        self._latch_only = value
        self._unlatched_remote = None if value else self._configured_remote

    @property
    def payload_type(self) -> int:
        return self._pt

    @property
    def closed(self) -> bool:
        return self._closed

    def configure(
        self,
        remote: tuple[str, int] | None = None,
        payload_type: int = PCMU,
        telephone_event_pt: int | None = 101,
        direction: str = "sendrecv",
    ) -> None:
        """Set the remote address (from SDP), the G.711 payload type (0 PCMU, 8 PCMA), the
        RFC 4733 payload type (None = not negotiated) and our media direction. May be called
        again (re-INVITE): a new address also drops the latched one, so media follows the new
        SDP until packets arrive.
        """
        if payload_type not in (PCMU, PCMA):
            raise ValueError(f"payload type {payload_type} is not G.711 (0 or 8)")
        if telephone_event_pt is not None and not 96 <= telephone_event_pt <= 127:
            raise ValueError(f"telephone-event payload type {telephone_event_pt} not dynamic")
        if self._closed:
            raise RuntimeError("session is closed")
        if remote is not None and remote != self._configured_remote:
            self._latched = None
            self._latched_ssrc = None
        if remote is not None:
            remote = (remote[0], int(remote[1]))
        self._configured_remote = remote if remote is not None else self._configured_remote
        self._unlatched_remote = None if self._latch_only else self._configured_remote
        self._pt = payload_type
        self._law_offset = 65536 if payload_type == PCMA else 0
        self._te_pt = telephone_event_pt
        self._configured = True
        self.set_direction(direction)
        self._engine._membership_changed()

    def set_direction(self, direction: str) -> None:
        """Our side of the SDP direction (RFC 3264 §6.1): ``recvonly`` and ``inactive`` (the far
        end put us on hold) stop sending; the clock still ticks listeners and bridges, and RTP
        timestamps keep running, so unhold resumes on the wall clock with a marker bit."""
        if direction not in _MEDIA_DIRECTIONS:
            raise ValueError(f"unknown media direction {direction!r}")
        sends = direction in ("sendrecv", "sendonly")
        if sends and not self._sends:
            self._marker = True
        self.direction = cast("MediaDirection", direction)
        self._sends = sends

    @property
    def sending(self) -> bool:
        return self._sends and not self._closed

    # -- playback ------------------------------------------------------------------------------

    def play(
        self,
        source: Playable | Sequence[Playable],
        volume_db: float = 0.0,
        loop: int = 1,
        direction: PlayDirection = "listen",
    ) -> Playback:
        """Start playing a source or a playlist of sources in order, ``loop`` times (0 = forever).

        Several playbacks on one session are mixed. Raises ValueError on an empty playlist or a
        negative loop count.
        """
        if self._closed:
            raise RuntimeError("session is closed")
        sources = [source] if isinstance(source, Source | LiveSource) else list(source)
        if not sources:
            raise ValueError("nothing to play: empty playlist")
        if loop < 0:
            raise ValueError(f"loop must be >= 0 (0 = forever), got {loop}")
        if direction not in ("listen", "speak", "both"):
            raise ValueError(f"direction must be listen, speak or both, got {direction!r}")
        pb = Playback(
            self, sources, volume_db, loop, self._engine._loop().create_future(), direction
        )
        self._playbacks.add(pb)
        self._active.append(pb)
        return pb

    @property
    def playbacks(self) -> list[Playback]:
        """Playbacks not yet ended (playing or paused)."""
        return list(self._playbacks)

    def stop_all(self) -> None:
        for pb in list(self._playbacks):
            pb.stop()

    def _activate(self, pb: Playback) -> None:
        if pb not in self._active:
            self._active.append(pb)

    def _deactivate(self, pb: Playback) -> None:
        with contextlib.suppress(ValueError):
            self._active.remove(pb)

    # -- listeners and DTMF --------------------------------------------------------------------

    @property
    def inbound_filter(self) -> InboundFilter | None:
        return self._inbound_filter

    @inbound_filter.setter
    def inbound_filter(self, f: InboundFilter | None) -> None:
        """Set before every consumer of the inbound audio (mix groups, listeners: recordings,
        recognisers, taps, streams): applied to each frame of received audio as it leaves the
        jitter buffer (not to the silence played where nothing arrived)."""
        self._inbound_filter = f
        self._engine._membership_changed()

    def add_listener(self, callback: FrameListener) -> None:
        """Receive one :class:`TickFrames` per tick, every tick, after the tick's packets left.
        A listener that raises is removed (one broken operation must not stop the clock)."""
        self._listeners.append(callback)

    def remove_listener(self, callback: FrameListener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    async def send_digits(self, digits: str, duration_ms: int = 100, gap_ms: int = 100) -> None:
        """Send RFC 4733 events for ``0-9*#ABCD``; ``w`` pauses 0.5 s, ``W`` and ``,`` 1 s.

        Events replace the audio packets of their ticks, on the same SSRC and sequence space.
        Concurrent calls queue behind each other. Returns once the last end packet is sent.
        Raises ValueError on other characters and RuntimeError when telephone-event is not
        negotiated or the session closes first.
        """
        if self._te_pt is None:
            raise RuntimeError("telephone-event is not negotiated on this session")
        if self._closed:
            raise RuntimeError("session is closed")
        try:
            plan = plan_digits(digits, duration_ms, gap_ms)
        except DtmfError as exc:
            raise ValueError(str(exc)) from exc
        # Trailing gap ticks only delay the caller; drop them so the call returns at the last end.
        while plan and plan[-1] is None and digits and digits[-1] not in "wW,":
            plan.pop()
        done: asyncio.Future[None] = self._engine._loop().create_future()
        self._dtmf_plan.extend(plan)
        self._dtmf_plan.append(done)
        await done

    # -- inbound -------------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:
            self.stats_bad_packets += 1
            return
        if 192 <= data[1] <= 223:  # RTCP multiplexed on the RTP port (RFC 5761)
            self._on_rtcp(data, addr)
            return
        if data[0] & 0x3F:  # padding, extension or CSRCs: take the careful path
            try:
                pkt = parse_rtp(data)
            except RtpError:
                self.stats_bad_packets += 1
                return
            pt, seq, ts, ssrc, payload = (
                pkt.payload_type,
                pkt.sequence,
                pkt.timestamp,
                pkt.ssrc,
                pkt.payload,
            )
        else:
            _, second, seq, ts, ssrc = _HEADER_UNPACK_FROM(data)
            pt = second & 0x7F
            if pt == self._pt and self._latched_ssrc == ssrc and self._configured:
                # Fast path: audio in the negotiated codec on the latched stream.
                if not self._rx.update(seq, ts, time.monotonic()):
                    return  # duplicate or hopelessly late
                self.packets_received += 1
                if len(data) > 12:
                    self.jitter.push(seq, ts, _DECODE[pt].take(np.frombuffer(data, _U8, offset=12)))
                return
            payload = data[12:]
        if ssrc != self._latched_ssrc:
            # First packet, or a new stream (transfer, re-INVITE): latch to where it comes from.
            self._latched_ssrc = ssrc
            self._latched = (str(addr[0]), int(addr[1]))
            self._rx = ReceiveStats()
            self.jitter.reset()
            self._engine._membership_changed()
        now = time.monotonic()
        if not self._rx.update(seq, ts, now):
            return  # duplicate or hopelessly late
        self.packets_received += 1
        if pt == self._te_pt:
            self._on_telephone_event(payload, ts, now)
        elif pt in (PCMU, PCMA) and payload and self._configured:
            # Before configure() the clock does not pop this session yet: audio queued now would
            # only come out later as extra delay.
            table = g711.ULAW_DECODE if pt == PCMU else g711.ALAW_DECODE
            self.jitter.push(seq, ts, table[np.frombuffer(payload, dtype=np.uint8)])
        # Other payload types (comfort noise 13, unnegotiated codecs) are counted and ignored.

    def _on_telephone_event(self, payload: bytes, ts: int, now: float) -> None:
        try:
            digits = self._dtmf_rx.feed(payload, ts, now)
        except DtmfError:
            self.stats_bad_packets += 1
            return
        self._deliver_digits(digits)
        if self._dtmf_rx.pending:
            # Report a digit whose end packets were all lost once it goes quiet.
            if self._dtmf_poll is not None:
                self._dtmf_poll.cancel()
            self._dtmf_poll = self._engine._loop().call_later(
                self._dtmf_rx.timeout + 0.05, self._poll_dtmf
            )

    def _poll_dtmf(self) -> None:
        self._dtmf_poll = None
        self._deliver_digits(self._dtmf_rx.poll(time.monotonic()))

    def _deliver_digits(self, digits: list[tuple[str, int]]) -> None:
        cb = self.on_dtmf
        if cb is None:
            return
        for digit, duration in digits:
            try:
                cb(digit, duration)
            except Exception:
                log.exception("on_dtmf callback failed")

    def _on_rtcp(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            packets = parse_rtcp(data)
        except RtpError:
            self.stats_bad_packets += 1
            return
        self._rtcp_remote = (str(addr[0]), int(addr[1]))
        for p in packets:
            if isinstance(p, SenderReport):
                self._last_sr = ((p.ntp_timestamp >> 16) & 0xFFFF_FFFF, time.monotonic())

    # -- outbound (called by the clock) --------------------------------------------------------

    def _next_dtmf(self) -> DtmfPacket | None:
        plan = self._dtmf_plan
        while plan:
            item = plan.popleft()
            if isinstance(item, asyncio.Future):
                if not item.done():
                    item.set_result(None)
                continue
            return item
        return None

    def _send_dtmf(self, pkt: DtmfPacket, remote: tuple[str, int]) -> None:
        if pkt.start:
            self._dtmf_ts = self._ts
        assert self._te_pt is not None
        data = (
            _DTMF_HEADER.pack(
                0x80,
                (0x80 if pkt.start else 0) | self._te_pt,
                self._seq,
                self._dtmf_ts,
                self.ssrc,
            )
            + pkt.payload
        )
        try:
            self._sendto(data, remote)
        except OSError:
            self.stats_send_errors += 1
        self.octets_sent += len(pkt.payload)

    def _send_rtcp(self) -> None:
        if self._rtcp_sock is None or self.remote is None:
            return
        dest = self._rtcp_remote
        if dest is None:
            host, port = self.remote
            dest = (host, port + 1)
        reports: tuple[ReportBlock, ...] = ()
        if self._latched_ssrc is not None and self._rx.received:
            lsr = dlsr = 0
            if self._last_sr is not None:
                lsr = self._last_sr[0]
                dlsr = int((time.monotonic() - self._last_sr[1]) * 65536)
            reports = (self._rx.report_block(self._latched_ssrc, lsr, dlsr),)
        if not self.packets_sent:
            data = build_rr(ReceiverReport(self.ssrc, reports))
        else:
            data = build_sr(
                SenderReport(
                    self.ssrc,
                    ntp_from_unix(time.time()),
                    self._ts,
                    self.packets_sent,
                    self.octets_sent,
                    reports,
                )
            )
        with contextlib.suppress(OSError):
            self._rtcp_sock.sendto(data, dest)

    # -- teardown ------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop all playbacks ("stopped"), close the sockets and leave the clock."""
        if self._closed:
            return
        self._closed = True
        self.stop_all()
        while self._dtmf_plan:
            item = self._dtmf_plan.popleft()
            if isinstance(item, asyncio.Future) and not item.done():
                item.set_exception(RuntimeError("session closed before the digits were sent"))
        if self._dtmf_poll is not None:
            self._dtmf_poll.cancel()
        if self._group is not None:
            self._group.remove(self)
        self._engine._remove(self)
        for tr in self._transports:
            tr.close()
        await asyncio.sleep(0)  # let the transports' close callbacks run

    def __repr__(self) -> str:
        return f"<RtpSession :{self.local_port} -> {self.remote} pt={self._pt}>"


@dataclass
class _Membership:
    hears: bool = True
    speaks: bool = True
    heard_by: RtpSession | None = None


GroupTap = Callable[[int, Frame], None]
_UNCHANGED: Any = object()


class MixGroup:
    """Sessions that hear each other: a bridge of two legs, later a conference.

    Each member's outbound gets the sum of the other members' voices (their inbound audio plus
    their speak-direction playbacks) on top of its own playbacks, in the same tick the voices
    were popped from the jitter buffers: a bridge adds no delay beyond them. ``hears=False``
    (deaf) and ``speaks=False`` (muted) make one-way routes, e.g. a callee's early media relayed
    to a caller who is not heard yet. ``heard_by=other`` makes a whisper: the member's voice
    reaches only ``other`` (a conference coach). A session is in at most one group at a time.

    A tap (:meth:`add_tap`) gets, after every tick's listeners, the group's total: the sum of
    every speaking member's voice, what a recording of the whole room contains.
    """

    def __init__(self, engine: MediaEngine) -> None:
        self._engine = engine
        self._members: dict[RtpSession, _Membership] = {}
        self._taps: list[GroupTap] = []
        self.closed = False

    @property
    def sessions(self) -> list[RtpSession]:
        return list(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, session: object) -> bool:
        return session in self._members

    def add(
        self,
        session: RtpSession,
        *,
        hears: bool = True,
        speaks: bool = True,
        heard_by: RtpSession | None = None,
    ) -> None:
        """Join (or change how the session takes part); leaves any other group first."""
        if self.closed:
            raise RuntimeError("mix group is closed")
        if session.closed:
            raise RuntimeError("session is closed")
        if session._group is not None and session._group is not self:
            session._group.remove(session)
        session._group = self
        self._members[session] = _Membership(hears, speaks, heard_by)
        self._engine._membership_changed()

    def set(
        self,
        session: RtpSession,
        *,
        hears: bool | None = None,
        speaks: bool | None = None,
        heard_by: RtpSession | None = _UNCHANGED,
    ) -> None:
        """Change a member's routes; ``heard_by=None`` ends a whisper."""
        member = self._members[session]
        if hears is not None:
            member.hears = hears
        if speaks is not None:
            member.speaks = speaks
        if heard_by is not _UNCHANGED:
            member.heard_by = heard_by
        self._engine._membership_changed()

    def add_tap(self, tap: GroupTap) -> None:
        """``tap(tick, total)`` once per tick while the group has a clocked member."""
        self._taps.append(tap)
        self._engine._membership_changed()

    def remove_tap(self, tap: GroupTap) -> None:
        if tap in self._taps:
            self._taps.remove(tap)
            self._engine._membership_changed()

    def remove(self, session: RtpSession) -> None:
        if self._members.pop(session, None) is not None:
            if session._group is self:
                session._group = None
            self._engine._membership_changed()

    def close(self) -> None:
        """Unbridge everyone: each session goes on alone."""
        for session in list(self._members):
            self.remove(session)
        self.closed = True
        self._engine._groups.discard(self)
        self._engine._membership_changed()

    def __repr__(self) -> str:
        return f"<MixGroup {[s.local_port for s in self._members]}>"


class MediaEngine:
    """Owns the media clock and allocates RTP ports from ``port_range`` (inclusive).

    ``port_range=(0, 0)`` lets the OS pick ports (RTCP then gets its own OS-picked port).
    """

    def __init__(
        self, host: str = "127.0.0.1", port_range: tuple[int, int] = (20000, 20999)
    ) -> None:
        lo, hi = port_range
        if (lo, hi) != (0, 0) and not (0 < lo <= hi <= 65535):
            raise ValueError(f"bad port range {port_range}")
        self.host = host
        self.port_range = (lo, hi)
        self._next_port = lo + (lo % 2)
        self._sessions: list[RtpSession] = []
        # Configured, open sessions: the clock's rows this tick (sending or on hold).
        self._clocked: list[RtpSession] = []
        self._groups: set[MixGroup] = set()
        self._plan = MixPlan(())
        self._tapped: list[tuple[MixGroup, int]] = []  # (group, its index in the plan)
        self._filters: list[tuple[int, InboundFilter]] = []  # (row, filter) of this tick's rows
        self._dirty = True
        self.tick_count = 0
        self._scratch = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self._task: asyncio.Task[None] | None = None
        self._rtcp_task: asyncio.Task[None] | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self.stats = ClockStats()
        self._capacity = 0
        self._mixed: npt.NDArray[np.int16] = np.zeros((0, FRAME_SAMPLES), dtype=np.int16)
        self._inbound: npt.NDArray[np.int16] = np.zeros((0, FRAME_SAMPLES), dtype=np.int16)
        self._packets: npt.NDArray[np.uint8] = np.zeros((0, PACKET_SIZE), dtype=np.uint8)
        self._packets_mv = self._packets.reshape(-1).data
        self._packet_views: list[memoryview] = []
        self._law_offsets: npt.NDArray[np.int32] = np.zeros((0, 1), dtype=np.int32)
        self._mixed_laws = False
        self._all_alaw = False

    @property
    def sessions(self) -> list[RtpSession]:
        return list(self._sessions)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _loop(self) -> asyncio.AbstractEventLoop:
        return self._event_loop or asyncio.get_running_loop()

    async def start(self) -> None:
        """Start the single 20 ms media clock on the running loop."""
        if self.running:
            return
        self._event_loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._clock(), name="media-clock")
        self._rtcp_task = asyncio.create_task(self._rtcp_loop(), name="media-rtcp")

    async def stop(self) -> None:
        """Close every session and stop the clock."""
        for s in list(self._sessions):
            await s.close()
        for task in (self._task, self._rtcp_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._rtcp_task = None

    # -- sessions ------------------------------------------------------------------------------

    def _bind(self, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            # Headroom for a catch-up burst of many sessions without EAGAIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 18)
            sock.bind((self.host, port))
        except OSError:
            sock.close()
            raise
        return sock

    def _allocate(self) -> tuple[socket.socket, socket.socket]:
        lo, hi = self.port_range
        if (lo, hi) == (0, 0):
            return self._bind(0), self._bind(0)
        first = lo + (lo % 2)
        count = (hi - first + 1) // 2  # even ports whose +1 is still in range
        if count <= 0:
            raise OSError(f"port range {self.port_range} holds no even RTP/RTCP pair")
        for _ in range(count):
            port = self._next_port
            self._next_port = port + 2 if port + 3 <= hi else first
            try:
                rtp = self._bind(port)
            except OSError:
                continue
            try:
                rtcp = self._bind(port + 1)
            except OSError:
                rtp.close()
                continue
            return rtp, rtcp
        raise OSError(f"no free even RTP port pair in {self.port_range}")

    async def open_session(self) -> RtpSession:
        """Bind an even RTP port (and port+1 for RTCP) and register the session with the clock."""
        loop = self._loop()
        rtp_sock, rtcp_sock = self._allocate()
        session = RtpSession(self, rtp_sock, rtcp_sock)
        try:
            tr, _ = await loop.create_datagram_endpoint(
                lambda: _RtpProtocol(session, rtcp=False), sock=rtp_sock
            )
            session._transports.append(tr)
            tr2, _ = await loop.create_datagram_endpoint(
                lambda: _RtpProtocol(session, rtcp=True), sock=rtcp_sock
            )
            session._transports.append(tr2)
        except BaseException:
            for t in session._transports:
                t.close()
            rtp_sock.close()
            rtcp_sock.close()
            raise
        self._sessions.append(session)
        self._membership_changed()
        return session

    def _remove(self, session: RtpSession) -> None:
        with contextlib.suppress(ValueError):
            self._sessions.remove(session)
        self._membership_changed()

    def _membership_changed(self) -> None:
        self._dirty = True

    def mix_group(self) -> MixGroup:
        """A new, empty mix group: every member hears every other member (mix-minus)."""
        group = MixGroup(self)
        self._groups.add(group)
        return group

    def _refresh(self) -> None:
        """Rebuild the per-tick session list, its per-session constant arrays and the mix plan."""
        self._clocked = [s for s in self._sessions if s._configured and not s._closed]
        n = len(self._clocked)
        if n > self._capacity:
            cap = max(16, 1 << (n - 1).bit_length())
            self._capacity = cap
            self._mixed = np.zeros((cap, FRAME_SAMPLES), dtype=np.int16)
            self._inbound = np.zeros((cap, FRAME_SAMPLES), dtype=np.int16)
            self._packets = np.zeros((cap, PACKET_SIZE), dtype=np.uint8)
            self._packets_mv = self._packets.reshape(-1).data
            mv = self._packets_mv
            # One memoryview per packet row, made once: no slice object per packet per tick.
            self._packet_views = [mv[i * PACKET_SIZE : (i + 1) * PACKET_SIZE] for i in range(cap)]
        offsets = np.array([s._law_offset for s in self._clocked], dtype=np.int32)
        self._law_offsets = offsets.reshape(-1, 1)
        self._mixed_laws = bool(n) and offsets.min() != offsets.max()
        self._all_alaw = bool(n) and offsets.min() == 65536
        row_of = {s: i for i, s in enumerate(self._clocked)}
        groups = list(self._groups)

        def row(g: MixGroup, s: RtpSession, m: _Membership) -> MemberRow:
            if m.heard_by is None:
                return MemberRow(row_of[s], m.hears, m.speaks)
            # A whisper to someone not clocked, or no longer in the group, reaches nobody.
            to = row_of.get(m.heard_by) if m.heard_by in g._members else None
            return MemberRow(row_of[s], m.hears, m.speaks and to is not None, to)

        self._filters = [
            (i, s._inbound_filter)
            for i, s in enumerate(self._clocked)
            if s._inbound_filter is not None
        ]
        self._plan = MixPlan(
            [[row(g, s, m) for s, m in g._members.items() if s in row_of] for g in groups],
            [bool(g._taps) for g in groups],
        )
        self._tapped = [
            (g, k)
            for g, k in zip(groups, self._plan.index, strict=True)
            if g._taps and k is not None
        ]
        self._dirty = False

    # -- the clock -----------------------------------------------------------------------------

    async def _clock(self) -> None:
        loop = self._loop()
        start = loop.time()
        done = 0  # ticks completed; tick k is due at start + k * TICK
        stats = self.stats
        while True:
            target = start + (done + 1) * TICK
            delay = target - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = loop.time()
            due = int((now - start) / TICK)
            if due <= done:
                continue  # woke a hair early
            lateness = now - (start + (done + 1) * TICK)
            stats.lateness.append(lateness)
            if lateness > stats.max_lateness:
                stats.max_lateness = lateness
            if lateness > 0.002:
                stats.late_ticks += 1
            behind = due - done
            if behind > MAX_CATCH_UP:
                # A long stall (GC, blocked loop): sending all of it now would only flood the
                # peers' jitter buffers. Skip the excess but keep timestamps on wall time.
                skipped = behind - MAX_CATCH_UP
                stats.skipped_ticks += skipped
                self._skip(skipped)
                behind = MAX_CATCH_UP
            if behind > 1:
                stats.caught_up_ticks += behind - 1
            cpu0 = time.process_time()
            for _ in range(behind):
                try:
                    self._tick()
                except Exception:  # keep the clock alive whatever one tick did
                    log.exception("media tick failed")
            stats.tick_cpu += time.process_time() - cpu0
            sent_late = loop.time() - (start + due * TICK)
            stats.send_lateness.append(sent_late)
            if sent_late > stats.max_send_lateness:
                stats.max_send_lateness = sent_late
            stats.ticks += behind
            done = due

    def _skip(self, ticks: int) -> None:
        self.tick_count += ticks
        scratch = self._scratch
        for s in self._clocked:
            s._ts = (s._ts + ticks * FRAME_SAMPLES) & _TS_MASK
            # The far ends went on sending through the stall: move their playout points past
            # the skipped ticks too, or the stall would stay in the calls as extra delay.
            for _ in range(min(ticks, s.jitter.max_frames)):
                s.jitter.pop_into(scratch)

    def _tick(self) -> None:
        """One 20 ms frame in and out for every clocked session."""
        if self._dirty:
            self._refresh()
        sessions = self._clocked
        n = len(sessions)
        self.tick_count += 1
        if n == 0:
            return
        mixed = self._mixed[:n]
        inbound = self._inbound[:n]

        # 0. One inbound frame per session from its jitter buffer.
        heard = [s.jitter.pop_into(inbound[i]) for i, s in enumerate(sessions)]
        for i, inbound_filter in self._filters:
            if heard[i]:
                try:
                    inbound_filter(inbound[i])
                except Exception:
                    log.exception("inbound filter of %s failed; removed", sessions[i])
                    sessions[i].inbound_filter = None

        # 1. Gather: one frame view per active playback; owners[i] = its session row.
        frames: list[Frame] = []
        owners: list[int] = []
        gains: list[float] = []
        append_frame = frames.append
        append_owner = owners.append
        append_gain = gains.append
        unity = True
        multi = False
        spoken: list[tuple[int, Frame, float]] = []  # (session row, frame, gain) of `speak` plays
        for i, s in enumerate(sessions):
            active = s._active
            if not active:
                continue
            if len(active) == 1 and active[0]._far and not active[0]._speaks:
                # Fast path (one playback): read the frame straight from its reader; the end
                # of a source, playlists, loops and errors go through Playback._next_frame.
                pb = active[0]
                try:
                    frame = pb._reader.next_frame()
                except Exception:
                    frame = None
                if frame is None:
                    frame = pb._next_frame()
                    if frame is None:
                        continue
                append_frame(frame)
                append_owner(i)
                g = pb._gain
                append_gain(g)
                if g != 1.0:
                    unity = False
                continue
            multi = True
            for pb in tuple(active):
                frame = pb._next_frame()
                if frame is None:
                    continue
                if pb._speaks:
                    spoken.append((i, frame, pb._gain))
                    if not pb._far:
                        continue
                append_frame(frame)
                append_owner(i)
                g = pb._gain
                append_gain(g)
                if g != 1.0:
                    unity = False

        # 2. Mix and apply volume for all sessions at once.
        count = len(frames)
        if count == n and unity and not multi:
            # Every session plays exactly one unity-gain frame (rows 0..n-1 in order): copy
            # them straight into the mix buffer.
            np.concatenate(frames, out=mixed.reshape(-1))
        else:
            mixed.fill(0)
            if count:
                stacked = np.concatenate(frames).reshape(count, FRAME_SAMPLES)
                rows = np.asarray(owners, dtype=np.intp)
                if unity and not multi:
                    mixed[rows] = stacked
                else:
                    acc = stacked.astype(np.float32)
                    if not unity:
                        acc *= np.asarray(gains, dtype=np.float32)[:, None]
                    if multi:
                        total = np.zeros((n, FRAME_SAMPLES), dtype=np.float32)
                        np.add.at(total, rows, acc)
                        np.clip(np.rint(total), -32768, 32767, out=total)
                        mixed[:] = total
                    else:
                        np.clip(np.rint(acc), -32768, 32767, out=acc)
                        mixed[rows] = acc
        said = self._said(spoken) if spoken else {}

        # 3. Bridges and conferences: every member hears the others' voices (mix-minus).
        if len(self._plan):
            self._plan.mix_into(mixed, inbound, said)

        # 4. Encode every session's frame in one gather, written straight into the packets
        # (mode="clip" lets np.take write into the strided view without a temporary; every
        # index is in range anyway).
        u16 = mixed.view(np.uint16)
        payloads = self._packets[:n, HEADER.size :]
        if self._mixed_laws:
            np.take(g711.COMBINED_ENCODE, u16 + self._law_offsets[:n], out=payloads, mode="clip")
        elif self._all_alaw:
            np.take(g711.ALAW_ENCODE, u16, out=payloads, mode="clip")
        else:
            np.take(g711.ULAW_ENCODE, u16, out=payloads, mode="clip")

        # 5. Headers in place, then one sendto per session. Every packet leaves before any
        # listener runs: listeners (recording, detectors) cost far more than a send, and running
        # them in between would delay the packets of every later session in the list.
        packets = self._packet_views
        pack_into = HEADER.pack_into
        listening: list[int] = []
        for i, s in enumerate(sessions):
            if s._listeners:
                listening.append(i)
            remote = s._latched or s._unlatched_remote
            if remote is None or not s._sends:
                # On hold, or no address yet: nothing leaves, but the timestamp follows the
                # clock so the stream resumes where wall time says.
                s._ts = (s._ts + FRAME_SAMPLES) & _TS_MASK
                continue
            if s._dtmf_plan:
                dtmf = s._next_dtmf()
                if dtmf is not None:
                    s._send_dtmf(dtmf, remote)
                    s._seq = (s._seq + 1) & _SEQ_MASK
                    s._ts = (s._ts + FRAME_SAMPLES) & _TS_MASK
                    s.packets_sent += 1
                    continue
            packet = packets[i]
            seq = s._seq
            ts = s._ts
            if s._marker:
                pack_into(packet, 0, 0x80, 0x80 | s._pt, seq, ts, s.ssrc)
                s._marker = False
            else:
                pack_into(packet, 0, 0x80, s._pt, seq, ts, s.ssrc)
            try:
                s._sendto(packet, remote)
            except OSError:  # EAGAIN on a full buffer, unreachable host: drop this one packet
                s.stats_send_errors += 1
            s._seq = (seq + 1) & _SEQ_MASK
            s._ts = (ts + FRAME_SAMPLES) & _TS_MASK
            s.packets_sent += 1
            s.octets_sent += FRAME_SAMPLES

        # 6. One TickFrames per listening session, each frame an owning copy of its row (a
        # listener may keep it: a view into one shared batch would pin the whole batch).
        tick = self.tick_count
        for i in listening:
            s = sessions[i]
            frames_of_tick = TickFrames(
                tick, inbound[i].copy(), mixed[i].copy(), said.get(i), heard[i]
            )
            for cb in tuple(s._listeners):
                try:
                    cb(frames_of_tick)
                except Exception:
                    log.exception("media listener failed; removing it")
                    s.remove_listener(cb)

        # 7. Group taps: the room's total (a conference recording).
        for group, k in self._tapped:
            room = self._plan.total(k)
            if room is None:
                continue
            for tap in tuple(group._taps):
                try:
                    tap(tick, room)
                except Exception:
                    log.exception("mix group tap failed; removing it")
                    group.remove_tap(tap)

    @staticmethod
    def _said(spoken: list[tuple[int, Frame, float]]) -> dict[int, Frame]:
        """What each session's speak-direction playbacks said this tick, by row."""
        by_row: dict[int, npt.NDArray[np.float32]] = {}
        for i, frame, gain in spoken:
            acc = by_row.get(i)
            scaled = frame.astype(np.float32) * gain
            by_row[i] = scaled if acc is None else acc + scaled
        return {
            i: np.clip(np.rint(acc), -32768, 32767).astype(np.int16) for i, acc in by_row.items()
        }

    async def _rtcp_loop(self) -> None:
        # Spread each session's SR over the interval instead of sending them all together.
        while True:
            sessions = [s for s in self._clocked if s.sending and s.remote is not None]
            if not sessions:
                await asyncio.sleep(1.0)
                continue
            step = RTCP_INTERVAL / len(sessions)
            for s in sessions:
                if not s._closed:
                    s._send_rtcp()
                await asyncio.sleep(step)
