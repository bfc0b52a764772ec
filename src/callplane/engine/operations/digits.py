"""SWML `send_digits`: DTMF to the far end as RFC 4733 events (the same sender `dial`'s
`send_digits` uses)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from callplane.engine.calls import CallStatus
from callplane.engine.services import CommandHandler, Services, SwmlMethod
from callplane.engine.swml.errors import SwmlError

if TYPE_CHECKING:
    from callplane.engine.calls import Call


async def swml_send_digits(
    services: Services, call: Call, params: dict[str, Any]
) -> dict[str, Any] | None:
    digits = str(params.get("digits") or "")
    if call.status is not CallStatus.ANSWERED:
        await services.answer(call)
    if call.media is None:
        raise SwmlError("send_digits needs an answered call with media")
    try:
        await call.media.send_digits(digits)
    except (ValueError, RuntimeError) as exc:
        # RuntimeError: the far end did not negotiate telephone-event.
        return {"send_digits_result": "failed", "send_digits_error": str(exc)}
    return {"send_digits_result": "success"}


COMMANDS: dict[str, CommandHandler] = {}
SWML_METHODS: dict[str, SwmlMethod] = {"send_digits": swml_send_digits}
