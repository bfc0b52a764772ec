"""Recording downloads: `GET /api/calling/recordings/{id}` serves the file a `finished` record
event points at. It sits under /api, so the edge's Basic auth protects it like every command,
and only the project of the recording's call may download it (another project gets 404, as for
an unknown id)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from callplane.api.auth import project_of
from callplane.api.errors import json_response, simple
from callplane.store import RecordingRow

MEDIA_TYPES = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "mp4": "audio/mp4",
    "pdf": "application/pdf",
}


def recording_routes(
    find: Callable[[str, str], RecordingRow | None],
) -> list[BaseRoute]:
    """``find(recording_id, project_id)``: the recording if its call belongs to the project."""

    async def download(request: Request) -> Response:
        row = find(str(request.path_params["recording_id"]), project_of(request))
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
