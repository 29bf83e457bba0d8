"""GET /api/v1/ext/{org_id}/event/{event_id} — Event Details."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from app.contract import envelope
from app.services import Services


async def event_details(request: Request, services: Services) -> JSONResponse:
    org_id, event_id = request.path_params["org_id"], request.path_params["event_id"]
    _, event = await services.authorize(request.headers.get("x-api-key"), org_id, event_id, "get")
    return JSONResponse(envelope("Event details retrieved", event.details()))
