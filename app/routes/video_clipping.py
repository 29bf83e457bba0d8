"""Video Clipping Search: POST search-by-selfie, GET {request_id}."""

from __future__ import annotations

import asyncio
import logging
import uuid

import numpy as np
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse

from app.contract import FAILED, NO_MATCHES, PROCESSING, result_payload, start_payload
from app.dispatch import SearchJob, run_search
from app.errors import ApiError
from app.events import Event
from app.records import SearchRecord
from app.services import Services, parse_request_id
from pipelines.models import pack_info
from pipelines.models.registry import match_threshold

log = logging.getLogger(__name__)

JPEG_MAGIC, PNG_MAGIC = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"


def require_video_clipping(event: Event) -> None:
    if not (event.video_search and event.video_selfie_search):
        raise ApiError(
            403, "Video clipping (video_search and video_selfie_search) is disabled for this event.", "feature_disabled"
        )


async def read_selfie(upload: UploadFile, max_bytes: int) -> bytes:
    data = await upload.read(max_bytes + 1)
    if not data:
        raise ApiError(400, "The uploaded selfie file is empty.", "empty_file")
    if len(data) > max_bytes:
        raise ApiError(413, f"The selfie is larger than {max_bytes} bytes.", "file_too_large")
    if not (data.startswith(JPEG_MAGIC) or data.startswith(PNG_MAGIC)):
        raise ApiError(400, "The selfie must be a JPEG or PNG image.", "unsupported_file_type")
    return data


def event_threshold(services: Services, event: Event) -> float:
    return event.match_threshold if event.match_threshold is not None else match_threshold(services.settings.models)


async def search_by_selfie(request: Request, services: Services) -> JSONResponse:
    org_id, event_id = request.path_params["org_id"], request.path_params["event_id"]
    _, event = await services.authorize(request.headers.get("x-api-key"), org_id, event_id, "post")
    require_video_clipping(event)
    limit = services.settings.api.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + 64 * 1024:  # refuse before reading the body
        raise ApiError(413, f"The selfie is larger than {limit} bytes.", "file_too_large")
    try:
        form = await request.form(max_files=1, max_fields=4)
    except Exception as exc:
        raise ApiError(
            400, f"Expected a multipart form with 'file' and/or 'request_id' ({exc}).", "invalid_form"
        ) from None
    upload = form.get("file")
    raw_id = form.get("request_id")
    if isinstance(upload, str) or (raw_id is not None and not isinstance(raw_id, str)):
        raise ApiError(400, "'file' must be a file upload and 'request_id' a text field.", "invalid_form")
    if upload is None and not raw_id:
        raise ApiError(400, "Send a selfie 'file', a 'request_id', or both.", "missing_input")
    request_id = parse_request_id(raw_id) if raw_id else str(uuid.uuid4())

    existing = await asyncio.to_thread(services.records.get, request_id)
    if existing is not None and (existing.org_id, existing.event_id) != (org_id, event_id):
        # Another event's record: unknown here, and not to be overwritten.
        if upload is None:
            raise ApiError(404, "Unknown request_id.", "request_not_found")
        raise ApiError(
            400, "This request_id belongs to another event; omit it to start a new search.", "request_id_conflict"
        )

    pack = pack_info(services.settings.models.pack)
    if upload is not None:
        data = await read_selfie(upload, services.settings.api.max_upload_bytes)
        embedded = await services.embedder.embed.remote(data)
        if not embedded["ok"]:
            raise ApiError(400, embedded["message"], embedded["code"])
        vector = np.asarray(embedded["vector"], np.float32)
        record = existing or SearchRecord(request_id, org_id, event_id, PROCESSING, "", pack.name, None)
        record.embedding, record.model_pack, record.selfie = vector, embedded["model_pack"], embedded["selfie"]
    else:
        if existing is None:
            raise ApiError(404, "Unknown request_id.", "request_not_found")
        if existing.embedding is None:
            raise ApiError(400, "This request_id has no stored selfie; upload a file with it.", "no_stored_selfie")
        if existing.model_pack != pack.name:
            raise ApiError(
                400,
                "The stored selfie was embedded with another model pack; upload the selfie again.",
                "model_pack_changed",
            )
        record, vector = existing, existing.embedding

    try:
        record = await asyncio.to_thread(services.records.start, record)
        services.search_started()
    except Exception as exc:
        log.exception("could not record search %s", request_id)
        raise ApiError(500, f"The search could not be recorded: {exc}", "record_failed") from None
    return JSONResponse(start_payload(request_id, await dispatch(services, event, record, vector)))


async def dispatch(services: Services, event: Event, record: SearchRecord, vector: np.ndarray) -> str:
    """``no_matches`` at once when no video face is above the threshold, else start the job."""
    settings = services.settings
    threshold = event_threshold(services, event)

    def any_video_match() -> bool:
        store = services.face_store()
        return bool(
            store.search(event.org_id, event.event_id, vector, min_similarity=threshold, limit=1, media_type="video")
        )

    try:
        if not await asyncio.to_thread(any_video_match):
            await asyncio.to_thread(services.records.finish, record.request_id, record.job_id, NO_MATCHES)
            return NO_MATCHES
        job = SearchJob(
            request_id=record.request_id,
            job_id=record.job_id,
            org_id=event.org_id,
            event_id=event.event_id,
            threshold=threshold,
            segments=event.segment_rules(settings.segments).model_dump(),
            output_root=event.output_location(settings),
        )
        run_search.remote(settings.model_dump(), job, vector)
    except Exception as exc:
        log.exception("could not start search %s", record.request_id)
        await asyncio.to_thread(
            services.records.finish,
            record.request_id,
            record.job_id,
            FAILED,
            error=f"Failed to start processing: {exc}",
        )
        raise ApiError(500, "The search could not be started; start a new search.", "dispatch_failed") from None
    return PROCESSING


async def get_result(request: Request, services: Services) -> JSONResponse:
    org_id, event_id = request.path_params["org_id"], request.path_params["event_id"]
    request_id = parse_request_id(request.path_params["request_id"])
    _, event = await services.authorize(request.headers.get("x-api-key"), org_id, event_id, "get")
    require_video_clipping(event)
    record = await asyncio.to_thread(services.records.get, request_id)
    if record is None or (record.org_id, record.event_id) != (org_id, event_id):
        raise ApiError(404, "Unknown request_id.", "request_not_found")
    return JSONResponse(
        result_payload(record.request_id, record.status, record.videos, record.error, record.clip_errors)
    )
