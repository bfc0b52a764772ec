"""`calling.denoise` / `calling.denoise.stop` and SWML `denoise` / `stop_denoise`: noise
reduction of a call's inbound audio (reference §4.19; swml.md `denoise`, `stop_denoise`).

The filter is RNNoise (:mod:`callplane.media.rnnoise`), set as the call's RTP session's
``inbound_filter``: the media clock applies it to each received frame as it leaves the jitter
buffer, before anything else sees it, so recordings, recognisers, taps, streams and a bridged
peer all get the denoised audio. At most one filter per call: a second `denoise` changes
nothing. It costs about 1 ms of CPU per call per 20 ms tick (bench/bench_stream.py), so the
number of calls denoised at once is capped (``EngineConfig.max_denoised_calls``); past the cap
the command answers 422.

Events: ``calling.call.denoise`` ``{denoised: true|false}`` (no status_url: the reference
defines no webhook parameter; the events are in the call's event log). SWML sets
``denoise_result`` (``on`` | ``failed``; ``off`` after `stop_denoise`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from callplane.engine.calls import CallStatus
from callplane.engine.facade import CommandError
from callplane.engine.operations.base import Emit, Operation, register, require_answered, unregister
from callplane.engine.services import CommandHandler, Services, SwmlMethod
from callplane.media.dsp.dtmf import DtmfDetector
from callplane.media.rnnoise import Denoiser, RnnoiseUnavailable
from callplane.media.sources import Frame

if TYPE_CHECKING:
    from callplane.engine.calls import Call

log = logging.getLogger("callplane.engine.denoise")

CONTROL_ID = "denoise"  # one filter per call: a fixed key among the call's operations

# The calls being denoised now, process-wide (the CPU cap).
_active: set[str] = set()
# Frames kept unfiltered after a key's tone was last seen (its tail and the detector's hangover).
DTMF_HOLD_FRAMES = 3


class DtmfSafeDenoiser:
    """The call's inbound filter: RNNoise, except while a DTMF tone sounds.

    RNNoise takes a key's steady tone pair for noise and removes it (10 digits in, none detected
    after it), which would deafen in-band DTMF detection (collect, detect, streams' `dtmf`).
    Frames holding a tone pair pass unchanged; RNNoise still sees them, so its state stays
    continuous. The DTMF detector costs ~25 µs per frame against RNNoise's ~1 ms.
    """

    def __init__(self, denoiser: Denoiser) -> None:
        self.denoiser = denoiser
        self._detector = DtmfDetector()
        self._t = 0.0
        self._hold = 0

    def __call__(self, frame: Frame) -> None:
        raw = frame.copy()
        self._detector.feed(raw, self._t)
        self._t += 0.020
        self.denoiser.process(frame)
        if self._detector.tone_present:
            self._hold = DTMF_HOLD_FRAMES
        if self._hold:
            self._hold -= 1
            frame[:] = raw

    def close(self) -> None:
        self.denoiser.close()


class DenoiseOperation(Operation):
    kind = "denoise"
    event_type = "calling.call.denoise"
    initial_state = "on"
    transitions: ClassVar[Mapping[str, frozenset[str]]] = {"on": frozenset({"off"})}
    # It rewrites the call's inbound audio: a fax (which needs it untouched) and denoise exclude
    # each other with a 409, whichever comes second.
    writes_audio = True

    def __init__(self, call: Call, emit: Emit, denoiser: Denoiser) -> None:
        super().__init__(call, CONTROL_ID, None, emit)
        self.filter = DtmfSafeDenoiser(denoiser)

    def begin(self) -> None:
        session = self.call.media
        if session is None or session.closed:
            raise CommandError(422, "invalid_state", "the call has no media session", "id")
        session.inbound_filter = self.filter
        _active.add(self.call.id)
        self._emit(self, {"denoised": True})

    async def stop(self) -> None:
        if self.is_terminal:
            return
        session = self.call.media
        if session is not None and session.inbound_filter is self.filter:
            session.inbound_filter = None
        self.filter.close()
        _active.discard(self.call.id)
        self._emit(self, {"denoised": False})
        self.finish("off")


def active_calls() -> int:
    return len(_active)


def start_denoise(services: Services, call: Call) -> DenoiseOperation:
    """Denoise the call's inbound audio (nothing changes when it already is)."""
    running = call.operations.get((DenoiseOperation.kind, CONTROL_ID))
    if isinstance(running, DenoiseOperation):
        return running
    cap = services.config.max_denoised_calls
    if len(_active) >= cap:
        raise CommandError(
            422,
            "invalid_state",
            f"{cap} calls are denoised already, the most this server allows at once",
            "id",
        )
    try:
        denoiser = Denoiser()
    except RnnoiseUnavailable as exc:
        raise CommandError(
            501, "not_implemented", f"noise reduction is not available: {exc}", None
        ) from None
    op = DenoiseOperation(call, services.emit, denoiser)
    register(call, op)
    try:
        op.begin()
    except CommandError:
        unregister(call, op)
        denoiser.close()
        raise
    return op


async def stop_denoise(call: Call) -> bool:
    running = call.operations.get((DenoiseOperation.kind, CONTROL_ID))
    if not isinstance(running, DenoiseOperation):
        return False
    await running.stop()
    return True


async def _denoise(services: Services, call: Call, p: dict[str, Any]) -> None:
    require_answered(call, "denoised")
    start_denoise(services, call)


async def _stop(services: Services, call: Call, p: dict[str, Any]) -> None:
    await stop_denoise(call)


async def swml_denoise(
    services: Services, call: Call, params: dict[str, Any]
) -> dict[str, Any] | None:
    if call.status is not CallStatus.ANSWERED:
        await services.answer(call)
    try:
        start_denoise(services, call)
    except CommandError as exc:
        log.warning("denoise on call %s: %s", call.id, exc)
        return {"denoise_result": "failed"}
    return {"denoise_result": "on"}


async def swml_stop_denoise(
    services: Services, call: Call, params: dict[str, Any]
) -> dict[str, Any] | None:
    await stop_denoise(call)
    return {"denoise_result": "off"}


COMMANDS: dict[str, CommandHandler] = {
    "calling.denoise": _denoise,
    "calling.denoise.stop": _stop,
}
SWML_METHODS: dict[str, SwmlMethod] = {
    "denoise": swml_denoise,
    "stop_denoise": swml_stop_denoise,
}
