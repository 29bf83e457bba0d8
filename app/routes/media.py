"""GET /media/{org_id}/{event_id}/clips/{request_id}/{file}: clip files, public by unguessable name."""

from __future__ import annotations

import asyncio
import re

from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse

from app.errors import ApiError
from app.services import Services, parse_request_id
from pipelines.storage import OutputStorage, StorageError

FILE_NAME = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.(mp4|jpg)$")
MEDIA_TYPES = {"mp4": "video/mp4", "jpg": "image/jpeg"}


async def clip_file(request: Request, services: Services) -> Response:
    org_id, event_id = request.path_params["org_id"], request.path_params["event_id"]
    request_id = parse_request_id(request.path_params["request_id"])
    name = request.path_params["name"]
    if not FILE_NAME.match(name):
        raise ApiError(404, "No such clip.", "not_found")
    event = await asyncio.to_thread(services.events.get, org_id, event_id)
    if event is None:
        raise ApiError(404, "No such clip.", "not_found")
    storage = OutputStorage(event.output_location(services.settings), services.settings.store.storage_options)
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
    return StreamingResponse(iter(lambda: fh.read(1 << 16), b""), media_type=media_type)
