"""Error bodies in the reference's shapes (§6.1).

``{"error": "<reason phrase>"}`` for 400/401/403/404/405/413/500; ``{"errors": [item, ...]}`` for
422 and for engine refusals that carry a machine code (409, 422, 501 and any other 4xx/5xx the
engine raises).  The reference only ever shows ``type: "validation_error"``; for the engine's
non-validation refusals we use ``conflict_error`` (409) and ``not_implemented_error`` (501) so a
client can tell them apart without parsing ``code`` — an extension, documented here.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any, Final

from starlette.responses import Response

from callplane.api.schema import ERROR_DOCS_URL, Problem
from callplane.engine.facade import CommandError

SIMPLE_BODY_STATUSES: Final = frozenset({400, 401, 403, 404, 405, 413, 415, 500, 503})
ITEM_TYPES: Final = {409: "conflict_error", 501: "not_implemented_error"}


# Fixed here because http.HTTPStatus renames some phrases between Python versions (413).
PHRASES: Final = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def phrase(status: int) -> str:
    if status in PHRASES:
        return PHRASES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    # ensure_ascii=False keeps non-ASCII call data readable; allow_nan=False keeps it valid JSON.
    text = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Response(text, status_code=status, media_type="application/json", headers=headers)


def simple(status: int) -> dict[str, Any]:
    return {"error": phrase(status)}


def item(status: int, code: str, message: str, attribute: str | None) -> dict[str, Any]:
    return {
        "type": ITEM_TYPES.get(status, "validation_error"),
        "code": code,
        "message": message,
        "attribute": attribute,
        "url": ERROR_DOCS_URL,
    }


def for_problems(problems: list[Problem]) -> tuple[int, dict[str, Any]]:
    """A validation outcome: 400 if any rule is a 400 by the spec, else 422 with every item."""
    if any(p.status == 400 for p in problems):
        return 400, simple(400)
    return 422, {"errors": [p.as_item() for p in problems]}


def for_command_error(err: CommandError) -> tuple[int, dict[str, Any]]:
    status = err.status if isinstance(err.status, int) and 400 <= err.status <= 599 else 500
    if status in SIMPLE_BODY_STATUSES:
        return status, simple(status)
    return status, {"errors": [item(status, str(err.code), str(err.message), err.attribute)]}
