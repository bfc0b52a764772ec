"""`calling.record` (+ pause/resume/stop) and SWML `record`, `record_call`, `stop_record_call`:
recording a call's audio to a file (reference §4.9, §4.10, §5.2, §7.3, §9 items 19 and 21).

One operation class, `RecordOperation`, serves all of them; the surfaces differ only in their
defaults (§9.19) and in how they wait:

* REST `calling.record`: mp3, direction speak, initial_timeout 4.0, end_silence_timeout 0.5,
  terminators "#", max_length 0, beep false, stereo false;
* SWML `record` (foreground, the script waits): wav, speak, 4.0, 5.0, "#"; sets ``record_url``
  and ``record_result``;
* SWML `record_call` (background): wav, both, 0, 0, ""; sets ``record_call_url``,
  ``record_call_result`` and ``record_control_id``; `stop_record_call` sets
  ``stop_record_call_result`` and by default stops the last `record_call` still running.

States: ``starting`` (internal, no event: the optional beep plays) -> ``recording`` <->
``paused`` -> ``finished`` | ``no_input`` | ``error``.

Events (``calling.call.record``)
--------------------------------
The reference has two callback layouts (§9.21): REST and SWML `record` put ``url``/``duration``
/``size`` flat in ``params``; SWML `record_call` nests them in ``params.record``. callplane emits
ONE layout for every surface, carrying both, so a consumer written for either works::

    {control_id, state, recording_id, url, start_time,
     duration, size, end_time,                                   # finished / no_input
     pause_behavior,                                             # paused
     record: {audio: {format, direction, stereo},
              url, format, duration, size}}                      # duration/size when final

``url`` is on every event (the recording's id is chosen when it starts), but it serves the file
only once the recording is final (404 while it is being written). ``error`` carries ``reason``.

Timing
------
The media clock's ticks (one :class:`~callplane.media.engine.TickFrames` per 20 ms, whether or
not the far end sends RTP) drive the file and the stop conditions, which count ticks, never
wall-clock time. Speech is judged on the recorded direction(s): the tick's ``inbound`` frame
(the party's voice; our own speak-direction playbacks are recorded but are not the party
speaking) and its ``outbound`` frame. While paused the voice-activity timers are frozen
(paused audio is not the party's silence); ``max_length`` counts what goes into the file, so
a ``silence`` pause counts and a ``skip`` pause does not. A stop decided inside the media
listener detaches the recording at once (so the file ends exactly there) and finalises it on
the next loop iteration, outside the clock's tick.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

import soundfile

from callplane.engine.calls import CallStatus
from callplane.engine.facade import CommandError
from callplane.engine.operations.base import (
    Emit,
    Operation,
    control_id_of,
    lookup,
    named_or_latest,
    register,
    require_answered,
)
from callplane.engine.services import CommandHandler, Services, SwmlMethod
from callplane.engine.swml.errors import SwmlError, SwmlMethodNotSupported
from callplane.media.dsp.vad import Vad
from callplane.media.recorder import (
    PauseBehavior,
    Recorder,
    RecorderError,
    RecordingResult,
    RecordingTimers,
    beep,
    repair_wav,
)
from callplane.media.sources import FRAME_SAMPLES, SAMPLE_RATE
from callplane.store import RecordingRow, Store

if TYPE_CHECKING:
    from callplane.engine.calls import Call
    from callplane.media.engine import Playback, TickFrames
    from callplane.media.recorder import RecordDirection, RecordFormat

log = logging.getLogger("callplane.engine.record")

TICKS_PER_SECOND = SAMPLE_RATE // FRAME_SAMPLES  # 50
FinalState = Literal["finished", "no_input"]

# Start order of recordings in this process: `stop_record_call` without a control_id stops the
# most recently started `record_call`.


@dataclass(frozen=True)
class RecordSettings:
    """One recording's parameters with every default applied (reference §5.2 / §9.19)."""

    format: RecordFormat
    direction: RecordDirection
    stereo: bool
    beep: bool
    initial_timeout: float
    end_silence_timeout: float
    max_length: float
    terminators: str
    input_sensitivity: float

    def describe(self) -> dict[str, Any]:
        return {"format": self.format, "direction": self.direction, "stereo": self.stereo}


