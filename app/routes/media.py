"""GET /media/{org_id}/{event_id}/clips/{request_id}/{file}: clip files, public by unguessable name."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import BinaryIO

from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Route

from app.errors import ApiError
from app.routes.common import services_of
from app.services import parse_request_id
from pipelines.storage import StorageError

FILE_NAME = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.(mp4|jpg)$")
MEDIA_TYPES = {"mp4": "video/mp4", "jpg": "image/jpeg"}
CHUNK_BYTES = 1 << 16


def chunks_then_close(fh: BinaryIO) -> Iterator[bytes]:
    """The file in chunks; closed when the response ends, however it ends."""
    with fh:
        while chunk := fh.read(CHUNK_BYTES):
            yield chunk


async def clip_file(request: Request) -> Response:
    services = services_of(request)
    org_id, event_id = request.path_params["org_id"], request.path_params["event_id"]
    request_id = parse_request_id(request.path_params["request_id"])
    name = request.path_params["name"]
    if not FILE_NAME.match(name):
        raise ApiError(404, "No such clip.", "not_found")
    storage = await services.clip_storage(org_id, event_id)
    if storage is None:
        raise ApiError(404, "No such clip.", "not_found")
    key = f"{org_id}/{event_id}/clips/{request_id}/{name}"
    media_type = MEDIA_TYPES[name.rsplit(".", 1)[1]]
    try:
        if not await asyncio.to_thread(storage.exists, key):
            raise ApiError(404, "No such clip.", "not_found")
        if not storage.remote:
            return FileResponse(storage.local_path(key), media_type=media_type)
        fh = await asyncio.to_thread(storage.open, key)
    except StorageError:
        raise ApiError(404, "No such clip.", "not_found") from None
    return StreamingResponse(chunks_then_close(fh), media_type=media_type)


def routes() -> list[Route]:
    return [
        Route("/media/{org_id:int}/{event_id:int}/clips/{request_id}/{name}", clip_file, methods=["GET", "HEAD"]),
    ]
