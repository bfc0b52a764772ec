"""The engine's side of SWML: the call-facing methods a script runs on its call.

Each method uses the same operation code as its REST command (`play` here is a `PlayOperation`,
exactly as `calling.play` starts one); only the parameter shapes differ.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from callplane.engine.audio import PlayItemError, swml_sound_to_item
from callplane.engine.calls import CallStatus
from callplane.engine.swml.errors import SwmlError, SwmlMethodNotSupported

if TYPE_CHECKING:
    from callplane.engine.calls import Call
    from callplane.engine.core import CallEngine


class CallSwmlHost:
    def __init__(self, engine: CallEngine, call: Call) -> None:
        self._engine = engine
        self._call = call

    async def run_method(self, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
        if name == "answer":
            await self._engine.answer(self._call)
            return None
        if name == "hangup":
            await self._engine.hang_up(self._call, str(params.get("reason") or "hangup"))
            return None
        if name == "play":
            return await self._play(params)
        raise SwmlMethodNotSupported(name)

    async def _play(self, params: dict[str, Any]) -> dict[str, Any]:
        call = self._call
        if call.status is not CallStatus.ANSWERED:
            if params.get("auto_answer", True) is False:
                # Early media needs a 183 with SDP, which callplane does not send yet.
                raise SwmlMethodNotSupported("play", "auto_answer: false (early media)")
            await self._engine.answer(call)
        sounds = params.get("urls") if params.get("urls") is not None else [params.get("url")]
        try:
            items = [swml_sound_to_item(str(sound)) for sound in sounds or []]
        except PlayItemError as exc:
            raise SwmlError(str(exc)) from exc
        op = self._engine.start_play(
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
            state = await op.done
        finally:
            await op.stop()
        return {"play_result": "success" if state == "finished" else "failed"}