REST_DEFAULTS: Mapping[str, Any] = {
    "format": "mp3",
    "direction": "speak",
    "stereo": False,
    "beep": False,
    "initial_timeout": 4.0,
    "end_silence_timeout": 0.5,
    "max_length": 0.0,
    "terminators": "#",
    "input_sensitivity": 44.0,
}
SWML_RECORD_DEFAULTS: Mapping[str, Any] = {
    **REST_DEFAULTS,
    "format": "wav",
    "end_silence_timeout": 5.0,
}
SWML_RECORD_CALL_DEFAULTS: Mapping[str, Any] = {
    **REST_DEFAULTS,
    "format": "wav",
    "direction": "both",
    "initial_timeout": 0.0,
    "end_silence_timeout": 0.0,
    "terminators": "",
}


class RecordOperation(Operation):
    kind = "record"
    event_type = "calling.call.record"
    # "starting" is internal (the beep plays) and emits no event: the first event is `recording`.
    initial_state = "starting"
    transitions: ClassVar[Mapping[str, frozenset[str]]] = {
        "starting": frozenset({"recording", "finished", "no_input", "error"}),
        "recording": frozenset({"paused", "finished", "no_input", "error"}),
        "paused": frozenset({"recording", "finished", "no_input", "error"}),
    }

    def __init__(
        self,
        call: Call,
        control_id: str,
        status_url: str | None,
        emit: Emit,
        *,
        services: Services,
        settings: RecordSettings,
        background: bool = False,
    ) -> None:
        super().__init__(call, control_id, status_url, emit)
        self._services = services
        self.settings = settings
        # Started by SWML `record_call`: what `stop_record_call` without a control_id stops.
        self.background = background
        self.recording_id = str(uuid.uuid4())
        self.url = services.config.recording_url(self.recording_id)
        self.path = services.config.recordings_dir / f"{self.recording_id}.{settings.format}"
        self.created_at = time.time()
        self.start_time: float | None = None
        self.end_time: float | None = None
        self.result: RecordingResult | None = None
        self._recorder: Recorder | None = None
        self._beep: Playback | None = None
        self._capturing = False
        self._pending_pause: PauseBehavior | None = None
        # Which directions the voice-activity timers listen to: the recorded ones.
        self._vad_in = settings.direction in ("speak", "both")
        self._vad_out = settings.direction in ("listen", "both")
        self._vad: Vad | None = None
        self._timers: RecordingTimers | None = None
        self._max_ticks = round(settings.max_length * TICKS_PER_SECOND)
        self._ticks = 0  # ticks that went into the file (max_length)
        self._terminators = settings.terminators.upper()

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        """Open the file, register it, then beep (optionally) and start capturing."""
        s = self.settings
        try:
            if s.initial_timeout > 0 or s.end_silence_timeout > 0:
                # Only built when a timer needs it: webrtcvad is ~2 µs a frame but optional.
                self._vad = Vad(input_sensitivity=s.input_sensitivity)
                self._timers = RecordingTimers(s.initial_timeout, s.end_silence_timeout, 0.0)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._recorder = Recorder(
                self.path,
                format=s.format,
                stereo=s.stereo,
                direction=s.direction,
            )
        except (OSError, RecorderError, ValueError, ImportError) as exc:
            log.warning("record %s on call %s: %s", self.control_id, self.call.id, exc)
            self.move("error", reason=f"cannot record: {exc}", **self._base_params())
            return
        self._save_row()
        session = self.call.media
        if session is None or session.closed:
            self._fail("the call has no media session")
            return
        if s.beep:
            try:
                self._beep = session.play(beep())
            except (RuntimeError, ValueError) as exc:
                self._fail(f"cannot play the beep: {exc}")
                return
            # Capture starts after the beep's last frame went out, so the beep is not recorded.
            self._beep.done.add_done_callback(lambda _: self._begin())
        else:
            self._begin()

    def _begin(self) -> None:
        if self.state != "starting":
            return  # stopped while beeping
        session = self.call.media
        if session is None or session.closed:
            return  # the call is ending; the engine's stop() finalises the (empty) file
        session.add_listener(self._on_frame)
        self.call.dtmf_listeners.append(self._on_digit)
        self._capturing = True
        self.start_time = time.time()
        self._save_row()  # the start time, for the `finished` event if a crash cuts it short
        self.move("recording", **self._base_params())
        if self._pending_pause is not None:
            behavior, self._pending_pause = self._pending_pause, None
            self.move("paused", pause_behavior=behavior, **self._base_params())

    # ------------------------------------------------------------------ media

    def _on_frame(self, frames: TickFrames) -> None:
        """One media tick: into the file, then the stop conditions."""
        rec = self._recorder
        if not self._capturing or rec is None:
            return
        paused = rec.paused
        try:
            rec.feed(frames)
        except (OSError, RecorderError) as exc:
            self._detach()
            asyncio.get_running_loop().call_soon(self._fail, f"cannot write: {exc}")
            return
        final: FinalState | None = None
        if not (paused and rec.pause_behavior == "skip"):
            self._ticks += 1
            if self._max_ticks and self._ticks >= self._max_ticks:
                final = "finished"
        if final is None and self._timers is not None and not paused:
            vad = self._vad
            speech = vad is not None and (
                (self._vad_in and vad.is_voiced(frames.inbound))
                or (self._vad_out and vad.is_voiced(frames.outbound))
            )
            reason = self._timers.update(speech)
            if reason is not None:
                final = "no_input" if reason == "no_input" else "finished"
        if final is not None:
            self._end_soon(final)

    def _on_digit(self, digit: str, duration_ms: int) -> None:
        if self._capturing and digit and digit.upper() in self._terminators:
            self._end_soon("finished")

    def _end_soon(self, state: FinalState) -> None:
        # Detach now so not one more frame goes into the file; finalise outside the media tick
        # (it closes the file and writes events, which have no place inside the clock's loop).
        self._detach()
        asyncio.get_running_loop().call_soon(self._complete, state)

    def _detach(self) -> None:
        self._capturing = False
        if self.call.media is not None:
            self.call.media.remove_listener(self._on_frame)
        if self._on_digit in self.call.dtmf_listeners:
            self.call.dtmf_listeners.remove(self._on_digit)

    # ------------------------------------------------------------------ end

    def _complete(self, state: FinalState) -> None:
        """Close the file, update its row and emit the final event. Synchronous on purpose:
        the call's end (and a server shutting down) runs stop() and must find the recording
        final when it returns, with no further loop iteration needed."""
        if self.is_terminal:
            return
        self._detach()
        rec = self._recorder
        if rec is None:
            return
        try:
            result = rec.finish()
        except (OSError, RecorderError, RuntimeError) as exc:
            self._fail(f"cannot finish the file: {exc}")
            return
        self.result = result
        self.end_time = time.time()
        if self.start_time is None:  # stopped during the beep: an empty recording
            self.start_time = self.end_time
        self._save_row(result)
        self.move(state, **self._final_params(result))

    def _fail(self, reason: str) -> None:
        if self.is_terminal:
            return
        log.warning("record %s on call %s: %s", self.control_id, self.call.id, reason)
        self._detach()
        if self._beep is not None:
            self._beep.stop()
        if self._recorder is not None:
            self._recorder.abort(delete=True)
        self._services.store.delete_recording(self.recording_id)
        self.move("error", reason=reason, **self._base_params())

    async def stop(self) -> None:
        """`calling.record.stop`, `stop_record_call`, the SWML script moving on, or the call's
        end: whatever was recorded is kept and reported as `finished`."""
        if self.is_terminal:
            return
        if self._beep is not None:
            self._beep.stop()
        self._complete("finished")

    # ------------------------------------------------------------------ pause / resume

    def pause(self, behavior: PauseBehavior) -> None:
        self.require_state("starting", "recording", action="pause")
        assert self._recorder is not None
        self._recorder.pause(behavior)
        if self.state == "starting":
            self._pending_pause = behavior  # reported once recording begins
            return
        self.move("paused", pause_behavior=behavior, **self._base_params())

    def resume(self) -> None:
        if self.state == "starting" and self._pending_pause is not None:
            assert self._recorder is not None
            self._recorder.resume()
            self._pending_pause = None
            return
        self.require_state("paused", action="resume")
        assert self._recorder is not None
        self._recorder.resume()
        self.move("recording", **self._base_params())

    # ------------------------------------------------------------------ store and events

    def _save_row(self, result: RecordingResult | None = None) -> None:
        self._services.store.save_recording(
            RecordingRow(
                id=self.recording_id,
                call_id=self.call.id,
                control_id=self.control_id,
                path=str(self.path),
                format=self.settings.format,
                duration=None if result is None else round(result.duration, 3),
                size=None if result is None else result.size,
                created_at=self.created_at,
                # What recover_recordings needs to report this recording after a crash.
                meta={
                    "status_url": self.status_url,
                    "url": self.url,
                    "audio": self.settings.describe(),
                    "start_time": self.start_time,
                },
            )
        )

    def _base_params(self) -> dict[str, Any]:
        return _base_params(self.recording_id, self.url, self.settings.describe(), self.start_time)

    def _final_params(self, result: RecordingResult) -> dict[str, Any]:
        params = self._base_params()
        _add_result(params, result.duration, result.size, result.format, self.end_time)
        return params


