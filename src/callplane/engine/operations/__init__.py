"""Operations on live calls, one module each; their command and SWML tables are merged here."""

from callplane.engine.operations import play
from callplane.engine.services import CommandHandler, SwmlMethod

COMMANDS: dict[str, CommandHandler] = {**play.COMMANDS}
SWML_METHODS: dict[str, SwmlMethod] = {**play.SWML_METHODS}
