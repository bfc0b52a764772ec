"""Operations on live calls, one module each; their command and SWML tables are merged here."""

from callplane.engine.operations import (
    ai,
    collect,
    conference,
    connect,
    denoise,
    detect,
    digits,
    fax,
    live,
    play,
    queue,
    record,
    refer,
    stream,
    tap,
    transcribe,
)
from callplane.engine.services import CommandHandler, SwmlMethod

_MODULES = (
    play,
    record,
    collect,
    detect,
    digits,
    tap,
    transcribe,
    connect,
    refer,
    conference,
    queue,
    stream,
    denoise,
    fax,
    ai,
    live,
)

COMMANDS: dict[str, CommandHandler] = {k: v for m in _MODULES for k, v in m.COMMANDS.items()}
SWML_METHODS: dict[str, SwmlMethod] = {k: v for m in _MODULES for k, v in m.SWML_METHODS.items()}
