"""Index jobs over HTTP: POST …/index-jobs, GET …/index-jobs/{job_id},
POST …/index-jobs/{job_id}/cancel. The job itself is app/store/index_jobs.py."""

from __future__ import annotations

import asyncio
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.config import AppSettings
from app.core import schemas
from app.core.contract import envelope
from app.core.errors import DomainError
from app.features.index_jobs import start_index_job
from app.http.openapi import Operation, api_route
from app.http.routes.common import API, authorize, read_json, services_of
from app.jobs.notify import deliveries
from app.store.index_jobs import ACTIVE, IndexJob

MAX_MEDIA_KEYS = 10_000


def parse_job_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise DomainError("index_job_not_found", "No such index job.") from None


def parse_body(body: object, settings: AppSettings) -> tuple[list[str] | None, str | None]:
    from app.core.webhooks import WebhookUrlError, check_webhook_url

    if not isinstance(body, dict) or set(body) - {"media_keys", "webhook_url"}:
        raise DomainError("invalid_body", 'Send {"media_keys": [...], "webhook_url": "https://..."} (both optional).')
    keys = body.get("media_keys")
    if keys is not None and (
        not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys) or len(keys) > MAX_MEDIA_KEYS
    ):
        raise DomainError("invalid_body", f"media_keys must be a list of up to {MAX_MEDIA_KEYS} media keys.")
    url = body.get("webhook_url")
    if url is not None:
        if not isinstance(url, str):
            raise DomainError("invalid_webhook_url", "webhook_url must be a string.")
        try:
            url = check_webhook_url(url, set(settings.api.webhook_allow_addresses))
        except WebhookUrlError as exc:
            raise DomainError("invalid_webhook_url", f"webhook_url refused: {exc}") from None
    return (list(dict.fromkeys(keys)) if keys is not None else None), url


async def start_job(request: Request) -> JSONResponse:
    event = await authorize(request, "post")
    services = services_of(request)
    keys, url = parse_body(await read_json(request), services.settings)
    job = await asyncio.to_thread(start_index_job, services, event, keys, url)
    return JSONResponse(envelope("Index job queued", job.payload([])))


async def get_job(request: Request) -> JSONResponse:
    event = await authorize(request, "get")
    job_id = parse_job_id(request.path_params["job_id"])
    services = services_of(request)
    job = await asyncio.to_thread(services.index_jobs.get, event.org_id, event.event_id, job_id)
    if job is None:
        raise DomainError("index_job_not_found", "No such index job.")
    sent = await asyncio.to_thread(deliveries, services.control, job.job_id) if job.webhook_url else []
    return JSONResponse(envelope("Index job retrieved", job.payload(sent)))


async def cancel_job(request: Request) -> JSONResponse:
    event = await authorize(request, "post")
    job_id = parse_job_id(request.path_params["job_id"])
    services = services_of(request)

    def cancel() -> IndexJob:
        job = services.index_jobs.get(event.org_id, event.event_id, job_id)
        if job is None:
            raise DomainError("index_job_not_found", "No such index job.")
        if job.status not in ACTIVE:
            raise DomainError("index_job_ended", f"The index job has already ended ({job.status}).")
        return services.index_jobs.request_cancel(job)

    job = await asyncio.to_thread(cancel)
    return JSONResponse(envelope("Cancel requested" if job.status in ACTIVE else "Index job cancelled", job.payload()))


def routes() -> list[Route]:
    tag, path = "Media and indexing", f"{API}/index-jobs"
    start = Operation(
        "startIndexJob",
        "Index the event's registered media on the Ray cluster (default: every source not yet indexed)",
        tag,
        ok=schemas.IndexJobEnvelope,
        json_body=schemas.IndexJobBody,
        errors=(400, 409),
        description="One job runs per event at a time (409 index_job_running). Poll its GET, or pass webhook_url.",
    )
    get = Operation(
        "getIndexJob",
        "An index job's status, progress (sampled frames done / planned), stage, counts and errors",
        tag,
        ok=schemas.IndexJobEnvelope,
    )
    cancel = Operation(
        "cancelIndexJob",
        "Stop an index job: media it had not finished are left unindexed, never half-indexed",
        tag,
        ok=schemas.IndexJobEnvelope,
        errors=(409,),
    )
    return [
        api_route(path, start_job, "POST", start),
        api_route(f"{path}/{{job_id}}", get_job, "GET", get),
        api_route(f"{path}/{{job_id}}/cancel", cancel_job, "POST", cancel),
    ]