def _base_params(
    recording_id: str, url: str, audio: dict[str, Any], start_time: float | None
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "recording_id": recording_id,
        "url": url,
        "record": {"audio": audio, "url": url},
    }
    if start_time is not None:
        params["start_time"] = start_time
    return params


def _add_result(
    params: dict[str, Any], duration: float, size: int, fmt: str, end_time: float | None
) -> None:
    duration = round(duration, 3)
    params.update(duration=duration, size=size, end_time=end_time)
    params["record"].update(format=fmt, duration=duration, size=size)


# ---------------------------------------------------------------------------------------------
# Parameters


def _settings(
    values: Mapping[str, Any], defaults: Mapping[str, Any], *, swml: bool
) -> RecordSettings:
    """Merge `values` over `defaults`. REST values arrive validated by the api; SWML values may
    be expanded ``${...}`` strings, so they are coerced (and rejected with a SwmlError)."""
    merged = {k: (values[k] if values.get(k) is not None else v) for k, v in defaults.items()}
    fmt = str(merged["format"]).lower()
    if fmt == "mp4":
        # The api accepts mp4 (it is in the reference's enum); no encoder for it here yet.
        if swml:
            raise SwmlMethodNotSupported("record", "format mp4; use wav or mp3")
        raise CommandError(
            501,
            "not_implemented",
            "recording to mp4 is not supported by callplane yet; use mp3 or wav",
            "record.audio.format",
        )
    direction = str(merged["direction"]).lower()
    if fmt not in ("wav", "mp3") or direction not in ("speak", "listen", "both"):
        bad = "format" if fmt not in ("wav", "mp3") else "direction"
        raise SwmlError(f"invalid record {bad} {merged[bad]!r}")
    numbers: dict[str, float] = {}
    for key in ("initial_timeout", "end_silence_timeout", "max_length", "input_sensitivity"):
        try:
            number = float(merged[key])
        except (TypeError, ValueError):
            raise SwmlError(f"record {key} must be a number, got {merged[key]!r}") from None
        if not number >= 0:
            raise SwmlError(f"record {key} must be >= 0, got {number}")
        numbers[key] = number
    return RecordSettings(
        format=cast("RecordFormat", fmt),
        direction=cast("RecordDirection", direction),
        stereo=_flag(merged["stereo"], "stereo"),
        beep=_flag(merged["beep"], "beep"),
        terminators=str(merged["terminators"]),
        initial_timeout=numbers["initial_timeout"],
        end_silence_timeout=numbers["end_silence_timeout"],
        max_length=numbers["max_length"],
        input_sensitivity=numbers["input_sensitivity"],
    )


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise SwmlError(f"record {name} must be true or false, got {value!r}")


