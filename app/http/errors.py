"""Domain errors as HTTP: each code's status, rendered once as an enveloped JSON response.

Use cases raise ``DomainError`` (app/core/errors.py) with a code and no status; this table is
the one place that says what each code means over HTTP. A code not listed is a client error
(400): the selfie checks of pipelines/ name their own codes (``no_face`` and the like).
"""

from __future__ import annotations

import math

from starlette.responses import JSONResponse

from app.core.contract import error_body
from app.core.errors import DomainError

STATUS = {
    "missing_api_key": 401,
    "feature_disabled": 403,
    "forbidden_event": 403,
    "invalid_api_key": 403,
    "org_key_required": 403,
    "event_not_found": 404,
    "index_job_not_found": 404,
    "media_not_found": 404,
    "not_found": 404,
    "request_not_found": 404,
    "body_timeout": 408,
    "event_has_media": 409,
    "index_job_ended": 409,
    "index_job_running": 409,
    "media_exists": 409,
    "search_busy": 409,
    "file_too_large": 413,
    "rate_limited": 429,
    "dispatch_failed": 500,
    "record_failed": 500,
    "storage_error": 500,
    "metrics_unavailable": 503,
    "overloaded": 503,
}
CLIENT_ERROR = 400


def status_of(code: str) -> int:
    return STATUS.get(code, CLIENT_ERROR)


def error_response(exc: DomainError) -> JSONResponse:
    headers = {} if exc.retry_after_s is None else {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    return JSONResponse(error_body(exc.message, exc.code), status_code=status_of(exc.code), headers=headers)
