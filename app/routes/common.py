"""What every API route does first: the path's org and event, the key, the rate limit."""

from __future__ import annotations

from starlette.requests import Request

from app.events import Event
from app.services import Services

API = "/api/v1/ext/{org_id:int}/event/{event_id:int}"


def services_of(request: Request) -> Services:
    return request.app.state.services


async def authorize(request: Request, kind: str) -> Event:
    """The event named by the path, once the X-API-Key may use it (401/403/404/429 otherwise)."""
    org_id, event_id = request.path_params["org_id"], request.path_params["event_id"]
    _, event = await services_of(request).authorize(request.headers.get("x-api-key"), org_id, event_id, kind)
    return event
