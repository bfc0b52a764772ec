"""SWML `join_conference` and `join_room`: many calls in one room of the media graph.

A conference is one media `MixGroup` (the batched mix-minus: every participant hears everyone
but themselves). It is created by the first join of its `name` (per project) and ends when its
last participant leaves or when one with `end_on_exit` does. Until a participant with
`start_on_enter` (the default) joins, the others are not mixed yet and hear `wait_url` audio.
A muted participant is a member that does not speak; a coach is a whisper (`heard_by`): only
the participant it coaches hears it. `record: record-from-start` records the group's total
(a tap on the group) with the ordinary `media.recorder.Recorder` into the recordings table, so
it is downloaded like any call recording.

Events are `calling.conference` (`conference_id`, `name`, `status`, `size`, the participant's
`call_id`) and go to the `status_callback` of the first participant that gave one, filtered by
its `status_callback_event`; they are stored with that participant's call. A room (`join_room`)
is the same thing without callbacks, recording or waiting, in its own name space.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
import wave
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from callplane.engine.audio import PlayItemError, swml_sound_to_item
from callplane.engine.calls import NOT_ANSWERED_YET
from callplane.engine.operations.stream import (
    StreamOperation,
    StreamParamError,
    StreamSettings,
    settings_from,
    start_stream,
    url_refusal,
)
from callplane.engine.swml.errors import SwmlError
from callplane.media.engine import TickFrames
from callplane.media.recorder import Recorder, RecorderError, beep
from callplane.media.sources import FRAME_SAMPLES
from callplane.store import RecordingRow

if TYPE_CHECKING:
    from callplane.engine.calls import Call
    from callplane.engine.services import CommandHandler, Services, SwmlMethod
    from callplane.media.engine import MixGroup, Playback

log = logging.getLogger("callplane.engine.conference")

Kind = Literal["conference", "room"]
EVENT_TYPE = "calling.conference"
DEFAULT_MAX_PARTICIPANTS = 100_000
BEEP_SECONDS = 0.3
# status_callback_event names -> the statuses they subscribe to.
_SUBSCRIPTIONS = {
    "start": ("conference-start",),
    "end": ("conference-end",),
    "join": ("participant-join",),
    "leave": ("participant-leave",),
    "mute": ("participant-mute", "participant-unmute"),
    "hold": ("participant-hold", "participant-unhold"),
    "speaker": ("participant-speech-start", "participant-speech-stop"),
    "modify": ("participant-modify",),
    "announcement": ("announcement-end", "announcement-fail"),
}
_DEFAULT_EVENTS = ("start", "end")
_ROOM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_ENDED_KEPT = 100  # ended conferences the debug view still shows
# Speaker detection: an inbound RMS above this level (dBFS) for a few ticks is speech.
_SPEECH_DBFS = -40.0
_SPEECH_RMS = 32768 * 10 ** (_SPEECH_DBFS / 20)
_SPEECH_ON_TICKS = 3
_SPEECH_OFF_TICKS = 25
_SILENT_FRAME = np.zeros(FRAME_SAMPLES, dtype=np.int16)
_TRIM_LEVEL = 64  # |sample| at or under this is silence for `trim-silence`


@dataclass
class _Report:
    """What `Services.emit` needs to store an event with a call and send it to a URL."""

    call: Call
    status_url: str | None
    event_type: str = EVENT_TYPE
    kind: str = "conference"


@dataclass
class _Callback:
    call: Call
    url: str
    statuses: frozenset[str]


class Participant:
    """One call in a conference; registered with the call as a live operation, so the call's
    end takes it out (`stop`)."""

    def __init__(
        self,
        conference: Conference,
        call: Call,
        *,
        muted: bool,
        coach: str | None,
        start_on_enter: bool,
        end_on_exit: bool,
        beep_on_enter: bool,
        beep_on_exit: bool,
    ) -> None:
        self.conference = conference
        self.call = call
        self.muted = muted
        self.coach = coach  # the call id this participant whispers to
        self.start_on_enter = start_on_enter
        self.end_on_exit = end_on_exit
        self.beep_on_enter = beep_on_enter
        self.beep_on_exit = beep_on_exit
        self.joined_at = time.time()
        self.wait: Playback | None = None
        # join_conference's `stream`: runs while the participant is in, ended by its leaving.
        self.stream: StreamOperation | None = None
        self.speaking = False
        self._loud = 0
        self._quiet = 0
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @property
    def key(self) -> tuple[str, str]:
        return (self.conference.kind, self.conference.id)

    async def stop(self) -> None:
        """The call is ending: leave."""
        self.conference.leave(self, "hangup")

    def describe(self) -> dict[str, Any]:
        return {
            "call_id": self.call.id,
            "muted": self.muted,
            "coaching": self.coach,
            "start_on_enter": self.start_on_enter,
            "end_on_exit": self.end_on_exit,
            "waiting": not self.conference.started,
            "speaking": self.speaking,
            "joined_at": self.joined_at,
        }

    def on_frame(self, frames: TickFrames) -> None:
        """Speaker detection on what the participant says (only with a `speaker` subscriber)."""
        x = frames.inbound.astype(np.float32)
        loud = float(np.sqrt(np.mean(x * x))) > _SPEECH_RMS
        if loud:
            self._loud += 1
            self._quiet = 0
            if not self.speaking and self._loud >= _SPEECH_ON_TICKS:
                self.speaking = True
                self.conference.event("participant-speech-start", self)
        else:
            self._quiet += 1
            self._loud = 0
            if self.speaking and self._quiet >= _SPEECH_OFF_TICKS:
                self.speaking = False
                self.conference.event("participant-speech-stop", self)


class _Recording:
    """The room's total into one file, through a tap on the conference's mix group."""

    def __init__(
        self,
        services: Services,
        conference: Conference,
        owner: Call,
        status_url: str | None,
        trim: bool,
    ) -> None:
        self.services = services
        self.conference = conference
        self.owner = owner
        self.status_url = status_url
        self.trim = trim
        self.id = str(uuid.uuid4())
        self.url = services.config.recording_url(self.id)
        self.path: Path = services.config.recordings_dir / f"{self.id}.wav"
        self.created_at = time.time()
        self.start_time: float | None = None
        self.recorder: Recorder | None = None
        self._zeros = np.zeros(FRAME_SAMPLES, dtype=np.int16)

    def start(self, group: MixGroup) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.recorder = Recorder(self.path, format="wav", direction="speak")
        except (OSError, RecorderError, ValueError) as exc:
            log.warning("conference %s: cannot record: %s", self.conference.name, exc)
            return
        self.start_time = time.time()
        self._save(None, None)
        group.add_tap(self._on_total)
        self._report("record-start")

    def _on_total(self, tick: int, total: npt.NDArray[np.int16]) -> None:
        if self.recorder is not None and not self.recorder.closed:
            self.recorder.feed(TickFrames(tick, total, self._zeros, None, True))

    def finish(self, group: MixGroup) -> None:
        group.remove_tap(self._on_total)
        rec = self.recorder
        if rec is None or rec.closed:
            return
        try:
            result = rec.finish()
            duration, size = result.duration, result.size
            if self.trim:
                duration, size = trim_silence(self.path)
        except (OSError, RecorderError, wave.Error) as exc:
            log.warning("conference %s: recording failed: %s", self.conference.name, exc)
            self.services.store.delete_recording(self.id)
            return
        self._save(duration, size)
        self._report(
            "record-stop",
            duration=round(duration, 3),
            size=size,
            start_time=self.start_time,
            end_time=time.time(),
        )

    def _save(self, duration: float | None, size: int | None) -> None:
        self.services.store.save_recording(
            RecordingRow(
                id=self.id,
                call_id=self.owner.id,
                control_id=None,
                path=str(self.path),
                format="wav",
                duration=None if duration is None else round(duration, 3),
                size=size,
                created_at=self.created_at,
                meta={
                    "status_url": self.status_url,
                    "url": self.url,
                    "audio": {"format": "wav", "direction": "both", "stereo": False},
                    "start_time": self.start_time,
                    "conference_id": self.conference.id,
                },
            )
        )

    def _report(self, status: str, **extra: Any) -> None:
        params = {
            **self.conference.base_params(status),
            "call_id": self.owner.id,
            "recording_id": self.id,
            "url": self.url,
            "format": "wav",
            **extra,
        }
        self.services.emit(_Report(self.owner, self.status_url), params)


def trim_silence(path: Path) -> tuple[float, int]:
    """Cut leading and trailing silence from a mono 16-bit WAV file; (duration, size)."""
    with wave.open(str(path), "rb") as f:
        rate = f.getframerate()
        samples = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > _TRIM_LEVEL)
    kept = samples[loud[0] : loud[-1] + 1] if loud.size else samples[:0]
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(kept.astype("<i2").tobytes())
    return kept.size / rate, path.stat().st_size


class Conference:
    def __init__(
        self,
        directory: Directory,
        services: Services,
        *,
        project_id: str,
        name: str,
        kind: Kind,
        max_participants: int,
    ) -> None:
        if services.media is None:
            raise SwmlError("conferences need the media engine")
        self.directory = directory
        self.services = services
        self.project_id = project_id
        self.name = name
        self.kind: Kind = kind
        self.id = str(uuid.uuid4())
        self.max_participants = max_participants
        self.created_at = time.time()
        self.group = services.media.mix_group()
        self.participants: dict[str, Participant] = {}
        self.started = False
        self.ended = False
        self.callback: _Callback | None = None
        self.recording: _Recording | None = None
        self.wants_recording: tuple[Call, str | None, bool] | None = None
        self.wait_sounds: list[str] = []

    # ------------------------------------------------------------------ events

    def base_params(self, status: str) -> dict[str, Any]:
        return {
            "conference_id": self.id,
            "name": self.name,
            "status": status,
            "size": len(self.participants),
        }

    def event(self, status: str, participant: Participant | None = None) -> None:
        cb = self.callback
        if cb is None or status not in cb.statuses:
            return
        params = self.base_params(status)
        if participant is not None:
            params["call_id"] = participant.call.id
            params["muted"] = participant.muted
            params["hold"] = False
            params["coaching"] = participant.coach is not None
            if participant.coach is not None:
                params["call_id_to_coach"] = participant.coach
            if participant.end_on_exit:
                params["end_conference_on_exit"] = True
        else:
            params["call_id"] = cb.call.id
        self.services.emit(_Report(cb.call, cb.url), params)

    # ------------------------------------------------------------------ membership

    def _mix(self, p: Participant) -> None:
        media = p.call.media
        if media is None or media.closed:
            return
        coached = self.participants.get(p.coach) if p.coach else None
        heard_by = coached.call.media if coached is not None else None
        # A coach whose trainee is not here whispers to nobody.
        speaks = not p.muted and (p.coach is None or heard_by is not None)
        self.group.add(media, hears=True, speaks=speaks, heard_by=heard_by)

    def _beep_others(self, joiner: Participant) -> None:
        for other in self.participants.values():
            media = other.call.media
            if other is joiner or media is None or media.closed:
                continue
            with contextlib.suppress(RuntimeError, ValueError):
                media.play(beep(BEEP_SECONDS))

    def join(self, p: Participant) -> None:
        self.participants[p.call.id] = p
        if self.started:
            self._mix(p)
        elif p.start_on_enter or self.kind == "room":
            self.start()
        else:
            self._start_waiting(p)
        self.event("participant-join", p)
        if p.beep_on_enter:
            self._beep_others(p)
        # A coach that joined before its trainee starts whispering now.
        for other in self.participants.values():
            if other.coach == p.call.id and self.started:
                self._mix(other)

    def _start_waiting(self, p: Participant) -> None:
        task = asyncio.create_task(self._play_wait(p), name=f"conference-wait-{p.call.id}")
        p.call.tasks.add(task)
        task.add_done_callback(p.call.tasks.discard)

    async def _play_wait(self, p: Participant) -> None:
        media = p.call.media
        if media is None or not self.wait_sounds:
            return
        playlist = []
        try:
            for sound in self.wait_sounds:
                playlist.append(
                    await self.services.audio.resolve(
                        swml_sound_to_item(sound), language="en-US", voice=None, gender="female"
                    )
                )
        except (PlayItemError, ValueError) as exc:
            log.warning("conference %s: no wait audio: %s", self.name, exc)
            return
        if self.started or p.done.done() or media.closed or not playlist:
            return
        p.wait = media.play(playlist, loop=0)

    def start(self) -> None:
        if self.started:
            return
        self.started = True
        for p in self.participants.values():
            if p.wait is not None:
                p.wait.stop()
                p.wait = None
        for p in self.participants.values():
            self._mix(p)
        self.event("conference-start")
        if self.wants_recording is not None and self.recording is None:
            owner, url, trim = self.wants_recording
            self.recording = _Recording(self.services, self, owner, url, trim)
            self.recording.start(self.group)

    def leave(self, p: Participant, reason: str) -> None:
        if self.participants.get(p.call.id) is not p:
            return
        del self.participants[p.call.id]
        if p.wait is not None:
            p.wait.stop()
            p.wait = None
        if p.stream is not None:
            p.stream.close()
        media = p.call.media
        if media is not None:
            self.group.remove(media)
            media.remove_listener(p.on_frame)
        self.call_operations_forget(p)
        self.event("participant-leave", p)
        if not p.done.done():
            p.done.set_result(reason)
        if p.beep_on_exit:
            self._beep_others(p)
        # A coach of the one who left now whispers to nobody.
        for other in self.participants.values():
            if other.coach == p.call.id and self.started:
                self._mix(other)
        if not self.participants or (p.end_on_exit and self.started):
            self.end()

    @staticmethod
    def call_operations_forget(p: Participant) -> None:
        p.call.operations.pop(p.key, None)

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        for other in list(self.participants.values()):
            self.leave(other, "conference-ended")
        if self.recording is not None:
            self.recording.finish(self.group)
        if self.started:
            self.event("conference-end")
        self.group.close()
        self.directory.closed(self)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "type": self.kind,
            "status": "completed" if self.ended else "in-progress" if self.started else "init",
            "size": len(self.participants),
            "max_participants": self.max_participants,
            "created_at": self.created_at,
            "participants": [p.describe() for p in self.participants.values()],
        }
        if self.recording is not None:
            out["recording_id"] = self.recording.id
        return out


class Directory:
    """Every live conference and room of the engine, by project and name; the debug view."""

    def __init__(self) -> None:
        self._live: dict[tuple[str, Kind, str], Conference] = {}
        self._ended: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()

    def get_or_create(
        self, services: Services, project_id: str, name: str, kind: Kind, max_participants: int
    ) -> Conference:
        key = (project_id, kind, name)
        conf = self._live.get(key)
        if conf is None:
            conf = Conference(
                self,
                services,
                project_id=project_id,
                name=name,
                kind=kind,
                max_participants=max_participants,
            )
            self._live[key] = conf
        return conf

    def closed(self, conf: Conference) -> None:
        self._live.pop((conf.project_id, conf.kind, conf.name), None)
        self._ended[conf.id] = (conf.project_id, conf.describe())
        while len(self._ended) > _ENDED_KEPT:
            self._ended.popitem(last=False)

    def list(self, project_id: str) -> list[dict[str, Any]]:
        return [c.describe() for c in self._live.values() if c.project_id == project_id]

    def get(self, project_id: str, conference_id: str) -> dict[str, Any] | None:
        for c in self._live.values():
            if c.id == conference_id and c.project_id == project_id:
                return c.describe()
        ended = self._ended.get(conference_id)
        if ended is not None and ended[0] == project_id:
            return ended[1]
        return None


def directory_of(services: Services) -> Directory:
    directory = services.extensions.get("conference")
    if not isinstance(directory, Directory):
        directory = services.extensions["conference"] = Directory()
    return directory


# ---------------------------------------------------------------------------------------------
# parameters


def _flag(
    params: Mapping[str, Any], name: str, default: bool, where: str = "join_conference"
) -> bool:
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise SwmlError(f"{where} `{name}` must be true or false")


def _beep(params: Mapping[str, Any]) -> tuple[bool, bool]:
    value = params.get("beep", True)
    text = str(value).lower() if isinstance(value, bool | str) else None
    if text == "true":
        return True, True
    if text == "false":
        return False, False
    if text == "onenter":
        return True, False
    if text == "onexit":
        return False, True
    raise SwmlError("join_conference `beep` must be true, false, onEnter or onExit")


def _statuses(params: Mapping[str, Any]) -> frozenset[str]:
    raw = params.get("status_callback_event")
    if raw is None:
        names: list[str] = list(_DEFAULT_EVENTS)
    elif isinstance(raw, str):
        names = raw.replace(",", " ").split()
    elif isinstance(raw, list):
        names = [str(n) for n in raw]
    else:
        raise SwmlError("join_conference `status_callback_event` must be a space-separated list")
    unknown = [n for n in names if n not in _SUBSCRIPTIONS]
    if unknown:
        raise SwmlError(f"join_conference `status_callback_event`: unknown {unknown}")
    return frozenset(s for n in names for s in _SUBSCRIPTIONS[n])


def _max_participants(params: Mapping[str, Any]) -> int:
    raw = params.get("max_participants", DEFAULT_MAX_PARTICIPANTS)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise SwmlError("join_conference `max_participants` must be an integer") from None
    if not 2 <= value <= DEFAULT_MAX_PARTICIPANTS:
        raise SwmlError("join_conference `max_participants` must be 2 to 100000")
    return value


def _stream(services: Services, value: Any) -> tuple[StreamSettings, str | None] | None:
    """join_conference's `stream` object: its settings and status_url; None without one.

    What the participant hears (the room minus itself) is the default track: it is the
    "conference audio" the schema promises as heard from the participant's seat, exactly what
    an application speaking back into the room (`realtime`) must hear, without its own echo,
    and one track keeps applications that ignore `track` working. `track` (an extension, as in
    `stream`) asks for `inbound_track` (what the participant says) or `both_tracks`.
    """
    if value is None:
        return None
    where = "join_conference `stream`"
    if not isinstance(value, Mapping):
        raise SwmlError(f"{where} must be an object with a `url`")
    if not str(value.get("url") or "").strip():
        raise SwmlError(f"{where} needs a `url` (wss://)")
    realtime = _flag(value, "realtime", False, where)
    try:
        settings = settings_from(
            {**value, "track": value.get("track") or "outbound_track"}, bidirectional=realtime
        )
    except StreamParamError as exc:
        raise SwmlError(f"{where}: {exc}") from None
    refused = url_refusal(settings.url, services.config.targets)
    if refused is not None:
        raise SwmlError(f"{where}: {refused}")
    status_url = value.get("status_url")
    return replace(settings, play_direction="speak"), str(status_url) if status_url else None


def _wait_sounds(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    raise SwmlError("join_conference `wait_url` must be a URL or a list of sounds")


# ---------------------------------------------------------------------------------------------
# SWML


async def _join(
    services: Services, call: Call, params: Mapping[str, Any], kind: Kind
) -> tuple[str, Participant | None]:
    """Join and stay until the participant leaves; ("completed" | "failed", participant)."""
    name = params.get("name")
    if not isinstance(name, str) or not name:
        raise SwmlError(f"join_{kind} needs a `name`")
    if kind == "room" and not _ROOM_NAME.match(name):
        return "failed", None
    if kind == "conference":
        muted = _flag(params, "muted", False)
        beep_on_enter, beep_on_exit = _beep(params)
        start_on_enter = _flag(params, "start_on_enter", True)
        end_on_exit = _flag(params, "end_on_exit", False)
        max_participants = _max_participants(params)
        statuses = _statuses(params)
        record = params.get("record", "do-not-record")
        if record not in ("do-not-record", "record-from-start"):
            raise SwmlError("join_conference `record` must be do-not-record or record-from-start")
        trim = params.get("trim", "trim-silence")
        if trim not in ("trim-silence", "do-not-trim"):
            raise SwmlError("join_conference `trim` must be trim-silence or do-not-trim")
        coach = params.get("coach") or None
        wait = _wait_sounds(params.get("wait_url"))
        stream = _stream(services, params.get("stream"))
    else:
        muted, beep_on_enter, beep_on_exit = False, False, False
        start_on_enter, end_on_exit = True, False
        max_participants, statuses, record, trim, coach, wait = (
            DEFAULT_MAX_PARTICIPANTS,
            frozenset(),
            "do-not-record",
            "do-not-trim",
            None,
            [],
        )
        stream = None
    if call.status in NOT_ANSWERED_YET:
        await services.answer(call)
    if call.media is None or call.media.closed or call.is_terminal:
        return "failed", None
    if call.bridge is not None:
        raise SwmlError(f"call {call.id} is bridged; it cannot join a {kind} too")
    conf = directory_of(services).get_or_create(
        services, call.project_id, name, kind, max_participants
    )
    if len(conf.participants) >= conf.max_participants:
        log.info("%s %s is full (%d)", kind, name, conf.max_participants)
        return "failed", None
    if wait and not conf.wait_sounds:
        conf.wait_sounds = wait
    status_callback = params.get("status_callback")
    if status_callback and conf.callback is None:
        conf.callback = _Callback(call, str(status_callback), statuses)
    if record == "record-from-start" and conf.wants_recording is None:
        rec_url = params.get("recording_status_callback")
        conf.wants_recording = (call, str(rec_url) if rec_url else None, trim == "trim-silence")
    p = Participant(
        conf,
        call,
        muted=muted,
        coach=str(coach) if coach else None,
        start_on_enter=start_on_enter,
        end_on_exit=end_on_exit,
        beep_on_enter=beep_on_enter,
        beep_on_exit=beep_on_exit,
    )
    if p.key in call.operations:
        raise SwmlError(f"call {call.id} is already in {kind} {name}")
    call.operations[p.key] = p
    if conf.callback is not None and "participant-speech-start" in conf.callback.statuses:
        call.media.add_listener(p.on_frame)
    conf.join(p)
    if conf.recording is None and conf.started and conf.wants_recording is not None:
        owner, url, do_trim = conf.wants_recording
        conf.recording = _Recording(services, conf, owner, url, do_trim)
        conf.recording.start(conf.group)
    if stream is not None:
        settings, status_url = stream
        p.stream = start_stream(
            services, call, control_id=str(uuid.uuid4()), settings=settings, status_url=status_url
        )
    try:
        await asyncio.shield(p.done)
    except asyncio.CancelledError:
        # The script is replaced or the call ends: leave now, not when the call's end stops us.
        conf.leave(p, "hangup")
        raise
    return "completed", p


async def swml_join_conference(
    services: Services, call: Call, params: dict[str, Any]
) -> dict[str, Any] | None:
    result, _ = await _join(services, call, params, "conference")
    return {"join_conference_result": result, "return_value": result}


async def swml_join_room(
    services: Services, call: Call, params: dict[str, Any]
) -> dict[str, Any] | None:
    result, _ = await _join(services, call, params, "room")
    out = "joined" if result == "completed" else "failed"
    return {"join_room_result": out, "return_value": out}


COMMANDS: dict[str, CommandHandler] = {}
SWML_METHODS: dict[str, SwmlMethod] = {
    "join_conference": swml_join_conference,
    "join_room": swml_join_room,
}
