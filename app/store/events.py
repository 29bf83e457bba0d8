"""Orgs and events: feature toggles, per-event thresholds and segment rules, storage."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from app.config import AppSettings
from app.store.control import EVENTS, ORGS, ControlStore
from app.store.storage_locations import StorageLocation, StorageLocations
from pipelines.config import SegmentSettings
from pipelines.models.registry import match_threshold


@dataclass(frozen=True)
class SearchRules:
    """What a search of one event runs with: defaults with the event's overrides applied."""

    threshold: float
    segments: SegmentSettings
    output_root: str
    # Options for the event's storage (its own location's, else store.storage_options).
    storage_options: dict = field(default_factory=dict, repr=False, compare=False)
    storage: StorageLocation | None = None  # the org's location: clip URLs are presigned there


@dataclass(frozen=True)
class Event:
    org_id: int
    event_id: int
    name: str
    video_search: bool
    video_selfie_search: bool
    face_search: bool
    bib_search: bool
    match_threshold: float | None
    segments: dict
    source_uri: str | None
    output_uri: str | None
    created_at: datetime
    retention_days: int | None = None  # None: <api.retention_days>
    storage: StorageLocation | None = None  # bring-your-own storage for sources and clips

    def search_rules(self, settings: AppSettings) -> SearchRules:
        """The one place where event overrides meet the defaults."""
        return SearchRules(
            threshold=match_threshold(settings.models) if self.match_threshold is None else self.match_threshold,
            segments=SegmentSettings.model_validate({**settings.segments.model_dump(), **self.segments}),
            output_root=self.output_location(settings),
            storage_options=self.storage_options(settings),
            storage=self.storage,
        )

    def output_location(self, settings: AppSettings) -> str:
        if self.storage is not None:
            return self.storage.outputs_root
        return self.output_uri or settings.output_root

    def source_location(self, settings: AppSettings) -> str:
        """Where uploads go: the org's location, the event's source_uri, else
        <api.source_root>/<org>/<event>."""
        if self.storage is not None:  # each event its own folder: its key may not read the others'
            return f"{self.storage.sources_root}/{self.org_id}/{self.event_id}"
        return (self.source_uri or f"{settings.source_root}/{self.org_id}/{self.event_id}").rstrip("/")

    def storage_options(self, settings: AppSettings) -> dict:
        """Options for the event's sources and outputs."""
        return self.storage.storage_options() if self.storage is not None else dict(settings.store.storage_options)

    def options_for(self, uri: str, settings: AppSettings) -> dict:
        """Options to read ``uri``: the event's location's when it lies there, else the store's."""
        if self.storage is not None and self.storage.holds(uri):
            return self.storage.storage_options()
        return dict(settings.store.storage_options)

    def retention(self, settings: AppSettings) -> int | None:
        """Days a search of this event is kept after its last change (None: until deleted)."""
        return self.retention_days if self.retention_days is not None else settings.api.retention_days

    def details(self, settings: AppSettings) -> dict:
        """The Event Details payload: the toggles, and the rules its searches run with."""
        rules = self.search_rules(settings)
        return {
            "org_id": self.org_id,
            "event_id": self.event_id,
            "name": self.name,
            "video_search": self.video_search,
            "video_selfie_search": self.video_selfie_search,
            "face_search": self.face_search,
            "bib_search": self.bib_search,
            "match_threshold": rules.threshold,
            "match_threshold_source": "model_pack" if self.match_threshold is None else "event",
            "segments": rules.segments.model_dump(),
            "retention_days": self.retention(settings),
        }


def _event(row: dict, storage: StorageLocation | None = None) -> Event:
    return Event(
        org_id=row["org_id"],
        event_id=row["event_id"],
        name=row["name"] or "",
        video_search=bool(row["video_search"]),
        video_selfie_search=bool(row["video_selfie_search"]),
        face_search=bool(row["face_search"]),
        bib_search=bool(row["bib_search"]),
        match_threshold=row["match_threshold"],
        segments=json.loads(row["segments_json"]) if row["segments_json"] else {},
        source_uri=row["source_uri"],
        output_uri=row["output_uri"],
        created_at=row["created_at"],
        retention_days=row.get("retention_days"),
        storage=storage,
    )


