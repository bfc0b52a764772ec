"""Placeholder: filled in by the tap operation's module."""

from callplane.engine.services import CommandHandler, SwmlMethod

COMMANDS: dict[str, CommandHandler] = {}
SWML_METHODS: dict[str, SwmlMethod] = {}
