"""Video Clipping search: a selfie in, clips of the moments that person appears in out.

The service owns the whole request: the upload rules, embedding (SelfieEmbedder),
the record, matching (once, here: its result decides ``no_matches`` at once and is
handed to the job), and dispatching the segment+clip job (app/dispatch.py).
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from app.contract import FAILED, NO_MATCHES, PROCESSING
from app.dispatch import SearchJob, run_search
from app.errors import ApiError
from app.events import Event
from app.records import SearchRecord
from app.search.requests import claim_request_id, get_record, record_end, record_start
from app.services import Services
from pipelines.match import video_hits
from pipelines.models import pack_info

log = logging.getLogger(__name__)

JPEG_MAGIC, PNG_MAGIC = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"


def check_selfie_bytes(data: bytes, max_bytes: int) -> None:
    """Upload rules: non-empty, within the size limit, JPEG or PNG by its magic bytes."""
    if not data:
        raise ApiError(400, "The uploaded selfie file is empty.", "empty_file")
    if len(data) > max_bytes:
        raise ApiError(413, f"The selfie is larger than {max_bytes} bytes.", "file_too_large")
    if not (data.startswith(JPEG_MAGIC) or data.startswith(PNG_MAGIC)):
        raise ApiError(400, "The selfie must be a JPEG or PNG image.", "unsupported_file_type")


class VideoClippingSearch:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings

    @staticmethod
    def require_enabled(event: Event) -> None:
        if not (event.video_search and event.video_selfie_search):
            raise ApiError(
                403,
                "Video clipping (video_search and video_selfie_search) is disabled for this event.",
                "feature_disabled",
            )

    async def start(self, event: Event, selfie: bytes | None, raw_request_id: str | None) -> tuple[str, str]:
        """Start (or rerun) a search; (request_id, ``processing`` or ``no_matches``)."""
        if selfie is None and not raw_request_id:
            raise ApiError(400, "Send a selfie 'file', a 'request_id', or both.", "missing_input")
        request_id, existing = await claim_request_id(
            self.services, event.org_id, event.event_id, raw_request_id, selfie is not None
        )
        if selfie is not None:
            record = await self.with_selfie(event, request_id, existing, selfie)
        else:
            record = self.with_stored_selfie(existing)
        record = await record_start(self.services, record)
        return request_id, await self.dispatch(event, record)

    async def with_selfie(
        self, event: Event, request_id: str, existing: SearchRecord | None, selfie: bytes
    ) -> SearchRecord:
        check_selfie_bytes(selfie, self.settings.api.max_upload_bytes)
        embedded = await self.services.embedder.embed.remote(selfie)
        if not embedded["ok"]:
            raise ApiError(400, embedded["message"], embedded["code"])
        record = existing or SearchRecord(
            request_id, event.org_id, event.event_id, PROCESSING, "", embedded["model_pack"], None
        )
        record.embedding = np.asarray(embedded["vector"], np.float32)
        record.model_pack, record.selfie = embedded["model_pack"], embedded["selfie"]
        return record

    def with_stored_selfie(self, existing: SearchRecord | None) -> SearchRecord:
        if existing is None:
            raise ApiError(404, "Unknown request_id.", "request_not_found")
        if existing.embedding is None:
            raise ApiError(400, "This request_id has no stored selfie; upload a file with it.", "no_stored_selfie")
        if existing.model_pack != pack_info(self.settings.models.pack).name:
            raise ApiError(
                400,
                "The stored selfie was embedded with another model pack; upload the selfie again.",
                "model_pack_changed",
            )
        return existing

    async def dispatch(self, event: Event, record: SearchRecord) -> str:
        """Match once; ``no_matches`` at once without video hits, else start the job."""
        rules = event.search_rules(self.settings)
        try:
            hits = await asyncio.to_thread(
                video_hits,
                self.services.face_store(),
                event.org_id,
                event.event_id,
                record.embedding,
                rules.threshold,
            )
            if not hits:
                await record_end(self.services, record, NO_MATCHES)
                return NO_MATCHES
            job = SearchJob(record.request_id, record.job_id, event.org_id, event.event_id, rules, hits)
            run_search.remote(self.settings, job)
        except Exception as exc:
            log.exception("could not start search %s", record.request_id)
            await record_end(self.services, record, FAILED, error=f"Failed to start processing: {exc}")
            raise ApiError(500, "The search could not be started; start a new search.", "dispatch_failed") from None
        return PROCESSING

    async def result(self, event: Event, request_id: str) -> SearchRecord:
        return await get_record(self.services, event.org_id, event.event_id, request_id)
