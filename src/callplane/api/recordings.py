"""Recording downloads: `GET /api/calling/recordings/{id}` serves the file a `finished` record
event points at. It sits under /api, so the edge's Basic auth protects it like every command."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from callplane.api.errors import json_response, simple
from callplane.store import RecordingRow

MEDIA_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg", "mp4": "audio/mp4"}


def recording_routes(
    find: Callable[[str], RecordingRow | None],
) -> list[BaseRoute]:
    async def download(request: Request) -> Response:
        row = find(str(request.path_params["recording_id"]))
        if row is None or row["size"] is None:  # unknown, or still being written
            return json_response(404, simple(404))
        path = Path(row["path"])
        if not await asyncio.to_thread(path.is_file):
            return json_response(404, simple(404))
        return FileResponse(
            path,
            media_type=MEDIA_TYPES.get(row["format"], "application/octet-stream"),
            filename=f"{row['id']}.{row['format']}",
        )

    return [Route("/api/calling/recordings/{recording_id}", download, methods=["GET"])]
