"""Apply a calibrated threshold and segment rules to an event (the notebooks' last step).

It writes through the same event store the API reads, so Event Details shows the new
rules and the event's next search runs with them.
"""

from __future__ import annotations

from typing import Protocol

from app.config import AppSettings
from app.store.control import ControlStore
from app.store.events import EventStore


class SearchRulesLike(Protocol):
    threshold: float
    segments: dict


def apply_recommendation(settings: AppSettings, org_id: int, event_id: int, rec: SearchRulesLike) -> dict:
    """Set the event's match threshold and segment rules; returns its Event Details."""
    events = EventStore(ControlStore(settings.control_uri, settings.store.storage_options))
    event = events.set_search_rules(org_id, event_id, rec.threshold, dict(rec.segments))
    return event.details(settings)
