"""A call leg as the engine tracks it, and its lifecycle rules (reference §2.3)."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, Protocol

from callplane.store import CallRow

if TYPE_CHECKING:
    from callplane.engine.swml.interpreter import SwmlInterpreter
    from callplane.media.engine import RtpSession
    from callplane.sip.endpoint import SipCall
    from callplane.sip.sdp import ChosenMedia


class CallStatus(StrEnum):
    QUEUED = "queued"
    INITIATED = "initiated"
    CREATED = "created"
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDING = "ending"
    ENDED = "ended"
    FAILED = "failed"
    CANCELED = "canceled"
    COMPLETED = "completed"


TERMINAL = frozenset(
    {CallStatus.ENDED, CallStatus.FAILED, CallStatus.CANCELED, CallStatus.COMPLETED}
)
NOT_ANSWERED_YET = frozenset(
    {CallStatus.QUEUED, CallStatus.INITIATED, CallStatus.CREATED, CallStatus.RINGING}
)

# Forward moves along `queued → initiated → created → ringing → answered → ending → ended`;
# the off-path terminals may be reached from the states the reference names for them.
_ORDER = [
    CallStatus.QUEUED,
    CallStatus.INITIATED,
    CallStatus.CREATED,
    CallStatus.RINGING,
    CallStatus.ANSWERED,
    CallStatus.ENDING,
    CallStatus.ENDED,
]
_OFF_PATH_FROM: dict[CallStatus, frozenset[CallStatus]] = {
    CallStatus.FAILED: frozenset({CallStatus.QUEUED, CallStatus.INITIATED, CallStatus.CREATED}),
    CallStatus.CANCELED: NOT_ANSWERED_YET | {CallStatus.ENDING},
    CallStatus.COMPLETED: frozenset({CallStatus.ANSWERED, CallStatus.ENDING}),
}


def can_move(current: CallStatus, new: CallStatus) -> bool:
    if current in TERMINAL:
        return False
    if new in _OFF_PATH_FROM:
        return current in _OFF_PATH_FROM[new]
    return _ORDER.index(new) > _ORDER.index(current)


class LiveOperation(Protocol):
    """What a call needs of its running operations: to stop them when it ends."""

    done: asyncio.Future[str]

    async def stop(self) -> None: ...


BridgeEnd = Literal["owner_hangup", "peer_hangup", "disconnected", "max_duration", "replaced"]


class CallBridge(Protocol):
    """What a call knows of the bridge it is in (engine.bridge.Bridge)."""

    owner: Call
    peer: Call
    owned: bool
    ended: asyncio.Future[BridgeEnd]

    @property
    def active(self) -> bool: ...

    def other(self, call: Call) -> Call: ...

    def replace(self, old: Call, new: Call) -> None: ...

    def end(self, how: BridgeEnd) -> None: ...


SUPPORTED_CODECS = ("PCMU", "PCMA")


@dataclass
class Leg:
    """The media half of a call's SIP dialog: what we offered or answered, and its version."""

    media: RtpSession
    codecs: list[str] = field(default_factory=lambda: list(SUPPORTED_CODECS))
    session_id: int = field(default_factory=lambda: secrets.randbelow(2**31))
    version: int = 1
    offer: bytes | None = None  # our offer, while its answer is outstanding
    chosen: ChosenMedia | None = None
    local_sdp: bytes | None = None

    def apply(self, chosen: ChosenMedia) -> None:
        """Point the RTP session at what was negotiated."""
        self.chosen = chosen
        self.media.configure(
            remote=(chosen.remote_ip, chosen.remote_port),
            payload_type=chosen.payload_type,
            telephone_event_pt=chosen.telephone_event_pt,
            direction=chosen.direction,
        )

    def preferred_codecs(self) -> list[str]:
        """Keep the codec in use across a re-negotiation when the far end still offers it."""
        if self.chosen is None:
            return self.codecs
        current = self.chosen.codec.upper()
        return [current, *[c for c in self.codecs if c != current]]


# The call_state values a status_url subscriber may ask for (reference §4.1).
SUBSCRIBABLE_STATES = ("created", "ringing", "answered", "ended")


