"""An event's media over HTTP: POST …/media (multipart uploads, or a JSON list of URIs),
GET …/media (pages, with each source's index status), DELETE …/media/{media_key}."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.config import AppSettings
from app.core import schemas
from app.core.contract import envelope
from app.core.errors import DomainError
from app.features.search.photos import parse_page
from app.features.services import Services
from app.features.sources import event_media, register_uris, remove_source, store_uploads
from app.http.multipart import read_uploads
from app.http.openapi import Operation, Param, api_route
from app.http.routes.common import API, FORM_OVERHEAD_BYTES, authorize, read_json, services_of
from app.store.events import Event


async def add_media(request: Request) -> JSONResponse:
    event = await authorize(request, "post")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        body = await read_json(request)
        added = await asyncio.to_thread(
            register_uris, services_of(request), event, parse_uris(body, services_of(request))
        )
    else:
        added = await upload(request, event)
    count = len(added["media"])
    return JSONResponse(envelope(f"{count} media added", added))


def parse_uris(body: object, services: Services) -> list[str]:
    limit = services.settings.api.max_media_uris
    uris = body.get("uris") if isinstance(body, dict) and set(body) == {"uris"} else None
    if not isinstance(uris, list) or not uris or not all(isinstance(u, str) and u.strip() for u in uris):
        raise DomainError("invalid_body", 'Send {"uris": ["s3://bucket/key", "/path/under/an/allowed/root", ...]}.')
    if len(uris) > limit:
        raise DomainError("too_many_uris", f"Send at most {limit} URIs per request.")
    return [u.strip() for u in uris]


async def upload(request: Request, event: Event) -> dict:
    services = services_of(request)
    api = services.settings.api
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > api.max_media_files * (api.max_media_upload_bytes + FORM_OVERHEAD_BYTES):
        raise DomainError("file_too_large", f"A file is larger than {api.max_media_upload_bytes} bytes.")
    spool = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="facereel-upload-", dir=api.upload_spool_dir or None))
    try:
        uploads = await read_uploads(
            request, spool, api.max_media_upload_bytes, api.max_media_files, api.body_timeout_s
        )
        return await asyncio.to_thread(store_uploads, services, event, uploads)
    finally:
        await asyncio.to_thread(shutil.rmtree, spool, True)


async def list_sources(request: Request) -> JSONResponse:
    event = await authorize(request, "get")
    services = services_of(request)
    page = parse_page(request.query_params.get("page"), request.query_params.get("page_size"), services.settings)
    items = await asyncio.to_thread(event_media, services, event)
    total = len(items)
    data = {
        "media": page.slice(items),
        "page": page.number,
        "page_size": page.size,
        "total_media": total,
        "total_pages": (total + page.size - 1) // page.size,
    }
    return JSONResponse(envelope("Media retrieved", data))


async def delete_source(request: Request) -> JSONResponse:
    event = await authorize(request, "post")
    key = request.path_params["media_key"]
    removed = await asyncio.to_thread(remove_source, services_of(request), event, key)
    return JSONResponse(
        envelope("The source and its index rows were deleted.", {"media_key": key, "deleted": True, "removed": removed})
    )


def routes(settings: AppSettings) -> list[Route]:
    tag, path = "Media and indexing", f"{API}/media"
    add = Operation(
        "addMedia",
        "Upload media files (multipart, field 'file') or register URIs already in storage (JSON)",
        tag,
        ok=schemas.MediaAddedEnvelope,
        form=schemas.MediaUploadForm,
        json_body=schemas.MediaUrisBody,
        errors=(400, 409, 413),
        description=(
            f"Uploads are sniffed by content (a photo or a decodable video, else 400) and stored under the event's "
            f"source location; at most {settings.api.max_media_files} files of {settings.api.max_media_upload_bytes} "
            "bytes each. URIs must lie under the allowed media roots."
        ),
    )
    listing = Operation(
        "listMedia",
        "The event's media, a page at a time, each with its index status",
        tag,
        ok=schemas.MediaPageEnvelope,
        errors=(400,),
        query=(
            Param("page", {"type": "integer", "minimum": 1, "maximum": 1_000_000}, "1-based page number."),
            Param(
                "page_size",
                {"type": "integer", "minimum": 1, "maximum": settings.api.max_page_size},
                f"Media per page (default {settings.api.page_size}).",
            ),
        ),
    )
    delete = Operation(
        "deleteMedia",
        "Remove a source: its faces, tracks and BIBs from the index, its registration, and its uploaded file",
        tag,
        ok=schemas.MediaDeletedEnvelope,
        errors=(409,),
    )
    return [
        api_route(path, add_media, "POST", add),
        api_route(path, list_sources, "GET", listing),
        api_route(f"{path}/{{media_key:path}}", delete_source, "DELETE", delete),
    ]
