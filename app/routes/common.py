"""What every API route does first: the path's org and event, the key, the rate limit."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from app.config import ApiSettings
from app.errors import ApiError
from app.events import Event
from app.routes import multipart
from app.services import Services

API = "/api/v1/ext/{org_id:int}/event/{event_id:int}"
# Multipart framing around the file; a body this much over the limit is refused unread.
FORM_OVERHEAD_BYTES = 64 * 1024


@dataclass
class SearchForm:
    files: list[bytes]  # the selfie uploads (field ``file``), in order
    fields: dict[str, str]  # each text field at most once; empty values left out


def services_of(request: Request) -> Services:
    return request.app.state.services


async def authorize(request: Request, kind: str) -> Event:
    """The event named by the path, once the X-API-Key may use it (401/403/404/429 otherwise)."""
    org_id, event_id = request.path_params["org_id"], request.path_params["event_id"]
    _, event = await services_of(request).authorize(request.headers.get("x-api-key"), org_id, event_id, kind)
    return event


async def read_search_form(request: Request, api: ApiSettings, text_fields: tuple[str, ...]) -> SearchForm:
    """A search's multipart form: selfie ``file`` uploads and the named text fields."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > api.max_selfies * (api.max_upload_bytes + FORM_OVERHEAD_BYTES):
        raise ApiError(413, f"The selfie is larger than {api.max_upload_bytes} bytes.", "file_too_large")
    form = await multipart.read_form(request, api.max_upload_bytes, api.max_selfies)
    misplaced = "file" in form.fields or any(name in form.files for name in text_fields)
    if misplaced or any(len(form.fields.get(name, [])) > 1 for name in text_fields):
        named = ", ".join(f"'{n}'" for n in text_fields)
        raise ApiError(400, f"'file' must be a file upload and {named} text fields, each sent once.", "invalid_form")
    fields = {name: form.fields[name][0] for name in text_fields if form.fields.get(name, [""])[0]}
    return SearchForm(form.files.get("file", []), fields)


async def read_json(request: Request) -> object:
    try:
        return await request.json()
    except Exception:
        raise ApiError(400, "Expected a JSON body.", "invalid_body") from None
