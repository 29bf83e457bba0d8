"""An event's media over HTTP: POST …/media (multipart uploads, or a JSON list of URIs),
GET …/media (pages, with each source's index status), DELETE …/media/{media_key}."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app import schemas
from app.config import AppSettings
from app.contract import envelope
from app.errors import ApiError
from app.events import Event
from app.index_jobs import ACTIVE
from app.openapi import Operation, Param, api_route
from app.routes.common import API, FORM_OVERHEAD_BYTES, authorize, read_json, services_of
from app.routes.multipart import Upload, read_uploads
from app.search.photos import parse_page
from app.services import Services
from app.sources import (
    Sniffed,
    allowed_roots,
    media_item,
    media_key_for_upload,
    media_row,
    sniff,
    source_location,
    within_roots,
)
from pipelines.media import MediaSource, is_remote, list_media
from pipelines.storage import OutputStorage, StorageError


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
        raise ApiError(400, 'Send {"uris": ["s3://bucket/key", "/path/under/an/allowed/root", ...]}.', "invalid_body")
    if len(uris) > limit:
        raise ApiError(400, f"Send at most {limit} URIs per request.", "too_many_uris")
    return [u.strip() for u in uris]


async def upload(request: Request, event: Event) -> dict:
    services = services_of(request)
    api = services.settings.api
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > api.max_media_files * (api.max_media_upload_bytes + FORM_OVERHEAD_BYTES):
        raise ApiError(413, f"A file is larger than {api.max_media_upload_bytes} bytes.", "file_too_large")
    spool = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="facereel-upload-"))
    try:
        uploads = await read_uploads(
            request, spool, api.max_media_upload_bytes, api.max_media_files, api.body_timeout_s
        )
        return await asyncio.to_thread(store_uploads, services, event, uploads)
    finally:
        await asyncio.to_thread(shutil.rmtree, spool, True)


def store_uploads(services: Services, event: Event, uploads: list[Upload]) -> dict:
    """Sniff every file first (one that is not media refuses the whole request, storing
    nothing), then move each to the event's source location and register it."""
    keys: list[str] = []
    sniffed: list[Sniffed] = []
    for up in uploads:
        key = media_key_for_upload(up.filename)
        n = 1
        while key in keys:  # two files of one request with the same name
            n += 1
            stem, dot, ext = key.rpartition(".")
            key = f"{stem}-{n}.{ext}" if dot else f"{key}-{n}"
        try:
            sniffed.append(sniff(str(up.path)))
        except ValueError as exc:
            raise ApiError(
                400, f"{up.filename or key!r} is not a photo or video: {exc}.", "unsupported_media"
            ) from None
        if services.sources.get(event.org_id, event.event_id, key) is not None:
            raise ApiError(409, f"The event already has a source named {key!r}; delete it first.", "media_exists")
        keys.append(key)
    location = source_location(services.settings, event)
    storage = OutputStorage(location, services.settings.store.storage_options)
    items = []
    for up, key, found in zip(uploads, keys, sniffed, strict=True):
        # A folder of its own per upload: two uploads of one name can never overwrite each other.
        stored = f"uploads/{uuid.uuid4().hex}/{key}"
        try:
            storage.put(up.path, stored)
        except (OSError, StorageError) as exc:
            raise ApiError(500, f"The event's source storage refused the upload: {exc}", "storage_error") from None
        uri = f"{storage.root}/{stored}" if storage.remote else str(storage.local_path(stored))
        row = media_row(event, key, uri, "upload", up.size, found)
        if not services.sources.add(row):  # the same name registered meanwhile
            storage.remove([stored])
            raise ApiError(409, f"The event already has a source named {key!r}; delete it first.", "media_exists")
        items.append(media_item(row, None, set()))
    return {"media": items, "errors": []}