def iso_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Call:
    project_id: str
    from_: str
    to: str
    direction: str  # "outbound-api" for dial, "inbound" for calls from SIP peers
    call_type: str  # relay_sip_call | relay_pstn_call
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    node_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    segment_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    url: str | None = None
    status: CallStatus = CallStatus.QUEUED
    created_at: str = field(default_factory=iso_now)
    parent_id: str | None = None
    status_url: str | None = None
    status_events: tuple[str, ...] = ("ended",)
    end_reason: str | None = None
    # the terminal status a user asked for (update completed/canceled) while the hang-up runs
    requested_final: CallStatus | None = None
    finishing: bool = False  # its operations are being stopped; the ended event comes next
    # why we hung up ourselves (`calling.end` reason, a failed script); a remote BYE is "hangup"
    local_end_reason: str | None = None
    # monotonic-free wall clock marks, for duration and the webhook's timestamps
    answered_at: float | None = None
    ended_at: float | None = None
    # SWML plumbing
    swml_url: str | None = None
    swml_inline: dict[str, Any] | None = None
    url_method: str = "POST"
    fallback_url: str | None = None
    custom_variables: dict[str, str] = field(default_factory=dict)
    # live, not persisted
    sip: SipCall | None = field(default=None, repr=False)
    media: RtpSession | None = field(default=None, repr=False)
    leg: Leg | None = field(default=None, repr=False)  # the SDP side of sip + media
    # A peer leg dialed by `connect` / transfer: driven by its bridge, it runs no SWML of its own.
    dialed_for: Call | None = field(default=None, repr=False)
    bridge: CallBridge | None = field(default=None, repr=False)
    early_media: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    operations: dict[tuple[str, str], LiveOperation] = field(default_factory=dict, repr=False)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set, repr=False)
    swml: SwmlInterpreter | None = field(default=None, repr=False)
    swml_task: asyncio.Task[None] | None = field(default=None, repr=False)
    dtmf_listeners: list[Callable[[str, int], None]] = field(default_factory=list, repr=False)
    # Per-call state that operations share across their lifetimes (e.g. the call's KeyPresses).
    extensions: dict[str, Any] = field(default_factory=dict, repr=False)
    answered: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    finished: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def dispatch_dtmf(self, digit: str, duration_ms: int) -> None:
        """RFC 4733 digits from the far end, to every operation listening (in start order)."""
        for listener in list(self.dtmf_listeners):
            listener(digit, duration_ms)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def duration_ms(self) -> int | None:
        if self.answered_at is None:
            return None
        end = self.ended_at if self.ended_at is not None else time.time()
        return max(0, int((end - self.answered_at) * 1000))

    def call_leg(self) -> dict[str, Any]:
        """The reference's CallLeg (§2.1), exactly its fields."""
        duration_ms = self.duration_ms
        return {
            "id": self.id,
            "from": self.from_,
            "to": self.to,
            "direction": self.direction,
            "source": "realtime_api",
            "url": self.url,
            "charge": 0,
            "created_at": self.created_at,
            "charge_details": [],
            "status": self.status.value,
            "duration": None if duration_ms is None else duration_ms // 1000,
            "duration_ms": duration_ms,
            "billing_ms": duration_ms,
            "type": self.call_type,
            "parent_id": self.parent_id,
        }

    @classmethod
    def from_row(cls, row: CallRow) -> Call:
        """A call read back from the store (after it ended, or after a restart)."""
        leg = row["leg"]
        private = row.get("private", {})
        call = cls(
            project_id=row["project_id"],
            from_=leg["from"],
            to=leg["to"],
            direction=leg["direction"],
            call_type=leg["type"],
            id=row["id"],
            url=leg.get("url"),
            status=CallStatus(leg["status"]),
            created_at=leg["created_at"],
            parent_id=leg.get("parent_id"),
        )
        call.node_id = private.get("node_id", call.node_id)
        call.segment_id = private.get("segment_id", call.segment_id)
        call.status_url = private.get("status_url")
        call.status_events = tuple(private.get("status_events", ("ended",)))
        call.end_reason = private.get("end_reason")
        call.answered_at = private.get("answered_at")
        call.ended_at = private.get("ended_at")
        return call

    def to_row(self) -> CallRow:
        """What survives a restart: the CallLeg plus the engine's private fields."""
        return {
            "id": self.id,
            "project_id": self.project_id,
            "leg": self.call_leg(),
            "private": {
                "node_id": self.node_id,
                "segment_id": self.segment_id,
                "status_url": self.status_url,
                "status_events": list(self.status_events),
                "end_reason": self.end_reason,
                "answered_at": self.answered_at,
                "ended_at": self.ended_at,
            },
        }
