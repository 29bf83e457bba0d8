"""BIB search over photos: GET bib-search?bib=1234 (paginated like Face Search). The video
search by BIB is POST video-clipping/search-by-bib (app/http/routes/video_clipping.py)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.core import schemas
from app.core.contract import BIB_SEARCH_MESSAGES, photos_payload
from app.features.search.bib_search import BibSearch, parse_bib, require_bib_search
from app.features.search.photos import parse_page, photo_items
from app.http.openapi import Operation, api_route, bib_param, page_params
from app.http.routes.common import API, authorize, services_of, use_cases


async def bib_photos(request: Request) -> JSONResponse:
    event = await authorize(request, "get")
    require_bib_search(event)
    services = services_of(request)
    settings = services.settings
    bib = parse_bib(request.query_params.get("bib"), settings)
    page = parse_page(request.query_params.get("page"), request.query_params.get("page_size"), settings)
    search: BibSearch = use_cases(request).bib_search
    ranked = await search.photos(event, bib)
    items = await asyncio.to_thread(
        photo_items, settings, services.face_store(), event.org_id, event.event_id, ranked, page
    )
    return JSONResponse(photos_payload(BIB_SEARCH_MESSAGES, items, len(ranked), page.number, page.size, bib=bib))


def routes(settings) -> list[Route]:
    photos = Operation(
        "bibSearch",
        "The event's photos showing a BIB number, a page at a time",
        "BIB search",
        ok=schemas.PhotosEnvelope,
        query=(bib_param(settings), *page_params(settings)),
        errors=(400,),
    )
    return [api_route(f"{API}/bib-search", bib_photos, "GET", photos)]
