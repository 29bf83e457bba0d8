"""Bring-your-own storage over HTTP: an org registers S3-compatible locations
(POST/GET /api/v1/ext/{org_id}/storage-locations) and points events at one
(PUT …/event/{event_id}/storage-location). Secrets go in, never out."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.core import schemas
from app.core.contract import envelope
from app.core.errors import DomainError
from app.http.openapi import Operation, api_route
from app.http.routes.common import API, MAX_ID, read_json, services_of
from app.obs.log_context import bind
from app.store.storage_locations import check_reachable, parse_location

ORG_API = "/api/v1/ext/{org_id:int}"


async def authorize_org(request: Request, kind: str) -> int:
    org_id = request.path_params["org_id"]
    if org_id > MAX_ID:
        raise DomainError("not_found", "No such organisation.")
    bind(org_id=org_id)
    await services_of(request).auth.authorize_org(request.headers.get("x-api-key"), org_id, kind)
    return org_id


async def add_location(request: Request) -> JSONResponse:
    org_id = await authorize_org(request, "post")
    services = services_of(request)
    api = services.settings.api
    location = parse_location(
        org_id, await read_json(request), set(api.storage_allow_addresses), api.storage_server_credentials
    )
    await asyncio.to_thread(check_reachable, location)
    await asyncio.to_thread(services.locations.add, location)
    return JSONResponse(envelope("Storage location registered", location.public()))


async def list_locations(request: Request) -> JSONResponse:
    org_id = await authorize_org(request, "get")
    found = await asyncio.to_thread(services_of(request).locations.of_org, org_id)
    return JSONResponse(envelope("Storage locations retrieved", {"locations": [loc.public() for loc in found]}))


async def set_event_location(request: Request) -> JSONResponse:
    """{"location_id": "..."} (or null: back to the service's own storage). Only while the
    event has no media: sources and clips already stored would be left behind."""
    org_id = await authorize_org(request, "post")
    event_id = request.path_params["event_id"]
    if event_id > MAX_ID:
        raise DomainError("event_not_found", "Event configuration not found.")
    body = await read_json(request)
    location_id = body.get("location_id", ...) if isinstance(body, dict) and set(body) == {"location_id"} else ...
    if location_id is not None and not isinstance(location_id, str):
        raise DomainError("invalid_body", 'Send {"location_id": "<id>"} or {"location_id": null}.')
    services = services_of(request)
    event = await asyncio.to_thread(services.set_event_storage, org_id, event_id, location_id)
    data = {
        "org_id": org_id,
        "event_id": event_id,
        "storage": None if event.storage is None else event.storage.public(),
    }
    return JSONResponse(envelope("Event storage set", data))


def routes() -> list[Route]:
    tag = "Storage"
    add = Operation(
        "addStorageLocation",
        "Register an S3-compatible location (endpoint, bucket, prefix, region, keys or a profile); needs an org-wide key",
        tag,
        ok=schemas.StorageLocationEnvelope,
        json_body=schemas.StorageLocationBody,
        errors=(400,),
        description="The location must take a test write. Secrets are stored and used, never returned or logged.",
    )
    listing = Operation(
        "listStorageLocations", "The org's storage locations, without secrets", tag, ok=schemas.StorageLocationsEnvelope
    )
    attach = Operation(
        "setEventStorageLocation",
        "Use one of the org's locations for an event's sources and clips (clip URLs then presigned)",
        tag,
        ok=schemas.EventStorageEnvelope,
        json_body=schemas.EventStorageBody,
        errors=(400, 409),
    )
    return [
        api_route(f"{ORG_API}/storage-locations", add_location, "POST", add),
        api_route(f"{ORG_API}/storage-locations", list_locations, "GET", listing),
        api_route(f"{API}/storage-location", set_event_location, "PUT", attach),
    ]