# ---------------------------------------------------------------------------------------------
# Starting and finding recordings


def start_record(
    services: Services,
    call: Call,
    *,
    control_id: str,
    settings: RecordSettings,
    status_url: str | None,
    background: bool = False,
) -> RecordOperation:
    op = RecordOperation(
        call,
        control_id,
        status_url,
        services.emit,
        services=services,
        settings=settings,
        background=background,
    )
    register(call, op)
    op.start()
    return op


# ---------------------------------------------------------------------------------------------
# REST


async def _record(services: Services, call: Call, p: dict[str, Any]) -> None:
    require_answered(call, "recorded")
    audio = (p.get("record") or {}).get("audio") or {}
    settings = _settings(audio, REST_DEFAULTS, swml=False)
    start_record(
        services,
        call,
        control_id=control_id_of(p),
        settings=settings,
        status_url=p.get("status_url"),
    )


async def _pause(services: Services, call: Call, p: dict[str, Any]) -> None:
    behavior = cast("PauseBehavior", str(p.get("behavior") or "skip"))
    lookup(call, RecordOperation, p).pause(behavior)


async def _resume(services: Services, call: Call, p: dict[str, Any]) -> None:
    lookup(call, RecordOperation, p).resume()


async def _stop(services: Services, call: Call, p: dict[str, Any]) -> None:
    await lookup(call, RecordOperation, p).stop()


# ---------------------------------------------------------------------------------------------
# SWML


