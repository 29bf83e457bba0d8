"""Face Search: a selfie in, the event's photos of that person out, ranked and paginated.

It shares the request record with video clipping: the selfie, the ranked photos, and the
person's video matches, computed here once so that a file-less video-clipping POST with
the same request_id clips at once (app/jobs/stored_matches.py).
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from app.core.errors import DomainError
from app.features.offload import offload
from app.features.search.requests import claim_request_id, embed_selfies, get_record, stored_selfie
from app.features.services import Services
from app.jobs.stored_matches import encode_matches, matches_basis
from app.store.events import Event
from app.store.records import SearchRecord
from pipelines.match import References, find_person
from pipelines.photo_search import find_photos

log = logging.getLogger(__name__)


class FaceSearch:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings

    @staticmethod
    def require_enabled(event: Event) -> None:
        if not event.face_search:
            raise DomainError("feature_disabled", "Face Search (face_search) is disabled for this event.")

    async def search(self, event: Event, selfies: list[bytes], raw_request_id: str | None) -> SearchRecord:
        """Run a Face Search (new selfies, or the request's stored one) and store it."""
        if not selfies and not raw_request_id:
            raise DomainError("missing_input", "Send a selfie 'file', a 'request_id', or both.")
        if len(selfies) > self.settings.api.max_selfies:
            raise DomainError("too_many_files", f"Send at most {self.settings.api.max_selfies} selfies.")
        request_id, existing = await claim_request_id(
            self.services, event.org_id, event.event_id, raw_request_id, bool(selfies)
        )
        if selfies:
            embedding, model_pack, selfie = await embed_selfies(self.services, selfies)
            record = existing or SearchRecord(request_id, event.org_id, event.event_id, None, "", model_pack, None)
            record.embedding, record.model_pack, record.selfie = embedding, model_pack, selfie
            record.negatives = None  # "not me" answers were about the old selfie's matches
        else:
            record = stored_selfie(self.settings, existing)
        record.photos, record.video_matches, record.matches_basis = await offload(
            self.services, face_search_matches, event, record
        )
        try:
            return await asyncio.to_thread(self.services.records.save_face_search, record)
        except Exception as exc:
            log.exception("could not store face search %s", request_id)
            raise DomainError("record_failed", f"The search could not be recorded: {exc}") from None

    async def result(self, event: Event, request_id: str) -> SearchRecord:
        record = await get_record(self.services, event.org_id, event.event_id, request_id)
        if record.photos is None:
            raise DomainError("request_not_found", "No Face Search has run for this request_id.")
        return record


def face_search_matches(store, settings, event: Event, record: SearchRecord) -> tuple[list, str | None, str | None]:
    """(ranked photo rows, encoded video matches, their basis) of the record's selfie (in a
    worker, see app/features/offload.py); no video matches when the event has no video search."""
    rules = event.search_rules(settings)
    photos = find_photos(store, event.org_id, event.event_id, record.embedding, rules.threshold)
    ranked = [
        {
            "photo_key": p.media_key,
            "similarity": round(p.similarity, 4),
            "bbox": [round(v, 1) for v in p.bbox],
            "match_count": p.match_count,
        }
        for p in photos
    ]
    if not event.video_search:
        return ranked, None, None
    dim = record.embedding.shape[1]
    negatives = record.negatives if record.negatives is not None else np.zeros((0, dim), np.float32)
    faces = store.count_faces(event.org_id, event.event_id)
    matches = find_person(store, event.org_id, event.event_id, References(record.embedding, negatives),
                          rules.threshold, settings.match)  # fmt: skip
    return ranked, encode_matches(matches), matches_basis(settings, rules.threshold, len(negatives), faces)