class EventStore:
    def __init__(self, control: ControlStore) -> None:
        self.control = control

    def create_org(self, name: str, org_id: int | None = None) -> int:
        if org_id is None:
            existing = self.control.table(ORGS).search().select(["org_id"]).limit(None).to_arrow()
            org_id = max(existing.column("org_id").to_pylist(), default=0) + 1
        if self.control.rows(ORGS, f"org_id = {int(org_id)}", 1):
            raise ValueError(f"org {org_id} already exists")
        self.control.upsert(ORGS, [{"org_id": int(org_id), "name": name, "created_at": datetime.now(UTC)}])
        return int(org_id)

    def org_exists(self, org_id: int) -> bool:
        return bool(self.control.rows(ORGS, f"org_id = {int(org_id)}", 1))

    def create_event(
        self,
        org_id: int,
        name: str,
        event_id: int | None = None,
        video_search: bool = True,
        video_selfie_search: bool = True,
        face_search: bool = True,
        bib_search: bool = False,
        match_threshold: float | None = None,
        segments: dict | None = None,
        source_uri: str | None = None,
        output_uri: str | None = None,
        retention_days: int | None = None,
    ) -> Event:
        if not self.org_exists(org_id):
            raise ValueError(f"org {org_id} does not exist")
        if retention_days is not None and int(retention_days) < 1:
            raise ValueError(f"retention_days must be at least 1 (or none: keep), not {retention_days}")
        if segments:
            SegmentSettings(**segments)  # validate the overrides now, not at search time
        if event_id is None:
            ids = (
                self.control.table(EVENTS)
                .search()
                .where(f"org_id = {int(org_id)}")
                .select(["event_id"])
                .limit(None)
                .to_arrow()
            )
            event_id = max(ids.column("event_id").to_pylist(), default=0) + 1
        if self.get(org_id, event_id) is not None:
            raise ValueError(f"event {org_id}/{event_id} already exists")
        row = {
            "org_id": int(org_id),
            "event_id": int(event_id),
            "name": name,
            "video_search": video_search,
            "video_selfie_search": video_selfie_search,
            "face_search": face_search,
            "bib_search": bib_search,
            "match_threshold": match_threshold,
            "segments_json": json.dumps(segments) if segments else None,
            "source_uri": source_uri,
            "output_uri": output_uri,
            "created_at": datetime.now(UTC),
            "retention_days": None if retention_days is None else int(retention_days),
        }
        self.control.upsert(EVENTS, [row])
        return _event(row)

    def set_search_rules(self, org_id: int, event_id: int, match_threshold: float | None, segments: dict) -> Event:
        """Replace the event's threshold (None: the model pack's) and segment rule overrides,
        validated first; the API's next search of the event uses them (each replica within
        ``api.auth_cache_s``)."""
        event = self.get(org_id, event_id)
        if event is None:
            raise ValueError(f"event {org_id}/{event_id} does not exist")
        if match_threshold is not None and not -1.0 <= float(match_threshold) <= 1.0:
            raise ValueError(f"match_threshold must be a cosine similarity in [-1, 1], not {match_threshold}")
        unknown = set(segments) - set(SegmentSettings.model_fields)
        if unknown:
            raise ValueError(f"unknown segment rules: {', '.join(sorted(unknown))}")
        SegmentSettings(**segments)  # bad values fail here, not at search time
        row = self.control.rows(EVENTS, f"org_id = {int(org_id)} AND event_id = {int(event_id)}", 1)[0]
        row["match_threshold"] = None if match_threshold is None else float(match_threshold)
        row["segments_json"] = json.dumps(segments) if segments else None
        self.control.upsert(EVENTS, [row])
        return _event(row)

    def get(self, org_id: int, event_id: int) -> Event | None:
        rows = self.control.rows(EVENTS, f"org_id = {int(org_id)} AND event_id = {int(event_id)}", 1)
        return self._with_storage(rows[0]) if rows else None

    def reads_bibs(self, org_id: int, event_id: int) -> bool:
        """Whether indexing reads race numbers: the event's ``bib_search`` toggle (off for an
        event not created through ``facereel event create``)."""
        found = self.get(org_id, event_id)
        return bool(found and found.bib_search)

    def _with_storage(self, row: dict) -> Event:
        location = row.get("storage_location")
        storage = StorageLocations(self.control).get(row["org_id"], location) if location else None
        return _event(row, storage)

    def all(self) -> list[Event]:
        """Every event of every org, by (org, event) id."""
        rows = self.control.table(EVENTS).search().limit(None).to_arrow().to_pylist()
        return sorted((self._with_storage(r) for r in rows), key=lambda e: (e.org_id, e.event_id))

    def set_storage(self, org_id: int, event_id: int, location_id: str | None) -> Event:
        """Point the event at one of its org's storage locations (None: back to ours)."""
        rows = self.control.rows(EVENTS, f"org_id = {int(org_id)} AND event_id = {int(event_id)}", 1)
        if not rows:
            raise ValueError(f"event {org_id}/{event_id} does not exist")
        if location_id is not None and StorageLocations(self.control).get(org_id, location_id) is None:
            raise ValueError(f"org {org_id} has no storage location {location_id}")
        row = {**rows[0], "storage_location": location_id}
        self.control.upsert(EVENTS, [row])
        return self._with_storage(row)

    def delete_event(self, org_id: int, event_id: int) -> int:
        """Remove the event's configuration; returns rows removed (its API keys are kept and
        answer 404 for it)."""
        where = f"org_id = {int(org_id)} AND event_id = {int(event_id)}"
        table = self.control.table(EVENTS)
        before = table.count_rows(where)
        table.delete(where)
        return before
