"""`calling.play` and SWML `play`: playing a playlist into the call (reference §4.6-§4.8)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from callplane.engine.audio import AudioResolver, PlayItemError
from callplane.engine.facade import CommandError
from callplane.engine.operations.base import Emit, Operation

if TYPE_CHECKING:
    from callplane.engine.calls import Call
    from callplane.media.engine import Playback

log = logging.getLogger("callplane.engine.play")


class PlayOperation(Operation):
    kind = "play"
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
    ) -> None:
        super().__init__(call, control_id, status_url, emit)
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
        playback = session.play(playlist, volume_db=self._volume, loop=self._loop)
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
