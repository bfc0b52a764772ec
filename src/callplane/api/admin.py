"""Inspection and run-time configuration for test harnesses and the `callplane calls` CLI.

* ``GET /api/calling/calls`` lists the asking project's calls (newest last), ``?status=`` and
  ``?limit=`` (default 50, at most 1000) narrow it: ``{"data": [CallLeg, ...]}``.
* ``GET /api/routes`` lists the inbound routes; ``PUT /api/routes/{name}`` with
  ``{"url": "http(s)://..."}`` adds or replaces one (200 with the route), ``DELETE`` removes one
  (204). Routes are the server's (every inbound SIP call belongs to the default project), so
  only the default project may change them; other projects get 403. Routes added here live until
  the server stops (``--route`` is the persistent way). Unlike ``--route`` origins they are not
  trusted by the outbound target policy: with ``--private-targets deny`` a private URL is 422.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from callplane.api.auth import project_of
from callplane.api.errors import item, json_response, simple
from callplane.netpolicy import TargetPolicy

ROUTE_NAME = re.compile(r"^[A-Za-z0-9+._~-]{1,64}$")
MAX_ROUTE_BODY = 4096
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000

CallLister = Callable[[str, str | None], list[dict[str, Any]]]


def _invalid(message: str, attribute: str) -> Response:
    return json_response(422, {"errors": [item(422, "invalid_parameter", message, attribute)]})


def admin_routes(
    *,
    routes: MutableMapping[str, str],
    default_project: Callable[[], str],
    list_calls: CallLister,
    targets: TargetPolicy | None = None,
) -> list[BaseRoute]:
    """``routes`` is the engine's own route table (changed in place); ``list_calls(project,
    status)`` returns a project's call legs, oldest first."""

    async def calls(request: Request) -> Response:
        status = request.query_params.get("status") or None
        raw_limit = request.query_params.get("limit", str(DEFAULT_LIMIT))
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
            return _invalid(f"limit must be an integer from 1 to {MAX_LIMIT}", "limit")
        legs = list_calls(project_of(request), status)
        return json_response(200, {"data": legs[-int(raw_limit) :]})

    def _listing() -> dict[str, Any]:
        return {"data": [{"name": n, "url": u} for n, u in sorted(routes.items())]}

    async def list_routes(request: Request) -> Response:
        return json_response(200, _listing())

    async def change_route(request: Request) -> Response:
        if project_of(request) != default_project():
            return json_response(403, simple(403))
        name = str(request.path_params["name"])
        if not ROUTE_NAME.fullmatch(name):
            return _invalid("a route name is 1-64 characters of A-Z a-z 0-9 + . _ ~ -", "name")
        if request.method == "DELETE":
            if routes.pop(name, None) is None:
                return json_response(404, simple(404))
            return Response(status_code=204)
        body = await request.body()
        if len(body) > MAX_ROUTE_BODY:
            return json_response(413, simple(413))
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return json_response(400, simple(400))
        url = parsed.get("url") if isinstance(parsed, dict) else None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return _invalid("url must be an http(s) URL serving the route's SWML", "url")
        if targets is not None:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            refusal = targets.refusal(parts.hostname or "", port)
            if refusal is not None:
                return json_response(422, {"errors": [item(422, "url_is_unsafe", refusal, "url")]})
        routes[name] = url
        return json_response(200, {"name": name, "url": url})

    return [
        Route("/api/calling/calls", calls, methods=["GET"]),
        Route("/api/routes", list_routes, methods=["GET"]),
        Route("/api/routes/{name}", change_route, methods=["PUT", "DELETE"]),
    ]
