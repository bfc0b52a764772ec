"""A call's key presses: DTMF from RFC 4733 events and from in-band tones, each press reported
once, to every operation that listens (collect, detect).

One per call, so that in-band detection never restarts between operations and the RFC 4733 copy
of a key whose in-band copy ended one operation (RFC 4733 digits are reported at key release,
~100 ms later) is still recognised as a copy by the next.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from callplane.media.dsp.dtmf import DtmfDetector, DtmfKeyDown
from callplane.media.sources import FRAME_SECONDS

if TYPE_CHECKING:
    from callplane.engine.calls import Call
    from callplane.media.engine import TickFrames

log = logging.getLogger("callplane.engine.keypad")

# An RFC 4733 event and an in-band tone of the same digit starting this close are one key press.
DUPLICATE_WINDOW = 0.3
_FRAME_S = FRAME_SECONDS


class _DigitMerger:
    """Pairs digits from the two sources; a digit is a duplicate when the *other* source reported
    the same digit, not yet paired, starting within `window` seconds."""

    def __init__(self, window: float = DUPLICATE_WINDOW) -> None:
        self._window = window
        self._unpaired: deque[tuple[str, str, float]] = deque()  # (source, digit, start)

    def accept(self, source: str, digit: str, start: float) -> bool:
        # Forget entries no later digit can pair with: the two copies of a key press have
        # nearly the same start, so anything several windows old is history.
        while self._unpaired and self._unpaired[0][2] < start - 4 * self._window:
            self._unpaired.popleft()
        for index, (other, seen, at) in enumerate(self._unpaired):
            if other != source and seen == digit and abs(at - start) <= self._window:
                del self._unpaired[index]
                return False
        self._unpaired.append((source, digit, start))
        return True


class KeyPresses:
    """A call's key presses, from both paths, each reported once, to every operation listening.

    One per call, created by the call's first collect or digit detect and kept for the rest of
    the call:

    * its in-band detector never restarts, so a tone still sounding when one collect ends and
      the next begins (SWML prompt after prompt) is not detected a second time;
    * its merger spans collects, so the RFC 4733 copy of a key whose in-band copy ended the
      previous collect (it arrives at key release, ~100 ms later) is still recognised as a copy.

    It lives in `call.extensions` and goes away with the call and its RTP session.

    Its clock is the media clock's tick number (``TickFrames.tick``, 50 per second): in-band
    key presses are dated by the tick their tone began in, RFC 4733 ones (reported at key
    release) by the latest tick minus the event's duration, so a test drives it with
    TickFrames alone.
    """

    def __init__(self, call: Call) -> None:
        self.call = call
        self.subscribers: list[Callable[[str], None]] = []
        self._merger = _DigitMerger()
        self._detector = DtmfDetector()
        self._next_tick: int | None = None  # the tick after the latest one fed

    @classmethod
    def for_call(cls, call: Call) -> KeyPresses:
        hub = call.extensions.get(cls.__name__)
        if isinstance(hub, KeyPresses):
            return hub
        hub = cls(call)
        call.extensions[cls.__name__] = hub
        call.dtmf_listeners.append(hub.on_rfc4733)
        if call.media is not None:
            call.media.add_listener(hub.on_frame)
        return hub

    def on_rfc4733(self, digit: str, duration_ms: int) -> None:
        # RFC 4733 digits are reported at key release: the press began `duration` earlier.
        start = self._now() - duration_ms / 1000.0
        log.debug("call %s: RFC 4733 digit %r (%d ms)", self.call.id, digit, duration_ms)
        self._deliver("rfc4733", digit.upper(), start)

    def _now(self) -> float:
        """The media clock: the end of the latest tick fed, in seconds."""
        return (self._next_tick or 0) * _FRAME_S

    def on_frame(self, frames: TickFrames) -> None:
        self._next_tick = frames.tick + 1
        # The detector runs even while no collect listens, so its view of a held key stays
        # continuous (silence costs next to nothing: the detector skips quiet frames).
        for event in self._detector.feed(frames.inbound, frames.tick * _FRAME_S):
            if isinstance(event, DtmfKeyDown):
                log.debug("call %s: in-band digit %r", self.call.id, event.digit)
                self._deliver("inband", event.digit, event.t)

    def _deliver(self, source: str, digit: str, start: float) -> None:
        if not self._merger.accept(source, digit, start):
            log.debug("call %s: %s digit %r is a duplicate", self.call.id, source, digit)
            return
        for subscriber in tuple(self.subscribers):
            try:
                subscriber(digit)
            except Exception:
                # The media session drops a listener that raises; one broken collect must not
                # cost the whole call its in-band digits.
                log.exception("call %s: a listener failed on digit %r", self.call.id, digit)
