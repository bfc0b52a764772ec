"""Debug views of conferences and queues, in the style of `GET /api/calling/calls/{id}`:

    GET /api/calling/conferences           {"data": [conference, ...]}  the project's live ones
    GET /api/calling/conferences/{id}      one conference (live, or among the last ended), or 404
    GET /api/calling/queues                {"data": [queue, ...]}

Under /api, so behind the edge's Basic auth; every view is scoped to the asking project.
"""

from __future__ import annotations

from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from callplane.api.auth import project_of
from callplane.api.errors import json_response, simple
from callplane.api.schema import UUID_RE


class Conferences(Protocol):
    def list(self, project_id: str) -> list[dict[str, Any]]: ...

    def get(self, project_id: str, conference_id: str) -> dict[str, Any] | None: ...


class Queues(Protocol):
    def list(self, project_id: str) -> list[dict[str, Any]]: ...


def conference_routes(conferences: Conferences, queues: Queues) -> list[BaseRoute]:
    async def list_conferences(request: Request) -> Response:
        return json_response(200, {"data": conferences.list(project_of(request))})

    async def get_conference(request: Request) -> Response:
        conference_id = str(request.path_params["conference_id"])
        if not UUID_RE.fullmatch(conference_id):
            return json_response(404, simple(404))
        found = conferences.get(project_of(request), conference_id.lower())
        return json_response(200, found) if found is not None else json_response(404, simple(404))

    async def list_queues(request: Request) -> Response:
        return json_response(200, {"data": queues.list(project_of(request))})

    return [
        Route("/api/calling/conferences", list_conferences, methods=["GET"]),
        Route("/api/calling/conferences/{conference_id}", get_conference, methods=["GET"]),
        Route("/api/calling/queues", list_queues, methods=["GET"]),
    ]
