"""Video Clipping Search: POST search-by-selfie, GET {request_id}. Parsing and rendering only;
the rules live in app/search/video_clipping.py."""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.contract import result_payload, start_payload
from app.errors import ApiError
from app.routes.common import API, authorize
from app.search.video_clipping import VideoClippingSearch
from app.services import parse_request_id

# Multipart framing around the file; a body this much over the limit is refused unread.
FORM_OVERHEAD_BYTES = 64 * 1024


def search_of(request: Request) -> VideoClippingSearch:
    return request.app.state.video_clipping


async def read_form(request: Request, max_upload_bytes: int) -> tuple[bytes | None, str | None]:
    """(selfie bytes or None, request_id text or None) from the multipart form."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_upload_bytes + FORM_OVERHEAD_BYTES:
        raise ApiError(413, f"The selfie is larger than {max_upload_bytes} bytes.", "file_too_large")
    try:
        form = await request.form(max_files=1, max_fields=4)
    except Exception as exc:
        raise ApiError(
            400, f"Expected a multipart form with 'file' and/or 'request_id' ({exc}).", "invalid_form"
        ) from None
    upload, raw_id = form.get("file"), form.get("request_id")
    if isinstance(upload, str) or (raw_id is not None and not isinstance(raw_id, str)):
        raise ApiError(400, "'file' must be a file upload and 'request_id' a text field.", "invalid_form")
    # One byte past the limit is enough for the service to say 413.
    data = await upload.read(max_upload_bytes + 1) if isinstance(upload, UploadFile) else None
    return data, raw_id or None


async def search_by_selfie(request: Request) -> JSONResponse:
    event = await authorize(request, "post")
    search = search_of(request)
    search.require_enabled(event)
    selfie, raw_id = await read_form(request, search.settings.api.max_upload_bytes)
    request_id, status = await search.start(event, selfie, raw_id)
    return JSONResponse(start_payload(request_id, status))


async def get_result(request: Request) -> JSONResponse:
    request_id = parse_request_id(request.path_params["request_id"])
    event = await authorize(request, "get")
    search = search_of(request)
    search.require_enabled(event)
    record = await search.result(event, request_id)
    return JSONResponse(
        result_payload(record.request_id, record.status, record.videos, record.error, record.clip_errors)
    )


def routes() -> list[Route]:
    return [
        Route(f"{API}/video-clipping/search-by-selfie", search_by_selfie, methods=["POST"]),
        Route(f"{API}/video-clipping/{{request_id}}", get_result, methods=["GET"]),
    ]
