"""What the routes share inside one ingress replica: settings, stores, handles."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from dataclasses import dataclass, field

from app.config import AppSettings
from app.core.errors import DomainError
from app.features.auth import Auth
from app.features.stores import Stores
from app.features.watched_searches import WatchedSearches
from app.jobs.index_job import end_if_driver_lost, end_lost
from app.obs.metrics import running_searches
from app.obs.stage_times import StageTimes
from app.store.events import Event
from app.store.result_cache import ResultCache

log = logging.getLogger(__name__)

WARM_UP_KEY_ID = "warm-up"  # no API key has this id (keys' ids are random)


@dataclass(kw_only=True)
class Services(Stores):
    """One ingress replica's services: the stores, its Serve handles, auth with its caches
    and rate-limit leases, and the jobs it started (watched by app/features/upkeep.py)."""

    embedder: object  # Serve DeploymentHandle to SelfieEmbedder
    auth: Auth  # API keys and events behind a TTL cache, and the rate-limit leases
    results: ResultCache
    matcher: object = None  # Serve DeploymentHandle to SearchMatcher (app/features/offload.py)
    searches_since_maintenance: int = 0
    embeds_pending: int = 0  # selfies handed to the embedder and not answered yet
    maintaining: bool = False
    background: set = field(default_factory=set)
    jobs: WatchedSearches = field(default_factory=WatchedSearches)  # the search jobs this replica started
    index_refs: dict = field(default_factory=dict)  # index jobs this replica started: job_id -> ObjectRef
    index_lock: threading.Lock = field(default_factory=threading.Lock)  # the watcher pops what the loop adds

    async def warm_up(self) -> StageTimes:
        """Before the replica takes requests: what its first search would otherwise pay. The
        first POST after start took 2.0-3.0 s against 0.1-0.2 s for the next, 1.9 s of it in
        authorizing (issue 21): each control table's first read in this process, and the
        first call to the rate limiter. Reads of ids that exist nowhere; nothing is written
        but one rate bucket of a key id no API key has."""
        times = StageTimes()
        nobody = str(uuid.UUID(int=0))
        with times.stage("tables"):
            await asyncio.to_thread(self._read_each_table, nobody)
        if self.auth.limiter is not None:
            with times.stage("rate limits"):
                await self.auth.limiter.take_up_to(WARM_UP_KEY_ID, "get", 60.0, 1, 0)
        with times.stage("search queue"):
            await self.search_queue_wait()
        return times

    def _read_each_table(self, nobody: str) -> None:
        self.keys.lookup(WARM_UP_KEY_ID)
        self.events.get(0, 0)
        self.records.get(nobody)
        self.extra_clips.of_request(nobody)

    async def clip_storage(self, org_id: int, event_id: int):
        """The output storage holding an event's clips (None for an unknown event)."""
        from pipelines.storage import OutputStorage

        event = await self.auth.event(org_id, event_id)
        if event is None:
            return None
        return OutputStorage(event.output_location(self.settings), event.storage_options(self.settings))

    def set_event_storage(self, org_id: int, event_id: int, location_id: str | None) -> Event:
        """Point an event at one of its org's storage locations, while it has no media yet."""
        if self.events.get(org_id, event_id) is None:
            raise DomainError("event_not_found", "Event configuration not found.")
        if location_id is not None and self.locations.get(org_id, location_id) is None:
            raise DomainError("unknown_storage_location", "The org has no such storage location.")
        if self.sources.rows(org_id, event_id) or self.face_store().media_rows(org_id, event_id):
            raise DomainError("event_has_media", "The event already has media; its storage cannot change under them.")
        event = self.events.set_storage(org_id, event_id, location_id)
        self.auth.forget_event(org_id, event_id)
        return event

    async def source_options(self, org_id: int, event_id: int, uri: str) -> dict:
        """Options to read one of an event's sources (its org's storage, or the store's)."""
        event = await self.auth.event(org_id, event_id)
        return event.options_for(uri, self.settings) if event is not None else dict(self.settings.store.storage_options)

    async def maintain(self) -> None:
        """Compact and index the control tables (one pass at a time per replica)."""
        if self.maintaining:
            return
        self.maintaining = True
        try:
            await asyncio.to_thread(self.control.maintain)
            self.searches_since_maintenance = 0
        except Exception:
            log.exception("control table maintenance failed")
        finally:
            self.maintaining = False

    async def search_queue_wait(self) -> float:
        """0 when the cluster can start one more search now; else the Retry-After seconds
        (the supervisor counts every replica's searches). Unknown (a restarting supervisor)
        admits: the dispatch then fails the attempt cleanly if it is still gone."""
        try:
            api = self.settings.api
            ref = self.supervisor.admission.remote(
                api.search_target_s, api.max_searches_in_flight, api.search_start_grace_s
            )
            return await asyncio.wait_for(asyncio.wrap_future(ref.future()), timeout=5)
        except Exception as exc:
            log.warning("search queue unknown (%s); admitting", exc)
            return 0.0

    async def sweep_lost_owners(self) -> int:
        """End the attempts owned by a supervisor incarnation that is gone (the live one, asked
        here, does the same on its own; whichever writes first ends them)."""
        from app.jobs.supervisor import sweep_lost_owners

        live = await asyncio.wait_for(asyncio.wrap_future(self.supervisor.owner.remote().future()), timeout=10)
        searches, jobs = await asyncio.to_thread(sweep_lost_owners, self.settings, self.records, self.index_jobs, live)
        return searches + jobs

    def watch(self, request_id: str, job_id: str, ref) -> None:
        """Follow a dispatched search job, so that a dead worker fails it within seconds."""
        running_searches(self.jobs.add(request_id, job_id, ref))

    def cancel_superseded(self, request_id: str) -> int:
        """Cancel, with their clipping tasks, the jobs this replica started for ``request_id``
        that are no longer its record's job (a re-POST replaced them); returns how many.

        Called after each dispatch. The record decides, not the order of dispatch: with
        concurrent POSTs a job can be dispatched after a newer one was recorded. Whichever
        job is current when the last dispatch reads the record survives; each run deletes
        the files of the runs it replaced (app/features/watched_searches.py says which jobs
        one pass may judge).
        """
        import ray

        def current_job() -> str | None:
            record = self.records.get(request_id)
            return None if record is None else record.job_id

        stale = self.jobs.superseded(request_id, current_job)
        if stale:  # the supervisor owns the tasks: it cancels them
            ray.get(self.supervisor.cancel.remote(list(stale)), timeout=30)
            log.info("search %s: jobs %s superseded, cancelled", request_id, sorted(stale))
        running_searches(len(self.jobs))
        return len(stale)

    def check_jobs(self) -> int:
        """Fail the searches whose job ended with an error instead of recording an outcome
        (its worker died, or it could not start); returns how many."""
        import ray

        refs = self.jobs.refs()
        if not refs:
            return 0
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0, fetch_local=False)
        running_searches(len(refs) - len(ready))
        failed = 0
        for ref in ready:
            job_id = refs[ref]
            popped = self.jobs.pop(job_id)
            if popped is None:  # cancelled as superseded meanwhile
                continue
            request_id = popped[0]
            try:
                ray.get(ref, timeout=0)
            except Exception as exc:  # the task never wrote its outcome (the supervisor sees it too)
                from app.jobs.supervisor import end_search

                failed += end_search(self.settings, self.records, request_id, job_id, exc)
        return failed

    def watch_index_job(self, job_id: str, ref) -> None:
        with self.index_lock:
            self.index_refs[job_id] = ref

    def check_index_jobs(self) -> int:
        """End the index jobs whose driver task died without ending them; returns how many."""
        import ray

        with self.index_lock:
            refs = {ref: jid for jid, ref in self.index_refs.items()}
        if not refs:
            return 0
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0, fetch_local=False)
        lost = 0
        for ref in ready:
            job_id = refs[ref]
            with self.index_lock:
                self.index_refs.pop(job_id, None)
            lost += end_if_driver_lost(self.settings, self.index_jobs, job_id, ref)
        return lost

    def sweep_overdue_index_jobs(self) -> int:
        from app.store.index_jobs import OVERDUE_ERROR

        return sum(end_lost(self.settings, self.index_jobs, job, OVERDUE_ERROR) for job in self.index_jobs.overdue())

    def tell_webhooks(self, request_ids: list[str]) -> None:
        """Searches failed here (lost worker, deadline) tell their webhooks from a Ray task:
        deliveries retry for a while, and the watcher must not wait on them."""
        from app.jobs.dispatch import notify_search_later

        for request_id in request_ids:
            notify_search_later.remote(self.settings, request_id)

    def search_started(self) -> None:
        """Count writes; maintain in the background every ``maintenance_every_searches``."""
        self.searches_since_maintenance += 1
        if self.searches_since_maintenance >= self.settings.api.maintenance_every_searches and not self.maintaining:
            task = asyncio.get_running_loop().create_task(self.maintain())
            self.background.add(task)
            task.add_done_callback(self.background.discard)

    @classmethod
    def create(cls, settings: AppSettings, embedder, limiter, matcher=None) -> Services:
        stores = cls.store_fields(settings)
        return cls(
            **stores,
            embedder=embedder,
            auth=Auth.create(settings, stores["keys"], stores["events"], limiter),
            matcher=matcher,
            results=ResultCache(stores["control"], settings.api.result_cache_entries),
        )


def parse_request_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise DomainError("invalid_request_id", "request_id is not a valid UUID.") from None