async def _answered_media(services: Services, call: Call, method: str) -> None:
    if call.status is not CallStatus.ANSWERED:
        await services.answer(call)
    if call.media is None:
        raise SwmlError(f"{method} needs an answered call with media")


async def swml_record(
    services: Services, call: Call, params: dict[str, Any]
) -> dict[str, Any] | None:
    """SWML `record`: a foreground recording (voicemail); the script waits until it ends."""
    settings = _settings(params, SWML_RECORD_DEFAULTS, swml=True)
    await _answered_media(services, call, "record")
    op = start_record(
        services,
        call,
        control_id=f"swml-record-{uuid.uuid4()}",
        settings=settings,
        status_url=params.get("status_url"),
    )
    try:
        outcome = await asyncio.shield(op.done)
    finally:
        # Cancelled (call ended, script replaced): keep what was recorded.
        await op.stop()
    results = {"finished": "success", "no_input": "no_input"}
    return {"record_url": op.url, "record_result": results.get(outcome, "failed")}


async def swml_record_call(
    services: Services, call: Call, params: dict[str, Any]
) -> dict[str, Any] | None:
    """SWML `record_call`: a background recording; the script continues at once."""
    settings = _settings(params, SWML_RECORD_CALL_DEFAULTS, swml=True)
    await _answered_media(services, call, "record_call")
    control_id = str(params.get("control_id") or f"swml-record-call-{uuid.uuid4()}")
    try:
        op = start_record(
            services,
            call,
            control_id=control_id,
            settings=settings,
            status_url=params.get("status_url"),
            background=True,
        )
    except CommandError as exc:  # the control_id is already recording
        raise SwmlError(str(exc)) from exc
    return {
        "record_call_url": op.url,
        "record_call_result": "failed" if op.state == "error" else "success",
        "record_control_id": control_id,
    }


async def swml_stop_record_call(
    services: Services, call: Call, params: dict[str, Any]
) -> dict[str, Any] | None:
    """SWML `stop_record_call`: the named recording, or the last `record_call` still running."""
    target = named_or_latest(
        call, RecordOperation, params.get("control_id"), lambda op: op.background
    )
    if target is None:
        return {"stop_record_call_result": "failed"}
    await target.stop()
    return {"stop_record_call_result": "success" if target.state == "finished" else "failed"}


COMMANDS: dict[str, CommandHandler] = {
    "calling.record": _record,
    "calling.record.pause": _pause,
    "calling.record.resume": _resume,
    "calling.record.stop": _stop,
}
SWML_METHODS: dict[str, SwmlMethod] = {
    "record": swml_record,
    "record_call": swml_record_call,
    "stop_record_call": swml_stop_record_call,
}


def recover_recordings(store: Store, call_id: str) -> list[tuple[str | None, dict[str, Any]]]:
    """Recordings a crash left unfinished (no size yet): repair what can be read and keep it,
    so nothing already recorded is lost; drop the row of a file that is gone or unreadable.

    Returns the final event each one would have emitted, as ``(status_url, params)`` of a
    ``calling.call.record`` event: ``finished`` with the file's url and duration, or ``error``
    for a lost one (rows written before recordings kept their ``meta`` get none).
    """
    events: list[tuple[str | None, dict[str, Any]]] = []
    for row in store.list_recordings(call_id):
        if row["size"] is not None:
            continue
        meta = row.get("meta") or {}
        params: dict[str, Any] = {"control_id": row["control_id"]}
        if meta:
            start_time = meta.get("start_time") or row["created_at"]
            params.update(_base_params(row["id"], meta["url"], meta["audio"], start_time))
        path = Path(row["path"])
        try:
            if row["format"] == "wav":
                samples = repair_wav(path)
            else:
                samples = soundfile.info(str(path)).frames
        except (OSError, RecorderError, RuntimeError) as exc:
            log.warning("recording %s of call %s is lost: %s", row["id"], call_id, exc)
            store.delete_recording(row["id"])
            if meta:
                reason = f"the recording was lost in a crash: {exc}"
                events.append(
                    (meta.get("status_url"), {**params, "state": "error", "reason": reason})
                )
            continue
        log.warning("recording %s of call %s was repaired after a crash", row["id"], call_id)
        duration, size = samples / SAMPLE_RATE, path.stat().st_size
        store.save_recording({**row, "duration": round(duration, 3), "size": size})
        if meta:
            end_time = params["start_time"] + duration
            _add_result(params, duration, size, row["format"], end_time)
            events.append((meta.get("status_url"), {**params, "state": "finished"}))
    return events
