"""The OpenAPI 3.1 document, written from the routes themselves.

Every route is declared with ``api_route(path, endpoint, method, Operation(...))``: its
summary, the body types of app/core/schemas.py it answers and accepts, and the error statuses it
can give. ``document`` walks the app's routes and refuses one without an Operation, so a
route cannot exist undocumented; the bodies' JSON Schemas come from the same types the
contract's builders are annotated with (pydantic generates them); and the schema fuzz in
tests/test_openapi.py holds the running service to the result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter
from starlette.routing import BaseRoute, Route

from app.config import AppSettings
from app.core import schemas
from app.http.routes.common import MAX_ID

ERROR_DESCRIPTIONS = {
    400: "Bad input: the code says which rule it broke.",
    401: "No API key: send it in X-API-Key.",
    403: "The key is invalid, inactive or not for this org/event, or the feature is off for the event.",
    404: "No such event, request, clip or photo (also for ids beyond the stored range).",
    405: "Method not allowed.",
    408: "The request body did not arrive within api.body_timeout_s (uploads: no data for that long).",
    409: "The search is still processing, or the event's index job is running, or the media key is taken.",
    413: "An upload is larger than api.max_upload_bytes (selfies) or api.max_media_upload_bytes (media).",
    429: "Rate limit of this API key exceeded: retry after Retry-After seconds.",
    500: "Internal error (enveloped; also when a search could not be recorded or dispatched).",
    503: "Overloaded or a worker is restarting: retry after Retry-After seconds (the same request_id is safe).",
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
# Every route may answer these: unknown paths, the enveloped 500, load shedding.
ALWAYS = (404, 500, 503)
AUTHORIZED = (401, 403, 404, 429)
PATH_PARAMS: dict[str, dict] = {
    "request_id": {"type": "string", "format": "uuid"},
    "name": {"type": "string", "pattern": r"^[0-9a-f-]{36}\.(mp4|jpg)$"},
    "media_id": {"type": "string", "pattern": r"^[0-9a-f]{32}$"},
    "job_id": {"type": "string", "format": "uuid"},
    "media_key": {"type": "string", "minLength": 1, "maxLength": 1024},
}


@dataclass(frozen=True)
class Param:
    name: str
    schema: dict
    description: str = ""


@dataclass(frozen=True)
class Operation:
    """What one route does, for the document (the route's code does it)."""

    operation_id: str
    summary: str
    tag: str
    ok: Any = None  # the JSON body of a 200 (a type of app/core/schemas.py)
    ok_media: tuple[str, ...] = ()  # or the media types of a file body
    errors: tuple[int, ...] = ()
    form: Any = None  # a multipart/form-data body type
    json_body: Any = None  # or a JSON body type
    query: tuple[Param, ...] = ()
    auth: bool = True
    description: str = ""
    extra_responses: dict = field(default_factory=dict)
    # The 200 carries an ETag; If-None-Match with it answers 304 without a body (polling).
    etag: bool = False


def api_route(path: str, endpoint, method: str, operation: Operation) -> Route:
    route = Route(path, endpoint, methods=[method])
    route.operation = operation  # type: ignore[attr-defined]
    return route


def page_params(settings: AppSettings) -> tuple[Param, Param]:
    return (
        Param("page", {"type": "integer", "minimum": 1, "maximum": 1_000_000}, "1-based page number."),
        Param(
            "page_size",
            {"type": "integer", "minimum": 1, "maximum": settings.api.max_page_size},
            f"Photos per page (default {settings.api.page_size}).",
        ),
    )


def bib_param(settings: AppSettings) -> Param:
    b = settings.bibs
    pattern = rf"^[0-9]{{{b.min_digits},{b.max_digits}}}$"
    return Param("bib", {"type": "string", "pattern": pattern}, "The race number, digits only.")


def _path_param(name: str, converter: str | None) -> dict:
    if converter == "int":
        schema = {"type": "integer", "minimum": 0, "maximum": MAX_ID, "format": "int64"}
    else:
        schema = PATH_PARAMS.get(name, {"type": "string"})
    return {"name": name, "in": "path", "required": True, "schema": schema}


ETAG = {
    "ETag": {
        "description": "A strong validator of this answer's body: send it back in If-None-Match.",
        "schema": {"type": "string"},
    }
}
NOT_MODIFIED = "Not Modified: the answer is the one whose ETag the request's If-None-Match names (no body)."
IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "The ETag of the answer the client holds: 304 when it is still the answer.",
}


