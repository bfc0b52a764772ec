"""Two calls bridged: each party hears the other, through one media mix group.

A bridge has an owner (the call whose `connect` or transfer made it) and a peer. It ends when
either party hangs up or when `calling.disconnect` splits it; `ended` says which. It knows
nothing of SIP or SWML: the connect operation decides what each end does next.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from callplane.engine.calls import BridgeEnd
from callplane.engine.facade import CommandError

if TYPE_CHECKING:
    from callplane.engine.calls import Call
    from callplane.media.engine import MediaEngine, MixGroup

log = logging.getLogger("callplane.engine.bridge")


class Bridge:
    def __init__(self, media: MediaEngine, owner: Call, peer: Call) -> None:
        for call in (owner, peer):
            if call.media is None or call.media.closed:
                raise CommandError(422, "invalid_state", f"call {call.id} has no media", "id")
            if call.bridge is not None:
                raise CommandError(422, "invalid_state", f"call {call.id} is already bridged", "id")
        self.owner = owner
        self.peer = peer
        self._group: MixGroup = media.mix_group()
        self.ended: asyncio.Future[BridgeEnd] = asyncio.get_running_loop().create_future()
        # An operation (connect, transfer) owns the bridge and decides what each party does when
        # it ends. Once the owner's leg is replaced (a REFER from its far end) nobody does: a
        # party that hangs up then takes the other one down with it.
        self.owned = False
        self.owner_left: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._join(owner)
        self._join(peer)
        owner.bridge = peer.bridge = self

    def _join(self, call: Call) -> None:
        assert call.media is not None
        self._group.add(call.media)

    def set_one_way(self, *, listener: Call) -> None:
        """Only `listener` hears the other party, who hears nothing of it: a callee's early
        media relayed to a caller who is not connected yet."""
        talker = self.other(listener)
        if listener.media is not None:
            self._group.set(listener.media, hears=True, speaks=False)
        if talker.media is not None:
            self._group.set(talker.media, hears=False, speaks=True)

    def set_both_ways(self) -> None:
        for call in (self.owner, self.peer):
            if call.media is not None and call.media in self._group:
                self._group.set(call.media, hears=True, speaks=True)

    def other(self, call: Call) -> Call:
        return self.peer if call is self.owner else self.owner

    @property
    def active(self) -> bool:
        return not self.ended.done()

    def replace(self, old: Call, new: Call) -> None:
        """Swap one party for another (a REFER from the far end of `old` hands its place on to
        the Refer-To target): the other party now hears `new`."""
        if new.media is None:
            raise CommandError(422, "invalid_state", f"call {new.id} has no media", "id")
        if old.media is not None:
            self._group.remove(old.media)
        old.bridge = None
        if old is self.owner:
            self.owner = new
            self.owned = False
            if not self.owner_left.done():
                self.owner_left.set_result(None)
        else:
            self.peer = new
        self._join(new)
        new.bridge = self

    def end(self, how: BridgeEnd) -> None:
        """Split the bridge; both calls go on alone (or are hung up by whoever asked)."""
        if self.ended.done():
            return
        self._group.close()
        for call in (self.owner, self.peer):
            if call.bridge is self:
                call.bridge = None
        log.info("bridge %s <-> %s ended: %s", self.owner.id, self.peer.id, how)
        self.ended.set_result(how)

    def __repr__(self) -> str:
        return f"<Bridge {self.owner.id} <-> {self.peer.id} {'up' if self.active else 'ended'}>"
