"""Call legs: a SIP dialog, its RTP session and the SDP negotiation between them.

Everything a leg does with SDP lives here: the offer of an outgoing INVITE, the answer to an
incoming one (in a 200, or early in a 183 so that ringback and early media can flow before the
call is answered), the far end's answer or early answer, re-INVITEs from the far end (hold,
unhold, a new media address) and our own re-INVITEs. The engine's core keeps the call lifecycle
and asks this module for the media side of it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from callplane.engine.calls import SUPPORTED_CODECS, Leg
from callplane.engine.swml.errors import SwmlError
from callplane.media.engine import MediaEngine
from callplane.sip import sdp
from callplane.sip.endpoint import IncomingCall, SipCall

if TYPE_CHECKING:
    from callplane.engine.calls import Call

log = logging.getLogger("callplane.engine.legs")


class LegFactory:
    """Opens legs' media and does their SDP: the engine's only user of SDP."""

    def __init__(self, media: MediaEngine, media_host: str) -> None:
        self._media = media
        self._host = media_host

    async def open(self, call: Call, codecs: list[str] | None = None) -> Leg:
        session = await self._media.open_session()
        leg = Leg(session, list(codecs or SUPPORTED_CODECS))
        call.leg = leg
        call.media = session
        # One RTP session, many interested operations (collect, record, detect): fan out.
        session.on_dtmf = call.dispatch_dtmf
        return leg

    # ------------------------------------------------------------------ outgoing

    def offer(self, leg: Leg) -> bytes:
        leg.offer = sdp.build_offer(
            self._host,
            leg.media.local_port,
            leg.codecs,
            session_id=leg.session_id,
            session_version=leg.version,
        )
        leg.local_sdp = leg.offer
        return leg.offer

    def take_answer(self, leg: Leg, answer: bytes) -> bool:
        """The far end's (early or final) answer to our offer; False when it has no usable audio."""
        if not answer or leg.offer is None:
            return False
        try:
            chosen = sdp.parse_answer(answer, leg.offer)
        except sdp.SdpError as exc:
            log.warning("unusable SDP answer: %s", exc)
            return False
        if chosen is None:
            return False
        leg.apply(chosen)
        return True

    # ------------------------------------------------------------------ incoming

    def answer_offer(self, leg: Leg, offer: bytes, *, version: int | None = None) -> bytes:
        """Our answer to an offer: the caller's INVITE (for the 183 or the 200), or a re-INVITE
        (with the next session version). The leg follows what was negotiated. Raises SwmlError
        when the offer cannot be answered; whoever received it refuses it accordingly."""
        try:
            answer, chosen = sdp.negotiate_answer(
                offer,
                self._host,
                leg.media.local_port,
                leg.preferred_codecs(),
                session_id=leg.session_id,
                session_version=leg.version if version is None else version,
            )
        except sdp.SdpError as exc:
            raise SwmlError(f"the far end's SDP is invalid: {exc}") from exc
        if chosen is None:
            raise SwmlError("no codec in common with the far end")
        if version is not None:
            leg.version = version
        leg.apply(chosen)
        leg.local_sdp = answer
        return answer

    async def answer_incoming(self, call: Call, incoming: IncomingCall, *, early: bool) -> None:
        """Answer an inbound call with SDP: in a 183 (early media) or in the 200."""
        if incoming.remote_sdp is None:
            await incoming.reject(488, "Not Acceptable Here")
            raise SwmlError("the call cannot be answered: its INVITE has no SDP offer")
        leg = call.leg or await self.open(call)  # the engine opens it when the INVITE comes
        if leg.local_sdp is None:
            try:
                self.answer_offer(leg, incoming.remote_sdp)
            except SwmlError:
                await incoming.reject(488, "Not Acceptable Here")
                raise
        assert leg.local_sdp is not None
        if early:
            await incoming.ringing(leg.local_sdp)
        else:
            await incoming.answer(leg.local_sdp)

    # ------------------------------------------------------------------ re-INVITEs

    def watch(self, call: Call, sip_call: SipCall) -> None:
        """Answer the far end's re-INVITEs (hold, unhold, a new address) on this leg."""
        sip_call.on_offer = lambda offer: self.reoffer(call, offer)

    def reoffer(self, call: Call, offer: bytes) -> bytes | None:
        """A re-INVITE from the far end: answer it and follow it (RFC 3264 §8). A far end
        that puts us on hold (a=sendonly or inactive) gets recvonly / inactive, and we stop
        sending to it until it takes us off hold. None refuses the offer (488); the session
        stays as it was."""
        leg = call.leg
        if leg is None:
            return None
        try:
            answer = self.answer_offer(leg, offer, version=leg.version + 1)
        except SwmlError as exc:
            log.info("call %s: re-INVITE refused: %s", call.id, exc)
            return None
        assert leg.chosen is not None
        log.info(
            "call %s: the far end re-negotiated media: we are %s", call.id, leg.chosen.direction
        )
        return answer