def register_uris(services: Services, event: Event, uris: list[str]) -> dict:
    """Register media already in storage. A URI outside the allowed roots refuses the whole
    request; one that cannot be read or is not media is a per-item error."""
    settings = services.settings
    roots = allowed_roots(settings, event)
    canonical = []
    for uri in uris:
        inside = within_roots(uri, roots)
        if inside is None:
            raise ApiError(400, f"{uri!r} is outside the allowed media roots.", "uri_not_allowed")
        canonical.append(inside)
    options = settings.store.storage_options or None
    items, errors = [], []
    for uri in canonical:
        try:
            sources = list_media([uri], settings.index.photo_extensions, settings.index.video_extensions, options)
        except (OSError, ValueError) as exc:
            errors.append({"uri": uri, "error": f"cannot list: {exc}"})
            continue
        if not sources:
            errors.append({"uri": uri, "error": "no photos or videos there"})
        for source in sources:
            if within_roots(source.uri, roots) is None:  # a symlink in a folder pointing out
                errors.append({"uri": source.uri, "error": "outside the allowed media roots"})
                continue
            item = register_source(services, event, source, options)
            if "error" in item:
                errors.append(item)
            else:
                items.append(item)
    if not items:
        raise ApiError(
            400, "None of the URIs could be registered: " + "; ".join(e["error"] for e in errors), "no_media"
        )
    return {"media": items, "errors": errors}


def register_source(services: Services, event: Event, source: MediaSource, options: dict | None) -> dict:
    try:
        found = sniff(source.uri, options)
    except ValueError as exc:
        return {"uri": source.uri, "error": str(exc)}
    except OSError as exc:
        return {"uri": source.uri, "error": f"cannot read: {exc}"}
    row = media_row(event, source.media_key, source.uri, "uri", source.size_bytes, found)
    if not services.sources.add(row):
        return {"uri": source.uri, "error": f"the event already has a source named {source.media_key!r}"}
    return media_item(row, None, set())


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


def event_media(services: Services, event: Event) -> list[dict]:
    """Registered sources and media indexed otherwise (the CLI), by key, with index status."""
    registered = {r["media_key"]: r for r in services.sources.rows(event.org_id, event.event_id)}
    indexed = {r["media_key"]: r for r in services.face_store().media_rows(event.org_id, event.event_id)}
    indexing: set[str] = set()
    for job in services.index_jobs.of_event(event.org_id, event.event_id, ACTIVE):
        indexing |= set(job.media_keys) - set(job.indexed) - set(job.media_errors)
    items = []
    for key in sorted(set(registered) | set(indexed)):
        row = registered.get(key) or {**indexed[key], "origin": "index"}
        index_row = indexed.get(key)
        if index_row is not None and row is not index_row and index_row["uri"] != row["uri"]:
            index_row = None  # indexed from another location: this source is not indexed yet
        items.append(media_item(row, index_row, indexing))
    return items


async def delete_source(request: Request) -> JSONResponse:
    event = await authorize(request, "post")
    key = request.path_params["media_key"]
    removed = await asyncio.to_thread(remove_source, services_of(request), event, key)
    return JSONResponse(
        envelope("The source and its index rows were deleted.", {"media_key": key, "deleted": True, "removed": removed})
    )


def remove_source(services: Services, event: Event, key: str) -> dict:
    org_id, event_id = event.org_id, event.event_id
    if services.index_jobs.of_event(org_id, event_id, ACTIVE):
        raise ApiError(409, "An index job of this event is running; cancel it or wait for it.", "index_job_running")
    store = services.face_store()
    registered = services.sources.get(org_id, event_id, key)
    counts = store.count_media_rows(org_id, event_id, key)
    if registered is None and not any(counts.values()):
        raise ApiError(404, "No such media in this event.", "media_not_found")
    store.delete_media_faces(org_id, event_id, [key])
    store.delete_media_rows(org_id, event_id, [key])
    files: list[str] = []
    if registered is not None and registered.get("origin") == "upload":
        files = remove_upload(services.settings, event, registered["uri"])
    registration = services.sources.delete(org_id, event_id, key)
    return {
        "faces": counts["faces"],
        "tracks": counts["tracks"],
        "bibs": counts["bibs"],
        "media": counts["media"],
        "registration": registration,
        "files": files,
    }


def remove_upload(settings: AppSettings, event: Event, uri: str) -> list[str]:
    """Delete an uploaded file (only ever under the event's source location)."""
    location = source_location(settings, event)
    storage = OutputStorage(location, settings.store.storage_options)
    root = storage.root if storage.remote else str(Path(location).expanduser().resolve())
    if not uri.startswith(root + "/"):
        return []
    stored = uri[len(root) + 1 :]
    storage.remove([stored])
    if not is_remote(location):
        storage.remove_empty_folder(stored.rsplit("/", 1)[0])
    return [stored]


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
