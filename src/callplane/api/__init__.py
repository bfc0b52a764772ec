"""The HTTP edge of callplane: auth, request validation/normalisation, error shapes."""

from callplane.api.app import create_app
from callplane.api.commands import COMMANDS, Command, validate_request
from callplane.api.idempotency import IdempotencyStore, MemoryIdempotencyStore

__all__ = [
    "COMMANDS",
    "Command",
    "IdempotencyStore",
    "MemoryIdempotencyStore",
    "create_app",
    "validate_request",
]
