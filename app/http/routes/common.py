"""What every API route does first: the path's org and event, the key, the rate limit."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.config import ApiSettings
from app.core.contract import envelope
from app.core.errors import DomainError
from app.features.search.bib_search import BibSearch
from app.features.search.face_search import FaceSearch
from app.features.search.video_clipping import VideoClippingSearch
from app.features.services import Services, parse_request_id
from app.http import multipart
from app.obs.log_context import bind
from app.store.events import Event

API = "/api/v1/ext/{org_id:int}/event/{event_id:int}"
# Ids are stored as Int64: a larger one names nothing (and must never reach a filter).
MAX_ID = 2**63 - 1
# Multipart framing around the file; a body this much over the limit is refused unread.
FORM_OVERHEAD_BYTES = 64 * 1024


@dataclass
class SearchForm:
    files: list[bytes]  # the selfie uploads (field ``file``), in order
    fields: dict[str, str]  # each text field at most once; empty values left out


@dataclass(frozen=True)
class UseCases:
    """What the routes call, built once per replica (app/http/api.py): the services, and each
    search kind's service. Every route reaches its use case through ``use_cases(request)``."""

    services: Services
    video_clipping: VideoClippingSearch
    face_search: FaceSearch
    bib_search: BibSearch


def use_cases(request: Request) -> UseCases:
    return request.app.state.use_cases


def services_of(request: Request) -> Services:
    return use_cases(request).services


def path_ids(
    request: Request, not_found: str = "Event configuration not found.", code: str = "event_not_found"
) -> tuple[int, int]:
    """The path's org and event ids; 404 for ids no event can have."""
    org_id, event_id = request.path_params["org_id"], request.path_params["event_id"]
    if org_id > MAX_ID or event_id > MAX_ID:
        raise DomainError(code, not_found)
    return org_id, event_id


async def authorize(request: Request, kind: str) -> Event:
    """The event named by the path, once the X-API-Key may use it (401/403/404/429 otherwise)."""
    org_id, event_id = path_ids(request)
    bind(org_id=org_id, event_id=event_id, request_id=request.path_params.get("request_id"))
    _, event = await services_of(request).auth.authorize(request.headers.get("x-api-key"), org_id, event_id, kind)
    return event


async def read_search_form(request: Request, api: ApiSettings, text_fields: tuple[str, ...]) -> SearchForm:
    """A search's multipart form: selfie ``file`` uploads and the named text fields."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > api.max_selfies * (api.max_upload_bytes + FORM_OVERHEAD_BYTES):
        raise DomainError("file_too_large", f"The selfie is larger than {api.max_upload_bytes} bytes.")
    form = await multipart.read_form(request, api.max_upload_bytes, api.max_selfies, timeout_s=api.body_timeout_s)
    misplaced = "file" in form.fields or any(name in form.files for name in text_fields)
    if misplaced or any(len(form.fields.get(name, [])) > 1 for name in text_fields):
        named = ", ".join(f"'{n}'" for n in text_fields)
        raise DomainError("invalid_form", f"'file' must be a file upload and {named} text fields, each sent once.")
    fields = {name: form.fields[name][0] for name in text_fields if form.fields.get(name, [""])[0]}
    return SearchForm(form.files.get("file", []), fields)


async def read_json(request: Request) -> object:
    timeout_s = services_of(request).settings.api.body_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            return await request.json()
    except TimeoutError:
        raise DomainError("body_timeout", f"The request body did not arrive within {timeout_s:g} s.") from None
    except Exception:
        raise DomainError("invalid_body", "Expected a JSON body.") from None


async def delete_search(request: Request) -> JSONResponse:
    """DELETE .../video-clipping/{request_id} or .../face-search/{request_id}: one shared record."""
    from app.features.search.requests import delete_request

    request_id = parse_request_id(request.path_params["request_id"])
    event = await authorize(request, "post")
    removed = await delete_request(services_of(request), event, request_id)
    return JSONResponse(envelope("The request and everything stored for it were deleted.", removed))


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names ``etag`` (weak comparison, as RFC 9110 asks
    for If-None-Match; ``*`` matches any)."""
    if not if_none_match:
        return False
    tags = [t.strip() for t in if_none_match.split(",")]
    return "*" in tags or etag.removeprefix("W/") in (t.removeprefix("W/") for t in tags)


def json_with_etag(request: Request, content: dict) -> Response:
    """The JSON answer with a strong ETag of its bytes; a 304 without a body when the
    request's If-None-Match already names it. ``private, no-cache``: the answer depends on
    the API key, and a client must revalidate (which costs it a 304, not the body)."""
    response = JSONResponse(content)
    etag = '"' + hashlib.blake2b(response.body, digest_size=12).hexdigest() + '"'
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    response.headers.update(headers)
    return response
