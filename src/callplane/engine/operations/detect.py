"""`calling.detect` / `calling.detect.stop` and SWML `detect_machine` (reference §4.13-§4.14, §5.4,
§7.3; swml.md `detect_machine`): answering-machine, fax-tone and DTMF detection on the audio the
far end sends.

One :class:`DetectOperation` runs the detectors of `callplane.media.dsp` on the far end's audio
of every media tick (`RtpSession.add_listener`, ``TickFrames.inbound``) and, for digits, on RFC
4733 events (`Call.dtmf_listeners`). Every result is one ``calling.call.detect`` event whose
params are ``{control_id, segment_id, detect: {type, params: {event, beep?}}}``.

Events and when the operation ends
----------------------------------
* ``machine``: the :class:`~callplane.media.dsp.amd.AmdDetector` sequence — ``HUMAN``,
  ``MACHINE`` or ``UNKNOWN``; with ``detect_message_end`` (REST default **true**, SWML default
  **false**, reference §9 #20) ``MACHINE`` is followed by ``READY`` when the greeting is over
  (``beep`` is always present on READY: true when it was a beep that ended the greeting);
  ``detect_interruptions`` adds ``NOT_READY`` / ``READY`` pairs until ``timeout``. ``MACHINE``
  carries ``beep: true`` when a beep decided it. The detector ends at its last outcome, so the
  operation ends then, with ``finished``.
* ``fax``: the first tone heard (``CNG`` or ``CED``, restricted by ``tone``; omitted = either),
  then ``finished``: a RELAY DetectAction ends at its first fax result (§5.4), and there is
  nothing more for a fax detector to say.
* ``digit``: every digit the far end presses (filtered by ``digits``; ``""`` or omitted = any),
  from RFC 4733 events and from in-band tones alike (the call's `KeyPresses`, shared with
  collect, which reports a press that arrives both ways once), until ``timeout`` or stop, then
  ``finished``.
* ``timeout`` (default 30 s; 0 = no limit) ends any detector with ``finished``; a machine detector
  that has not decided yet says ``UNKNOWN`` first (``timeout`` is the reference's "max run time",
  and an undecided AMD outcome is UNKNOWN). ``calling.detect.stop`` and the end of the call do the
  same. Every detect therefore ends with exactly one ``finished`` event.

Time
----
The detectors run on the media clock: the operation's *n*-th tick begins at n x 20 ms. The
engine delivers a tick every 20 ms whether or not the far end sends RTP (silence where nothing
arrived, re-cut from any ptime), so silence-based timers (initial_timeout, end-silence, READY)
run on through silence suppression, and the overall ``timeout`` counts ticks too (a test can
drive a detect with TickFrames alone). `detect_ms` (SWML) is read on the same clock.

SWML `detect_machine`
---------------------
``detectors`` ("amd,fax") picks the detectors; both run side by side on one operation and the
first conclusive result wins: a fax tone ends AMD, an AMD outcome ends fax detection. ``tone``
defaults to ``CED`` as the schema says (the answer tone a fax machine plays when we call it).
When a CNG search runs beside AMD, AMD's beep rule would call every 1100 Hz CNG burst a MACHINE
0.12 s into it, before the CNG detector (which needs the whole 0.5 s burst) can speak; so a
beep-decided MACHINE is held back for 0.75 s and dropped if a fax tone is recognised meanwhile.
``wait: true`` blocks the script until the operation ends; ``wait: false`` returns at once with
``detect_result: "detecting"`` and writes the final variables into the script's ``vars`` when the
operation ends. Variables: ``detect_result`` = ``machine`` | ``human`` | ``fax`` | ``unknown`` |
``detecting`` | ``error``, ``detect_machine_beep`` = ``"true"`` | ``"false"``, ``detect_ms`` = the
decision's time (ms since detection started) as a string — script variables are strings.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from callplane.engine.calls import CallStatus
from callplane.engine.facade import CommandError
from callplane.engine.keypad import KeyPresses
from callplane.engine.operations.base import (
    Emit,
    Operation,
    control_id_of,
    lookup,
    register,
    register_started,
    require_answered,
)
from callplane.engine.services import CommandHandler, Services, SwmlMethod
from callplane.engine.swml.errors import SwmlError
from callplane.media.dsp import (
    AmdDetector,
    AmdEvent,
    FaxToneDetector,
    ToneDetected,
)
from callplane.media.dsp.amd import FINISHED, HUMAN, MACHINE, READY, UNKNOWN
from callplane.media.sources import FRAME_SECONDS

if TYPE_CHECKING:
    from callplane.engine.calls import Call
    from callplane.media.engine import TickFrames

log = logging.getLogger("callplane.engine.detect")

DEFAULT_TIMEOUT = 30.0
# Longest a CNG burst takes to be recognised after AMD's beep rule fired on it: the beep is
# reported 0.12 s into the burst, CNG at its end (≤ 0.62 s) plus the tracker's one-frame bridge.
_FAX_HOLD = 0.75


class DetectOperation(Operation):
    kind = "detect"
    event_type = "calling.call.detect"
    # Results are `report`s, not state changes: the only transition is the end.
    initial_state = "detecting"
    transitions: ClassVar[Mapping[str, frozenset[str]]] = {
        "detecting": frozenset({"finished", "error"}),
    }

    def __init__(
        self,
        call: Call,
        control_id: str,
        status_url: str | None,
        emit: Emit,
        *,
        finished_type: str,
        amd: AmdDetector | None = None,
        fax: FaxToneDetector | None = None,
        digits: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(call, control_id, status_url, emit)
        # The detect `type` the closing `finished` event names (machine when AMD runs).
        self.finished_type = finished_type
        self._amd = amd
        self._fax = fax
        # None = no digit detection; "" = any digit; else the set of digits to report.
        self._digits = None if digits is None else digits.upper()
        self._keypad: KeyPresses | None = None
        # 0 = no limit; else the tick count at which the detect times out.
        self._timeout_ticks = round(timeout / FRAME_SECONDS) if timeout > 0 else 0
        self._frames = 0
        self._listening = False
        # AMD events held back while a fax tone may still be recognised (see module docstring).
        self._held: list[AmdEvent] = []
        self._hold_until: float | None = None
        # The outcome, for SWML's variables.
        self.result: str | None = None  # machine | human | fax | unknown | error
        self.result_ms: int | None = None
        self.beep = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def elapsed(self) -> float:
        """The frame clock: the start of the next frame, seconds since the operation started."""
        return self._frames * FRAME_SECONDS

    def start(self) -> None:
        session = self.call.media
        if session is None:
            raise CommandError(422, "invalid_state", "the call has no media session", "id")
        session.add_listener(self._on_frame)
        if self._digits is not None:
            self._keypad = KeyPresses.for_call(self.call)
            self._keypad.subscribers.append(self._report_digit)
        self._listening = True

    async def stop(self) -> None:
        """`calling.detect.stop` and the end of the call: UNKNOWN if undecided, then finished."""
        self._halt()

    def _halt(self) -> None:
        if self.is_terminal:
            return
        self._release_held()
        if self._amd is not None and not self.is_terminal:
            for ev in self._amd.stop(self.elapsed):
                self._on_amd(ev)
        self._end()

    def _end(self, state: str = "finished") -> None:
        if self.is_terminal:
            return
        self._detach()
        if self.result is None:
            self.result = "error" if state == "error" else "unknown"
            self.result_ms = round(self.elapsed * 1000)
        self._report(self.finished_type, {"event": state})
        self.finish(state)

    def _detach(self) -> None:
        """Stop listening: the call's session and digit fan-out outlive the operation."""
        if self._listening:
            self._listening = False
            if self.call.media is not None:
                self.call.media.remove_listener(self._on_frame)
            if self._keypad is not None and self._report_digit in self._keypad.subscribers:
                self._keypad.subscribers.remove(self._report_digit)

    def _report(self, detect_type: str, params: dict[str, Any]) -> None:
        self.report(
            {
                "segment_id": self.call.segment_id,
                "detect": {"type": detect_type, "params": params},
            }
        )

    # ------------------------------------------------------------------ audio

    def _on_frame(self, frames: TickFrames) -> None:
        if self.is_terminal:
            return
        self._feed(frames)
        if not self.is_terminal and self._timeout_ticks and self._frames >= self._timeout_ticks:
            self._halt()

    def _feed(self, frames: TickFrames) -> None:
        frame = frames.inbound
        t = self.elapsed
        self._frames += 1
        try:
            if self._fax is not None:
                for tone in self._fax.feed(frame, t):
                    if isinstance(tone, ToneDetected):
                        self._on_fax(tone.tone)
                        return
            if self._amd is not None:
                for ev in self._amd.feed(frame, t):
                    self._on_amd(ev)
                    if self.is_terminal:
                        return
            if self._hold_until is not None and self.elapsed >= self._hold_until:
                self._release_held()
        except Exception:
            # A listener that raises is dropped by the session; end visibly instead of hanging.
            log.exception("detect %s on call %s failed", self.control_id, self.call.id)
            self._end("error")

    def _on_fax(self, tone: str) -> None:
        if self._held:
            log.debug("detect %s: %s, not the beep AMD took it for", self.control_id, tone)
        self._held.clear()  # a beep-decided MACHINE that was really a CNG burst
        self._hold_until = None
        self.result = "fax"
        self.result_ms = round(self.elapsed * 1000)
        self._report("fax", {"event": tone})
        self._end()

    def _on_amd(self, ev: AmdEvent) -> None:
        beep_decided = ev.event == MACHINE and self._amd is not None and self._amd.beep
        if self._held or (beep_decided and self._fax is not None):
            if not self._held:
                self._hold_until = self.elapsed + _FAX_HOLD
            self._held.append(ev)
            return
        self._emit_amd(ev)

    def _release_held(self) -> None:
        held, self._held = self._held, []
        self._hold_until = None
        for ev in held:
            self._emit_amd(ev)

    def _emit_amd(self, ev: AmdEvent) -> None:
        if ev.event == FINISHED:
            self._end()
            return
        params: dict[str, Any] = {"event": ev.event}
        if ev.event in (HUMAN, MACHINE, UNKNOWN) and self.result is None:
            self.result = ev.event.lower()
            self.result_ms = round(ev.t * 1000)
        if ev.event == MACHINE and self._amd is not None and self._amd.beep:
            params["beep"] = True
        if ev.event == READY:
            params["beep"] = ev.beep
        if ev.beep or (self._amd is not None and self._amd.beep):
            self.beep = True
        self._report("machine", params)

    # ------------------------------------------------------------------ digits

    def _wanted(self, digit: str) -> bool:
        return self._digits is not None and (not self._digits or digit.upper() in self._digits)

    def _report_digit(self, digit: str) -> None:
        if not self.is_terminal and self._wanted(digit):
            self._report("digit", {"event": digit})

    # ------------------------------------------------------------------ SWML

    def swml_vars(self) -> dict[str, Any]:
        return {
            "detect_result": self.result or "unknown",
            "detect_machine_beep": "true" if self.beep else "false",
            "detect_ms": str(self.result_ms if self.result_ms is not None else 0),
        }


