"""Face Search: POST face-search (a selfie, or a request_id with a stored one) and GET
face-search/{request_id}, both answering a page of the event's photos of that person.
Parsing and rendering only; the rules live in app/features/search/face_search.py."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.core import schemas
from app.core.contract import FACE_SEARCH_MESSAGES, photos_payload
from app.features.search.face_search import FaceSearch
from app.features.search.photos import Page, parse_page, photo_items
from app.features.services import parse_request_id
from app.http.openapi import Operation, api_route, page_params
from app.http.routes.common import API, authorize, delete_search, read_search_form, services_of, use_cases
from app.store.records import SearchRecord


def search_of(request: Request) -> FaceSearch:
    return use_cases(request).face_search


async def page_of_photos(request: Request, record: SearchRecord, page: Page) -> JSONResponse:
    services = services_of(request)
    ranked = record.photos or []
    items = await asyncio.to_thread(
        photo_items, services.settings, services.face_store(), record.org_id, record.event_id, ranked, page
    )
    return JSONResponse(
        photos_payload(FACE_SEARCH_MESSAGES, items, len(ranked), page.number, page.size, request_id=record.request_id)
    )


async def face_search(request: Request) -> JSONResponse:
    event = await authorize(request, "post")
    search = search_of(request)
    search.require_enabled(event)
    form = await read_search_form(request, search.settings.api, ("request_id", "page", "page_size"))
    query = request.query_params
    page = parse_page(
        form.fields.get("page", query.get("page")),
        form.fields.get("page_size", query.get("page_size")),
        search.settings,
    )
    record = await search.search(event, form.files, form.fields.get("request_id"))
    return await page_of_photos(request, record, page)


async def get_result(request: Request) -> JSONResponse:
    request_id = parse_request_id(request.path_params["request_id"])
    event = await authorize(request, "get")
    search = search_of(request)
    search.require_enabled(event)
    page = parse_page(request.query_params.get("page"), request.query_params.get("page_size"), search.settings)
    return await page_of_photos(request, await search.result(event, request_id), page)


def routes(settings) -> list[Route]:
    tag, pages = "Face Search", page_params(settings)
    search = Operation(
        "faceSearch",
        "The event's photos of the person in the selfie (or of a request_id's stored selfie), a page at a time",
        tag,
        ok=schemas.PhotosEnvelope,
        form=schemas.FaceSearchForm,
        query=pages,
        errors=(400,),
    )
    result = Operation(
        "getFaceSearchResult", "Another page of a Face Search", tag, ok=schemas.PhotosEnvelope, query=pages,
        errors=(400,),
    )  # fmt: skip
    delete = Operation(
        "deleteFaceSearchRequest",
        "Consent deletion (the record is shared with video clipping under one request_id)",
        tag,
        ok=schemas.DeletedEnvelope,
        errors=(400, 409),
    )
    return [
        api_route(f"{API}/face-search", face_search, "POST", search),
        api_route(f"{API}/face-search/{{request_id}}", get_result, "GET", result),
        api_route(f"{API}/face-search/{{request_id}}", delete_search, "DELETE", delete),
    ]
