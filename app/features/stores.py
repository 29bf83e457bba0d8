"""The stores a facereel process reads and writes: the control tables, the face index and
the job supervisor's handle. Cheap to open (no Serve handles, no background work), so the
CLI and Ray jobs build this, and each ingress replica builds its ``Services`` on top of it."""

from __future__ import annotations

from dataclasses import dataclass

from app.config import AppSettings
from app.store.control import ControlStore
from app.store.events import EventStore
from app.store.index_jobs import IndexJobs
from app.store.keys import KeyStore
from app.store.records import ExtraClips, RequestRecords
from app.store.sources import SourceRegistry
from app.store.storage_locations import StorageLocations


@dataclass(kw_only=True)
class Stores:
    settings: AppSettings
    control: ControlStore
    events: EventStore
    keys: KeyStore
    records: RequestRecords
    extra_clips: ExtraClips
    index_jobs: IndexJobs
    sources: SourceRegistry
    locations: StorageLocations
    _face_store: object | None = None
    _supervisor: object | None = None

    @classmethod
    def open(cls, settings: AppSettings) -> Stores:
        return cls(**cls.store_fields(settings))

    @staticmethod
    def store_fields(settings: AppSettings) -> dict:
        control = ControlStore(settings.control_uri, settings.store.storage_options)
        api = settings.api
        return {
            "settings": settings,
            "control": control,
            "events": EventStore(control),
            "keys": KeyStore(control),
            "records": RequestRecords(control, api.request_deadline_s, api.dispatch_deadline_s),
            "extra_clips": ExtraClips(control, api.request_deadline_s),
            "index_jobs": IndexJobs(control, api.index_job_deadline_s, api.dispatch_deadline_s),
            "sources": SourceRegistry(control),
            "locations": StorageLocations(control),
        }

    @property
    def supervisor(self):
        """The cluster's job supervisor (app/jobs/supervisor.py), which owns every job's task."""
        if self._supervisor is None:
            from app.jobs.supervisor import supervisor

            self._supervisor = supervisor(self.settings)
        return self._supervisor

    def face_store(self):
        """The event faces store, opened once per replica (it checks for new commits on read)."""
        if self._face_store is None:
            from pipelines.models import pack_info
            from pipelines.store import FaceStore

            self._face_store = FaceStore.from_settings(self.settings, pack_info(self.settings.models.pack))
        return self._face_store