def _error_response(status: int, ref: dict) -> dict:
    response: dict = {
        "description": ERROR_DESCRIPTIONS[status],
        "content": {"application/json": {"schema": ref}},
    }
    if status in (429, 503):
        response["headers"] = RETRY_AFTER
    return response


def _operation(route: Route, op: Operation, refs: dict) -> dict:
    params = [_path_param(n, c) for n, c in re.findall(r"\{(\w+)(?::(\w+))?\}", route.path)]
    params += [{"name": p.name, "in": "query", "required": False, "schema": p.schema, "description": p.description}
               for p in op.query]  # fmt: skip
    responses: dict[str, dict] = {}
    if op.ok is not None:
        responses["200"] = {"description": "OK", "content": {"application/json": {"schema": refs[op.ok]}}}
    else:
        binary = {"type": "string", "format": "binary"}
        responses["200"] = {"description": "OK", "content": {m: {"schema": binary} for m in op.ok_media}}
    statuses = set(op.errors) | set(ALWAYS) | (set(AUTHORIZED) if op.auth else set())
    statuses |= {408, 413} if op.form is not None else set()
    statuses |= {408} if op.json_body is not None else set()
    for status in sorted(statuses):
        responses[str(status)] = _error_response(status, refs[schemas.ErrorEnvelope])
    if op.etag:
        responses["200"]["headers"] = ETAG
        responses["304"] = {"description": NOT_MODIFIED, "headers": ETAG}
        params.append(IF_NONE_MATCH)
    responses.update(op.extra_responses)
    result: dict = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": params,
        "responses": responses,
    }
    if op.description:
        result["description"] = op.description
    if op.form is not None:
        result["requestBody"] = {
            "required": True,
            "content": {"multipart/form-data": {"schema": refs[op.form]}},
        }
    if op.json_body is not None:
        content = result.get("requestBody", {}).get("content", {})
        content["application/json"] = {"schema": refs[op.json_body]}
        result["requestBody"] = {"required": True, "content": content}
    result["security"] = [{"ApiKey": []}] if op.auth else []
    return result


def operations(routes: list[BaseRoute]) -> list[tuple[Route, Operation]]:
    """Each Route with its Operation; a route without one is an error (docs cannot lag code)."""
    found = []
    for route in routes:
        if not isinstance(route, Route):
            continue  # mounts (the docs' static files) are not API operations
        op = getattr(route, "operation", None)
        if op is None:
            raise ValueError(f"route {route.path} has no OpenAPI Operation: declare it with api_route()")
        found.append((route, op))
    return found


def document(routes: list[BaseRoute], settings: AppSettings) -> dict:
    """The OpenAPI 3.1 document of these routes."""
    ops = operations(routes)
    types = {schemas.ErrorEnvelope}
    for _, op in ops:
        types |= {t for t in (op.ok, op.form, op.json_body) if t is not None}
    ordered = sorted(types, key=lambda t: t.__name__)
    keyed, defs = TypeAdapter.json_schemas(
        [(t, "serialization", TypeAdapter(t)) for t in ordered], ref_template="#/components/schemas/{model}"
    )
    refs = {t: keyed[(t, "serialization")] for t in ordered}
    paths: dict[str, dict] = {}
    for route, op in ops:
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        for method in sorted((route.methods or set()) - {"HEAD"}):
            paths.setdefault(path, {})[method.lower()] = _operation(route, op, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "facereel API",
            "version": "1",
            "description": (
                "Find a participant's moments in an event's videos and photos from a selfie or a BIB number. "
                "Every JSON body is the envelope {responseType, message, data}; errors carry data.code. "
                f"A revoked API key or a changed event stops taking effect within api.auth_cache_s "
                f"({settings.api.auth_cache_s:g} s), the time a replica reuses what it read. "
                "Webhooks (webhook_url on index jobs and searches) POST the final data of the GET, signed: "
                "X-Facereel-Signature is sha256=HMAC-SHA256(org secret, X-Facereel-Timestamp + '.' + body)."
            ),
        },
        "servers": [{"url": settings.api.public_base_url}],
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
    }
