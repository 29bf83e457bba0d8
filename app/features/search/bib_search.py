"""BIB search: a race number in, the event's photos where it was read out (GET), and the
rules every BIB route shares: the toggle and what a valid number is. The video search by
BIB runs in app/features/search/video_clipping.py (same flow, statuses and GET as by selfie)."""

from __future__ import annotations

import asyncio

from app.config import AppSettings
from app.core.errors import DomainError
from app.features.services import Services
from app.store.events import Event
from pipelines.bib_search import rank_bib_photos, valid_bib


def require_bib_search(event: Event) -> None:
    if not event.bib_search:
        raise DomainError("feature_disabled", "BIB search (bib_search) is disabled for this event.")


def parse_bib(raw: str | None, settings: AppSettings) -> str:
    """The number as indexed: digits only, of a length the index keeps (400 otherwise)."""
    rules = settings.bibs
    text = (raw or "").strip()
    if not valid_bib(text, rules.min_digits, rules.max_digits):
        raise DomainError(
            "invalid_bib", f"bib must be {rules.min_digits} to {rules.max_digits} digits (0-9), e.g. bib=1234."
        )
    return text


class BibSearch:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings

    async def photos(self, event: Event, bib: str) -> list[dict]:
        """The event's photos showing ``bib``, most confident read first, as ranked rows."""

        def ranked() -> list[dict]:
            store = self.services.face_store()
            sightings = store.bib_sightings(event.org_id, event.event_id, bib, media_type="photo")
            return [
                {
                    "photo_key": p.media_key,
                    "similarity": round(p.similarity, 4),
                    "bbox": [round(v, 1) for v in p.bbox],
                    "match_count": p.match_count,
                }
                for p in rank_bib_photos(sightings)
            ]

        return await asyncio.to_thread(ranked)