# ---------------------------------------------------------------------- parameters


def _number(value: Any, default: float, name: str) -> float:
    """A number from canonical REST params or expanded SWML (where `${...}` gives strings)."""
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SwmlError(f"detect_machine {name} must be a number, not {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise SwmlError(f"detect_machine {name} must be a number >= 0, not {value!r}")
    return number


def _flag(value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def _amd(p: Mapping[str, Any], *, detect_message_end: bool, timeout: float) -> AmdDetector:
    end_silence = _number(p.get("end_silence_timeout"), 1.0, "end_silence_timeout")
    ready = p.get("machine_ready_timeout")
    return AmdDetector(
        initial_timeout=_number(p.get("initial_timeout"), 4.5, "initial_timeout"),
        end_silence_timeout=end_silence,
        machine_ready_timeout=None
        if ready is None or ready == ""
        else _number(ready, end_silence, "machine_ready_timeout"),
        machine_voice_threshold=_number(
            p.get("machine_voice_threshold"), 1.25, "machine_voice_threshold"
        ),
        machine_words_threshold=int(
            _number(p.get("machine_words_threshold"), 6, "machine_words_threshold")
        ),
        detect_interruptions=_flag(p.get("detect_interruptions"), False),
        detect_message_end=_flag(p.get("detect_message_end"), detect_message_end),
        # Not in the reference's schema but in RELAY's detect_answering_machine: READY waits for
        # the beep (up to the detector's beep_timeout) instead of the end of the greeting.
        wait_for_beep=_flag(p.get("wait_for_beep"), False),
        # The operation's tick count is authoritative; this only keeps the detector's own end
        # consistent with it (0 = no limit).
        timeout=timeout if timeout > 0 else math.inf,
    )


# ---------------------------------------------------------------------- REST


async def _detect(services: Services, call: Call, p: dict[str, Any]) -> None:
    require_answered(call, "listened to")
    if call.media is None:
        raise CommandError(422, "invalid_state", "the call has no media session", "id")
    detect = p["detect"]
    kind = str(detect["type"])
    dp: Mapping[str, Any] = detect.get("params") or {}
    timeout = float(p["timeout"]) if p.get("timeout") is not None else DEFAULT_TIMEOUT
    amd: AmdDetector | None = None
    fax: FaxToneDetector | None = None
    digits: str | None = None
    if kind == "machine":
        amd = _amd(dp, detect_message_end=True, timeout=timeout)  # REST default (§9 #20)
    elif kind == "fax":
        fax = FaxToneDetector(dp.get("tone") or None)
    elif kind == "digit":
        digits = str(dp.get("digits") or "")
    else:  # the api validates the type; a new one must not be half-run
        raise CommandError(422, "invalid_parameter", f"unknown detect type {kind!r}", "detect")
    op = DetectOperation(
        call,
        # The client docs' examples omit control_id; the reference requires one.
        control_id_of(p),
        p.get("status_url"),
        services.emit,
        finished_type=kind,
        amd=amd,
        fax=fax,
        digits=digits,
        timeout=timeout,
    )
    register_started(call, op, op.start)


async def _stop(services: Services, call: Call, p: dict[str, Any]) -> None:
    await lookup(call, DetectOperation, p).stop()


# ---------------------------------------------------------------------- SWML


async def swml_detect_machine(
    services: Services, call: Call, params: dict[str, Any]
) -> dict[str, Any] | None:
    """SWML `detect_machine`: AMD and/or fax detection, blocking unless `wait` is false."""
    names = [d.strip().lower() for d in str(params.get("detectors") or "amd,fax").split(",")]
    chosen = {d for d in names if d}
    unknown = chosen - {"amd", "fax"}
    if unknown or not chosen:
        raise SwmlError(
            f"detect_machine detectors must list amd and/or fax, not {params.get('detectors')!r}"
        )
    tone = str(params.get("tone") or "CED").upper()
    if tone not in ("CED", "CNG"):
        raise SwmlError(f"detect_machine tone must be CED or CNG, not {params.get('tone')!r}")
    if call.status is not CallStatus.ANSWERED:
        await services.answer(call)  # detection needs the far end's audio
    if call.media is None:
        return {"detect_result": "error", "detect_machine_beep": "false", "detect_ms": "0"}
    timeout = _number(params.get("timeout"), DEFAULT_TIMEOUT, "timeout")
    op = DetectOperation(
        call,
        f"swml-detect-{uuid.uuid4()}",
        params.get("status_url"),
        services.emit,
        finished_type="machine" if "amd" in chosen else "fax",
        # SWML's detect_message_end defaults to false, unlike REST (reference §9 #20).
        amd=_amd(params, detect_message_end=False, timeout=timeout) if "amd" in chosen else None,
        fax=FaxToneDetector(tone) if "fax" in chosen else None,
        timeout=timeout,
    )
    register(call, op)
    op.start()
    if not _flag(params.get("wait"), True):
        interpreter = call.swml

        def publish(_: asyncio.Future[str]) -> None:
            # The script went on; its later methods read the result from vars.
            if interpreter is not None:
                interpreter.vars.update(op.swml_vars())

        op.done.add_done_callback(publish)
        return {"detect_result": "detecting"}
    try:
        await op.done
    finally:
        await op.stop()
    return op.swml_vars()


COMMANDS: dict[str, CommandHandler] = {
    "calling.detect": _detect,
    "calling.detect.stop": _stop,
}
SWML_METHODS: dict[str, SwmlMethod] = {"detect_machine": swml_detect_machine}
