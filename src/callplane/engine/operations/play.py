"""`calling.play` and SWML `play`: playing a playlist into the call (reference §4.6-§4.8)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, cast

from callplane.engine.audio import AudioResolver, PlayItemError, swml_sound_to_item
from callplane.engine.calls import CallStatus
from callplane.engine.facade import CommandError
from callplane.engine.operations.base import (
    Emit,
    Operation,
    control_id_of,
    lookup,
    register,
    require_answered,
)
from callplane.engine.services import CommandHandler, Services, SwmlMethod
from callplane.engine.swml.errors import SwmlError, SwmlMethodNotSupported

if TYPE_CHECKING:
    from callplane.engine.calls import Call
    from callplane.media.engine import Playback, PlayDirection

log = logging.getLogger("callplane.engine.play")


class PlayOperation(Operation):
    kind = "play"
    writes_audio = True
    event_type = "calling.call.play"
    # "resolving" is internal (fetching audio, synthesising speech) and emits no event of its
    # own: the reference's first event is `playing`.
    initial_state = "resolving"
    transitions: ClassVar[Mapping[str, frozenset[str]]] = {
        "resolving": frozenset({"playing", "finished", "error"}),
        "playing": frozenset({"paused", "finished", "error"}),
        "paused": frozenset({"playing", "finished", "error"}),
    }

    def __init__(
        self,
        call: Call,
        control_id: str,
        status_url: str | None,
        emit: Emit,
        *,
        items: list[dict[str, Any]],
        volume: float,
        loop: int,
        language: str,
        voice: str | None,
        gender: str,
        direction: PlayDirection = "listen",
    ) -> None:
        super().__init__(call, control_id, status_url, emit)
        self._direction: PlayDirection = direction
        self._items = items
        self._volume = volume
        self._loop = loop
        self._language = language
        self._voice = voice
        self._gender = gender
        self._playback: Playback | None = None
        self._pause_requested = False
        self._task: asyncio.Task[None] | None = None

    def start(self, resolver: AudioResolver) -> None:
        self._task = asyncio.create_task(self._run(resolver), name=f"play-{self.control_id}")

    async def _run(self, resolver: AudioResolver) -> None:
        session = self.call.media
        try:
            playlist = [
                await resolver.resolve(
                    item, language=self._language, voice=self._voice, gender=self._gender
                )
                for item in self._items
            ]
        except PlayItemError as exc:
            log.warning("play %s on call %s: %s", self.control_id, self.call.id, exc)
            self.move("error", reason=str(exc))
            return
        if self.is_terminal:  # stopped while resolving
            return
        if session is None:
            self.move("error", reason="the call has no media session")
            return
        playback = session.play(
            playlist, volume_db=self._volume, loop=self._loop, direction=self._direction
        )
        self._playback = playback
        self.move("playing")
        if self._pause_requested:
            playback.pause()
            self.move("paused")
        outcome = await asyncio.shield(playback.done)
        if outcome == "error":
            self.move("error", reason=str(playback.error or "playback failed"))
        else:
            self.move("finished")

    def pause(self) -> None:
        self.require_state("resolving", "playing", action="pause")
        if self._playback is None:
            self._pause_requested = True
            return
        self._playback.pause()
        self.move("paused")

    def resume(self) -> None:
        self.require_state("paused", "resolving", action="resume")
        if self._playback is None:
            self._pause_requested = False
            return
        self._playback.resume()
        self.move("playing")

    def set_volume(self, volume: float) -> None:
        if self.is_terminal:
            raise CommandError(422, "invalid_state", "the play has ended", "control_id")
        self._volume = volume
        if self._playback is not None:
            self._playback.set_volume(volume)

    async def stop(self) -> None:
        if self.is_terminal:
            return
        if self._playback is not None:
            self._playback.stop()  # _run reports `finished` when the playback's future resolves
        else:
            if self._task is not None:
                self._task.cancel()
            self.move("finished")


def start_play(
    services: Services,
    call: Call,
    *,
    control_id: str,
    items: list[dict[str, Any]],
    status_url: str | None,
    volume: float = 0.0,
    loop: int = 1,
    language: str = "en-US",
    voice: str | None = None,
    gender: str = "female",
    direction: PlayDirection = "listen",
) -> PlayOperation:
    op = PlayOperation(
        call,
        control_id,
        status_url,
        services.emit,
        items=items,
        volume=volume,
        loop=loop,
        language=language,
        voice=voice,
        gender=gender,
        direction=direction,
    )
    register(call, op)
    op.start(services.audio)
    return op


async def _play(services: Services, call: Call, p: dict[str, Any]) -> None:
    require_answered(call, "played to")
    start_play(
        services,
        call,
        control_id=control_id_of(p),
        items=list(p["play"]),
        status_url=p.get("status_url"),
        volume=float(p.get("volume") or 0.0),
        loop=int(p["loop"]) if p.get("loop") is not None else 1,
        language=str(p.get("language") or "en-US"),
        voice=p.get("voice"),
        gender=str(p.get("gender") or "female"),
        # `listen` (the default): the far end hears it; `speak`: this leg says it (a recording
        # of its speak side has it; the far end does not hear it); `both`.
        direction=cast("PlayDirection", p.get("direction") or "listen"),
    )


async def _pause(services: Services, call: Call, p: dict[str, Any]) -> None:
    lookup(call, PlayOperation, p).pause()


async def _resume(services: Services, call: Call, p: dict[str, Any]) -> None:
    lookup(call, PlayOperation, p).resume()


async def _stop(services: Services, call: Call, p: dict[str, Any]) -> None:
    await lookup(call, PlayOperation, p).stop()


async def _volume(services: Services, call: Call, p: dict[str, Any]) -> None:
    lookup(call, PlayOperation, p).set_volume(float(p["volume"]))


async def swml_play(
    services: Services, call: Call, params: dict[str, Any]
) -> dict[str, Any] | None:
    """SWML `play`: the same operation, from sound strings, waiting until it ends."""
    if call.status is not CallStatus.ANSWERED:
        if params.get("auto_answer", True) is False:
            # Early media needs a 183 with SDP, which callplane does not send yet.
            raise SwmlMethodNotSupported("play", "auto_answer: false (early media)")
        await services.answer(call)
    sounds = params.get("urls") if params.get("urls") is not None else [params.get("url")]
    try:
        items = [swml_sound_to_item(str(sound)) for sound in sounds or []]
    except PlayItemError as exc:
        raise SwmlError(str(exc)) from exc
    op = start_play(
        services,
        call,
        control_id=f"swml-play-{uuid.uuid4()}",
        items=items,
        status_url=params.get("status_url"),
        volume=float(params.get("volume") or 0.0),
        language=str(params.get("say_language") or "en-US"),
        voice=params.get("say_voice"),
        gender=str(params.get("say_gender") or "female"),
    )
    try:
        await op.done
    finally:
        await op.stop()
    return None


COMMANDS: dict[str, CommandHandler] = {
    "calling.play": _play,
    "calling.play.pause": _pause,
    "calling.play.resume": _resume,
    "calling.play.stop": _stop,
    "calling.play.volume": _volume,
}
SWML_METHODS: dict[str, SwmlMethod] = {"play": swml_play}
