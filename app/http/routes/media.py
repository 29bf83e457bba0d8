"""Files served to people, public by unguessable name: clips and posters
(/media/{org_id}/{event_id}/clips/{request_id}/{file}), event photos and their thumbnails
(/media/{org_id}/{event_id}/photos/{media_id}[/thumbnail.jpg])."""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from PIL.Image import DecompressionBombError, UnidentifiedImageError
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Route

from app.core.errors import DomainError
from app.features.services import parse_request_id
from app.http.openapi import Operation, api_route
from app.http.routes.common import path_ids, services_of
from pipelines.media import is_remote, open_binary
from pipelines.photos import content_type, thumbnail_jpeg
from pipelines.storage import OutputStorage, StorageError

MEDIA_ID = re.compile(r"^[0-9a-f]{32}$")
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
    org_id, event_id = path_ids(request, "No such clip.", "not_found")
    request_id = parse_request_id(request.path_params["request_id"])
    name = request.path_params["name"]
    if not FILE_NAME.match(name):
        raise DomainError("not_found", "No such clip.")
    storage = await services.clip_storage(org_id, event_id)
    if storage is None:
        raise DomainError("not_found", "No such clip.")
    key = f"{org_id}/{event_id}/clips/{request_id}/{name}"
    media_type = MEDIA_TYPES[name.rsplit(".", 1)[1]]
    try:
        if not await asyncio.to_thread(storage.exists, key):
            raise DomainError("not_found", "No such clip.")
        if not storage.remote:
            return FileResponse(storage.local_path(key), media_type=media_type)
        fh = await asyncio.to_thread(storage.open, key)
    except StorageError:
        raise DomainError("not_found", "No such clip.") from None
    return StreamingResponse(chunks_then_close(fh), media_type=media_type)


async def photo_row(request: Request) -> dict:
    """The media row of the photo named by the path (404 for anything else)."""
    services = services_of(request)
    media_id = request.path_params["media_id"]
    if not MEDIA_ID.match(media_id):
        raise DomainError("not_found", "No such photo.")
    org_id, event_id = path_ids(request, "No such photo.", "not_found")
    row = await asyncio.to_thread(services.face_store().media_by_id, org_id, event_id, media_id)
    if row is None or row["media_type"] != "photo":
        raise DomainError("not_found", "No such photo.")
    return row


async def photo_file(request: Request) -> Response:
    row = await photo_row(request)
    media_type = content_type(row["codec"])
    if not is_remote(row["uri"]):
        local = Path(row["uri"].removeprefix("file://"))
        if not await asyncio.to_thread(local.is_file):
            raise DomainError("not_found", "No such photo.")
        return FileResponse(local, media_type=media_type)
    options = await services_of(request).source_options(row["org_id"], row["event_id"], row["uri"])
    try:
        fh = await asyncio.to_thread(open_binary, row["uri"], options or None)
    except OSError:
        raise DomainError("not_found", "No such photo.") from None
    return StreamingResponse(chunks_then_close(fh), media_type=media_type)


def make_thumbnail(row: dict, storage: OutputStorage, key: str, max_px: int, storage_options: dict) -> None:
    """Write the photo's thumbnail to ``key`` (atomically: concurrent first requests race safely)."""
    with open_binary(row["uri"], storage_options or None) as fh:
        data = thumbnail_jpeg(fh, max_px)
    with tempfile.TemporaryDirectory(prefix="facereel-thumb-") as tmp:
        path = Path(tmp) / "thumb.jpg"
        path.write_bytes(data)
        storage.put(path, key)


async def photo_thumbnail(request: Request) -> Response:
    row = await photo_row(request)
    services = services_of(request)
    org_id, event_id = row["org_id"], row["event_id"]
    storage = await services.clip_storage(org_id, event_id)
    if storage is None:
        raise DomainError("not_found", "No such photo.")
    key = f"{org_id}/{event_id}/thumbnails/{row['media_id']}.jpg"
    settings = services.settings
    options = await services.source_options(org_id, event_id, row["uri"])
    try:
        if not await asyncio.to_thread(storage.exists, key):
            await asyncio.to_thread(make_thumbnail, row, storage, key, settings.api.thumbnail_px, options)
        if not storage.remote:
            return FileResponse(storage.local_path(key), media_type="image/jpeg")
        fh = await asyncio.to_thread(storage.open, key)
    except (OSError, UnidentifiedImageError, DecompressionBombError):
        raise DomainError("not_found", "No such photo.") from None
    return StreamingResponse(chunks_then_close(fh), media_type="image/jpeg")


def routes() -> list[Route]:
    tag, base = "Media", "/media/{org_id:int}/{event_id:int}"
    clip = Operation(
        "getClipFile",
        "A clip (MP4) or its poster (JPEG); public by unguessable name",
        tag,
        ok_media=tuple(MEDIA_TYPES.values()),
        errors=(400,),
        auth=False,
    )
    photo = Operation("getPhoto", "An event photo, by its media_id", tag, ok_media=("image/*",), auth=False)
    thumb = Operation("getPhotoThumbnail", "A photo's JPEG thumbnail", tag, ok_media=("image/jpeg",), auth=False)
    return [
        api_route(f"{base}/clips/{{request_id}}/{{name}}", clip_file, "GET", clip),
        api_route(f"{base}/photos/{{media_id}}", photo_file, "GET", photo),
        api_route(f"{base}/photos/{{media_id}}/thumbnail.jpg", photo_thumbnail, "GET", thumb),
    ]
