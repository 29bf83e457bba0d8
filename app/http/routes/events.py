"""GET /api/v1/ext/{org_id}/event/{event_id} — Event Details."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.core import schemas
from app.core.contract import envelope
from app.http.openapi import Operation, api_route
from app.http.routes.common import API, authorize, services_of


async def event_details(request: Request) -> JSONResponse:
    event = await authorize(request, "get")
    return JSONResponse(envelope("Event details retrieved", event.details(services_of(request).settings)))


def routes() -> list[Route]:
    details = Operation(
        "getEventDetails",
        "Event Details: the feature toggles and the rules its searches run with",
        "Events",
        ok=schemas.EventEnvelope,
    )
    return [api_route(API, event_details, "GET", details)]
