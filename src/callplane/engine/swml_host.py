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
    from callplane.engine.services import Services


class CallSwmlHost:
    def __init__(self, services: Services, call: Call) -> None:
        self._services = services
        self._call = call

    async def run_method(self, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
        if name == "answer":
            await self._services.answer(self._call)
            return None
        if name == "hangup":
            await self._services.hang_up(self._call, str(params.get("reason") or "hangup"))
            return None
        method = operations.SWML_METHODS.get(name)
        if method is None:
            raise SwmlMethodNotSupported(name)
        return await method(self._services, self._call, params)
