"""The contract between the HTTP edge and the call engine."""

from __future__ import annotations

from typing import Any, Protocol


class CommandError(Exception):
    """A command the engine refuses; the api turns it into the reference's error body.

    `status` is the HTTP status (400, 404, 409, 422, 501, 503); `code` is a reference §6.2 error
    code; `retry_after` (seconds) goes out as the response's ``Retry-After`` header.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        attribute: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.attribute = attribute
        self.retry_after = retry_after


class Engine(Protocol):
    async def execute(
        self,
        project_id: str,
        command: str,
        call_id: str | None,
        params: dict[str, Any],
    ) -> dict[str, Any]:
        """Run one validated command with canonical params; return the call's CallLeg."""
        ...

    async def get_call(self, project_id: str, call_id: str) -> dict[str, Any] | None: ...

    async def get_call_events(
        self, project_id: str, call_id: str
    ) -> list[dict[str, Any]] | None: ...
