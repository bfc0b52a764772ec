"""The engine's side of SWML: the call-facing methods a script runs on its call.

Each method uses the same operation code as its REST command (SWML `play` starts the
`PlayOperation` that `calling.play` starts); only the parameter shapes differ. The methods come
from the operation modules' `SWML_METHODS` tables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from callplane.engine import operations
from callplane.engine.swml.errors import SwmlMethodNotSupported

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
        method = operations.SWML_METHODS.get(name)
        if method is None:
            raise SwmlMethodNotSupported(name)
        return await method(self._engine.services, self._call, params)
