"""SIP signalling: sans-IO core (message, transaction, dialog, auth, sdp) and the asyncio
`SipEndpoint` the engine uses (see docs/architecture.md, "engine -> sip")."""

from .endpoint import (
    Answered,
    CallState,
    Ended,
    Failed,
    IncomingCall,
    IncomingRefer,
    OutgoingCall,
    OutgoingRefer,
    ReferProgress,
    Referred,
    Reinvited,
    Ringing,
    SipCall,
    SipCallEvent,
    SipEndpoint,
    SipRequestError,
    Trying,
)

__all__ = [
    "Answered",
    "CallState",
    "Ended",
    "Failed",
    "IncomingCall",
    "IncomingRefer",
    "OutgoingCall",
    "OutgoingRefer",
    "ReferProgress",
    "Referred",
    "Reinvited",
    "Ringing",
    "SipCall",
    "SipCallEvent",
    "SipEndpoint",
    "SipRequestError",
    "Trying",
]
