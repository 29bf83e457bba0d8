"""The request lifecycle every search kind shares: claim a request_id, record a run, end it.

The contract's request_id rules live here once: a client UUID creates or updates its
own record; another event's record is never touched (404 when only the id was sent,
400 when new input came with it).
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from app.errors import ApiError
from app.records import SearchRecord
from app.services import Services, parse_request_id

log = logging.getLogger(__name__)


async def claim_request_id(
    services: Services, org_id: int, event_id: int, raw_id: str | None, has_input: bool
) -> tuple[str, SearchRecord | None]:
    """(request_id, its record in this event or None). A missing id is a fresh UUID."""
    request_id = parse_request_id(raw_id) if raw_id else str(uuid.uuid4())
    existing = await asyncio.to_thread(services.records.get, request_id)
    if existing is not None and (existing.org_id, existing.event_id) != (org_id, event_id):
        if not has_input:
            raise ApiError(404, "Unknown request_id.", "request_not_found")
        raise ApiError(
            400, "This request_id belongs to another event; omit it to start a new search.", "request_id_conflict"
        )
    return request_id, existing


async def record_start(services: Services, record: SearchRecord) -> SearchRecord:
    """Write a fresh run of ``record`` (new job id, results cleared): 500 when that fails."""
    try:
        started = await asyncio.to_thread(services.records.start, record)
    except Exception as exc:
        log.exception("could not record search %s", record.request_id)
        raise ApiError(500, f"The search could not be recorded: {exc}", "record_failed") from None
    services.search_started()
    return started


async def record_end(services: Services, record: SearchRecord, status: str, error: str | None = None) -> None:
    """A terminal status decided in the request itself (no job was started)."""
    await asyncio.to_thread(services.records.finish, record.request_id, record.job_id, status, error=error)


async def get_record(services: Services, org_id: int, event_id: int, request_id: str) -> SearchRecord:
    """This event's record of ``request_id``: 404 for unknown ids and other events' records."""
    record = await asyncio.to_thread(services.records.get, request_id)
    if record is None or (record.org_id, record.event_id) != (org_id, event_id):
        raise ApiError(404, "Unknown request_id.", "request_not_found")
    return record
