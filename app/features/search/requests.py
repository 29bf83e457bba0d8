"""The request lifecycle every search kind shares: claim a request_id, record a run, end it.

The contract's request_id rules live here once: a client UUID creates or updates its
own record; another event's record is never touched (404 when only the id was sent,
400 when new input came with it).
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import numpy as np
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError

from app.config import AppSettings
from app.core.errors import DomainError, overloaded
from app.features.services import Services, parse_request_id
from app.features.stores import Stores
from app.obs.log_context import bind
from app.store.events import Event
from app.store.records import SearchRecord
from pipelines.models import pack_info

log = logging.getLogger(__name__)

JPEG_MAGIC, PNG_MAGIC = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"


def check_selfie_bytes(data: bytes, max_bytes: int) -> None:
    """Upload rules: non-empty, within the size limit, JPEG or PNG by its magic bytes."""
    if not data:
        raise DomainError("empty_file", "The uploaded selfie file is empty.")
    if len(data) > max_bytes:
        raise DomainError("file_too_large", f"The selfie is larger than {max_bytes} bytes.")
    if not (data.startswith(JPEG_MAGIC) or data.startswith(PNG_MAGIC)):
        raise DomainError("unsupported_file_type", "The selfie must be a JPEG or PNG image.")


async def embed_selfies(services: Services, selfies: list[bytes]) -> tuple[np.ndarray, str, dict]:
    """(embeddings (n, dim), model pack, what the first selfie showed); 400 for a file
    without a usable face, naming which file when there are several."""
    settings = services.settings
    if len(selfies) > settings.api.max_selfies:
        raise DomainError("too_many_files", f"Send at most {settings.api.max_selfies} selfies.")
    for data in selfies:
        check_selfie_bytes(data, settings.api.max_upload_bytes)
    if services.embeds_pending + len(selfies) > settings.api.max_pending_embeds:
        raise overloaded(f"{services.embeds_pending} selfies being embedded", settings.api.retry_after_s)
    services.embeds_pending += len(selfies)
    try:
        embedded = await asyncio.gather(*(services.embedder.embed.remote(data) for data in selfies))
    except (RayActorError, ActorUnavailableError, BackPressureError) as exc:
        # The embedder replica died or is restarting: nothing is stored yet, so a retry is safe.
        log.warning("selfie embedder unavailable: %s", exc)
        raise overloaded("the selfie embedder is restarting", settings.api.retry_after_s) from None
    finally:
        services.embeds_pending -= len(selfies)
    for i, result in enumerate(embedded):
        if not result["ok"]:
            which = f" (file {i + 1} of {len(selfies)})" if len(selfies) > 1 else ""
            raise DomainError(result["code"], result["message"] + which)
    vectors = np.stack([np.asarray(r["vector"], np.float32) for r in embedded])
    return vectors, embedded[0]["model_pack"], embedded[0]["selfie"] | {"selfies": len(embedded)}


def stored_selfie(settings: AppSettings, existing: SearchRecord | None) -> SearchRecord:
    """The record whose stored selfie a file-less request reuses (404/400 when it cannot)."""
    if existing is None:
        raise DomainError("request_not_found", "Unknown request_id.")
    if existing.embedding is None:
        raise DomainError("no_stored_selfie", "This request_id has no stored selfie; upload a file with it.")
    if existing.model_pack != pack_info(settings.models.pack).name:
        raise DomainError(
            "model_pack_changed", "The stored selfie was embedded with another model pack; upload the selfie again."
        )
    return existing


async def claim_request_id(
    services: Services, org_id: int, event_id: int, raw_id: str | None, has_input: bool
) -> tuple[str, SearchRecord | None]:
    """(request_id, its record in this event or None). A missing id is a fresh UUID."""
    request_id = parse_request_id(raw_id) if raw_id else str(uuid.uuid4())
    bind(request_id=request_id)
    existing = await asyncio.to_thread(services.records.get, request_id)
    if existing is not None and (existing.org_id, existing.event_id) != (org_id, event_id):
        if not has_input:
            raise DomainError("request_not_found", "Unknown request_id.")
        raise DomainError(
            "request_id_conflict", "This request_id belongs to another event; omit it to start a new search."
        )
    return request_id, existing


async def record_start(services: Services, record: SearchRecord) -> SearchRecord:
    """Write a fresh run of ``record`` (new job id, results cleared): 500 when that fails."""
    try:
        started = await asyncio.to_thread(services.records.start, record)
    except Exception as exc:
        log.exception("could not record search %s", record.request_id)
        raise DomainError("record_failed", f"The search could not be recorded: {exc}") from None
    services.search_started()
    return started


async def record_end(services: Services, record: SearchRecord, status: str, error: str | None = None) -> None:
    """A terminal status decided in the request itself (no job was started)."""
    await asyncio.to_thread(services.records.finish, record.request_id, record.job_id, status, error=error)


async def get_record(services: Services, org_id: int, event_id: int, request_id: str) -> SearchRecord:
    """This event's record of ``request_id``: 404 for unknown ids and other events' records."""
    record = await asyncio.to_thread(services.records.get, request_id)
    if record is None or (record.org_id, record.event_id) != (org_id, event_id):
        raise DomainError("request_not_found", "Unknown request_id.")
    return record


class RequestBusy(Exception):
    """The search or one of its clips is still working: its files would land after a deletion."""


def remove_request(services: Stores, event: Event, record: SearchRecord) -> dict:
    """Consent deletion's core, for the route and the retention sweep alike: the record with
    its selfie embeddings, its extra clips, and every clip and poster file under the request.
    Raises ``RequestBusy`` while a run or a clip is still working."""
    from app.core.contract import PROCESSING
    from pipelines.storage import OutputStorage

    clips = services.extra_clips.of_request(record.request_id)
    if record.status == PROCESSING or any(c.status == PROCESSING for c in clips):
        raise RequestBusy(record.request_id)
    storage = OutputStorage(event.output_location(services.settings), event.storage_options(services.settings))
    files = storage.remove_folder(f"{event.org_id}/{event.event_id}/clips/{record.request_id}")
    extra = services.extra_clips.delete_of_request(record.request_id)
    services.records.delete(record.request_id)
    selfies = 0 if record.embedding is None else int(np.atleast_2d(record.embedding).shape[0])
    return {
        "request_id": record.request_id,
        "deleted": True,
        "removed": {
            "record": 1,
            "selfie_embeddings": selfies,
            "negative_embeddings": 0 if record.negatives is None else len(record.negatives),
            "extra_clips": extra,
            "files": files,
        },
    }


async def delete_request(services: Services, event, request_id: str) -> dict:
    """Consent deletion (``remove_request``) of this event's record: 409 while a run or a clip
    is still working; 404 for unknown ids and other events' records."""
    record = await get_record(services, event.org_id, event.event_id, request_id)
    try:
        return await asyncio.to_thread(remove_request, services, event, record)
    except RequestBusy:
        raise DomainError("search_busy", "The search is still processing; delete it once it has finished.") from None
