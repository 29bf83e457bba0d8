"""Video Clipping Search: POST search-by-selfie, GET {request_id}, POST {request_id}/feedback
("not me"), POST {request_id}/clips (another clip). Parsing and rendering only; the rules
live in app/features/search/video_clipping.py."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.core import schemas
from app.core.contract import clip_started_payload, extra_clip_item, result_payload, start_payload
from app.core.errors import DomainError
from app.features.search.bib_search import parse_bib
from app.features.search.video_clipping import ClipRequest, VideoClippingSearch
from app.features.services import parse_request_id
from app.http.openapi import Operation, api_route, bib_param
from app.http.routes.common import (
    API,
    authorize,
    delete_search,
    json_with_etag,
    read_json,
    read_search_form,
    use_cases,
)


def parse_webhook_url(value: str | None, settings) -> str | None:
    """The optional ``webhook_url`` field: told of the search's final result (400 when refused)."""
    from app.core.webhooks import WebhookUrlError, check_webhook_url

    if value is None:
        return None
    try:
        return check_webhook_url(value, set(settings.api.webhook_allow_addresses))
    except WebhookUrlError as exc:
        raise DomainError("invalid_webhook_url", f"webhook_url refused: {exc}") from None


def search_of(request: Request) -> VideoClippingSearch:
    return use_cases(request).video_clipping


async def search_by_selfie(request: Request) -> JSONResponse:
    event = await authorize(request, "post")
    search = search_of(request)
    search.require_selfie_search(event)
    form = await read_search_form(request, search.settings.api, ("request_id", "webhook_url"))
    webhook_url = parse_webhook_url(form.fields.get("webhook_url"), search.settings)
    request_id, status = await search.start(event, form.files, form.fields.get("request_id"), webhook_url=webhook_url)
    return JSONResponse(start_payload(request_id, status))


async def search_by_bib(request: Request) -> JSONResponse:
    """``bib`` (required), plus optional selfie ``file``s and ``request_id``: the number's
    sightings, fused with the selfie's matches when one is sent or stored."""
    event = await authorize(request, "post")
    search = search_of(request)
    search.require_bib_search(event)
    form = await read_search_form(request, search.settings.api, ("bib", "request_id", "webhook_url"))
    bib = parse_bib(form.fields.get("bib"), search.settings)
    webhook_url = parse_webhook_url(form.fields.get("webhook_url"), search.settings)
    request_id, status = await search.start(
        event, form.files, form.fields.get("request_id"), bib=bib, webhook_url=webhook_url
    )
    return JSONResponse(start_payload(request_id, status))


async def get_result(request: Request) -> JSONResponse:
    request_id = parse_request_id(request.path_params["request_id"])
    event = await authorize(request, "get")
    search = search_of(request)
    search.require_enabled(event)
    record, clips = await search.result(event, request_id)
    extra = [extra_clip_item(c.clip_id, c.status, c.item, c.error) for c in clips]
    videos = record.videos
    if event.storage is not None and not event.storage.public_base_url:  # presigned URLs expire: sign anew
        videos, extra = await asyncio.to_thread(search.signed_urls, event, record.request_id, (videos, extra))
    payload = result_payload(
        record.request_id,
        record.status,
        videos,
        record.error,
        record.clip_errors,
        record.segments,
        extra,
        record.rules,
    )
    return json_with_etag(request, payload)


async def feedback(request: Request) -> JSONResponse:
    """{"not_me": [segment_id, ...]}: those segments are someone else; the search reruns."""
    request_id = parse_request_id(request.path_params["request_id"])
    event = await authorize(request, "post")
    search = search_of(request)
    search.require_enabled(event)
    body = await read_json(request)
    not_me = body.get("not_me") if isinstance(body, dict) else None
    if not isinstance(not_me, list) or not not_me or not all(isinstance(s, str) for s in not_me):
        raise DomainError("invalid_body", 'Send {"not_me": [segment_id, ...]}.')
    status = await search.feedback(event, request_id, not_me)
    return JSONResponse(start_payload(request_id, status))


async def add_clip(request: Request) -> JSONResponse:
    """{"segment_id"} or {"source_video_key", "start_seconds", "end_seconds"}, plus "aspect"
    ("source", "9:16", "1:1") and "max_duration_s"."""
    request_id = parse_request_id(request.path_params["request_id"])
    event = await authorize(request, "post")
    search = search_of(request)
    search.require_enabled(event)
    clip_id = await search.add_clip(event, request_id, ClipRequest.parse(await read_json(request)))
    return JSONResponse(clip_started_payload(request_id, clip_id))


def routes(settings) -> list[Route]:
    tag, path = "Video clipping", f"{API}/video-clipping"
    by_selfie = Operation(
        "searchBySelfie",
        "Start a search by selfie (or rerun one by request_id); poll its GET",
        tag,
        ok=schemas.StartEnvelope,
        form=schemas.SelfieForm,
        errors=(400,),
    )
    by_bib = Operation(
        "searchByBib",
        "Start a search by BIB number, fused with a selfie when one is sent or stored",
        tag,
        ok=schemas.StartEnvelope,
        form=schemas.BibForm,
        errors=(400,),
        description=f"`bib` must match {bib_param(settings).schema['pattern']}.",
    )
    result = Operation(
        "getVideoClippingResult",
        "A search's status, clips, clip errors and ranked segments",
        tag,
        ok=schemas.ResultEnvelope,
        errors=(400,),
        etag=True,
        description="Poll with the ETag of the last answer in If-None-Match: an unchanged result answers 304 "
        "without a body.",
    )
    delete = Operation(
        "deleteVideoClippingRequest",
        "Consent deletion: the record, its selfie embeddings, clips and posters",
        tag,
        ok=schemas.DeletedEnvelope,
        errors=(400, 409),
    )
    not_me = Operation(
        "sendFeedback",
        "'Not me': these segments show someone else; the search reruns without them",
        tag,
        ok=schemas.StartEnvelope,
        json_body=schemas.FeedbackBody,
        errors=(400, 409),
    )
    clips = Operation(
        "addClip",
        "Cut another clip of a finished search: a segment, or a video and times, in an aspect ratio",
        tag,
        ok=schemas.ClipStartedEnvelope,
        json_body=schemas.ClipBody,
        errors=(400, 409),
    )
    return [
        api_route(f"{path}/search-by-selfie", search_by_selfie, "POST", by_selfie),
        api_route(f"{path}/search-by-bib", search_by_bib, "POST", by_bib),
        api_route(f"{path}/{{request_id}}", get_result, "GET", result),
        api_route(f"{path}/{{request_id}}", delete_search, "DELETE", delete),
        api_route(f"{path}/{{request_id}}/feedback", feedback, "POST", not_me),
        api_route(f"{path}/{{request_id}}/clips", add_clip, "POST", clips),
    ]
