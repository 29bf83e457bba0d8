"""The job supervisor: one detached actor per cluster that owns every search and index job.

Ray's tasks share their owner's fate: a task submitted by an ingress replica is killed when
that replica dies. Jobs are therefore submitted by this actor, which no replica owns (it is
detached and restarted by Ray when it dies), so a job outlives the replica that accepted it.
The actor also follows its jobs: one whose worker died, or that ended without recording an
outcome, is ended ``failed`` within ``api.job_watch_interval_s``.

Each attempt stores its task id and the supervisor's incarnation (``owner``) with its record.
When the supervisor itself dies, its tasks die with it; its next incarnation, and every
ingress replica's sweep, end the attempts a gone incarnation owned. Every ending is a
conditional write (app/store/records.py): a job that did finish keeps its own result.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import ray

from app.config import AppSettings
from app.core.contract import PROCESSING
from app.core.search_pace import SearchPace, admission_wait_s

log = logging.getLogger(__name__)

NAME = "facereel-job-supervisor"
NAMESPACE = "facereel"
LOST_WORKER_ERROR = "The search's worker was lost ({}); start a new search."


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class JobSupervisor:
    def __init__(self, settings: AppSettings) -> None:
        from app.store.control import ControlStore
        from app.store.index_jobs import IndexJobs
        from app.store.records import RequestRecords

        self.settings = settings
        self.incarnation = uuid.uuid4().hex
        control = ControlStore(settings.control_uri, settings.store.storage_options)
        api = settings.api
        self.records = RequestRecords(control, api.request_deadline_s, api.dispatch_deadline_s)
        self.index_jobs = IndexJobs(control, api.index_job_deadline_s, api.dispatch_deadline_s)
        self.searches: dict[str, tuple[str, ray.ObjectRef]] = {}  # job_id -> (request_id, ref)
        self.pace = SearchPace()  # searches in flight on the cluster, and the pace they end at
        self.indexing: dict[str, ray.ObjectRef] = {}  # index job_id -> ref
        self.background: set[asyncio.Task] = set()
        self.watching: asyncio.Task | None = None
        self.warming: tuple[int, asyncio.Future] | None = None  # (workers, the warm-up) of warm(once=True)
        log.info("job supervisor %s started", self.incarnation)

    def _watch(self) -> None:
        if self.watching is None or self.watching.done():
            self.watching = asyncio.get_running_loop().create_task(self.watch_forever())

    def _later(self, fn, *args) -> None:
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(fn, *args))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def owner(self) -> str:
        """This incarnation: attempts owned by any other one are lost."""
        self._watch()
        return self.incarnation

    async def submit_search(self, settings: AppSettings, job) -> dict:
        """Hand a search job to Ray; {"task_id", "owner", "ref"} (the ref for the caller to
        follow, as a borrower: its death does not touch the job)."""
        from app.jobs.dispatch import run_search
        from app.obs.background import background_options

        self._watch()
        at = datetime.now(UTC)
        job = replace(job, owner=self.incarnation, dispatched_at=at, supervisor=ray.get_runtime_context().current_actor)
        options = background_options(settings.api.search_task_nice)
        ref = run_search.options(num_cpus=settings.api.search_job_cpus, **options).remote(settings, job)
        task_id = ref.task_id().hex()
        self.searches[job.job_id] = (job.request_id, ref)
        self.pace.started(time.monotonic(), job.job_id)
        # Off the POST's path; the job's own first write carries the same facts, whichever lands first.
        self._later(self.records.dispatched, job.request_id, job.job_id, task_id, self.incarnation, at)
        return {"task_id": task_id, "owner": self.incarnation, "ref": ref}

    async def job_running(self, job_id: str) -> None:
        """A search job found its worker (run_search's first act)."""
        self.pace.running(job_id)

    async def admission(self, target_s: float, capacity: int, start_grace_s: float = float("inf")) -> float:
        """0 when one more search can start now: it would likely end within ``target_s`` at
        the pace searches end at on the cluster, fewer than ``capacity`` are in flight, and no
        search has waited longer than ``start_grace_s`` for a worker. Else the seconds until
        one likely can (app/core/search_pace.py)."""
        now = time.monotonic()
        return admission_wait_s(
            self.pace.in_flight,
            self.pace.per_search_s(),
            target_s,
            capacity,
            self.pace.longest_wait_s(now, self.settings.api.request_deadline_s),
            start_grace_s,
        )

    async def warm(self, settings: AppSettings, workers: int, hold_s: float = 2.0, once: bool = False) -> list[int]:
        """Start ``workers`` workers for searches (one for the job, the rest for its clips),
        owned like the jobs that will reuse them; their pids.

        ``once`` (each ingress replica's start): a cluster this supervisor has warmed for as
        many workers is not warmed again, and replicas starting together share one warm-up. A
        replacement replica would otherwise queue its warm-up's clip tasks behind the running
        searches' clips on a busy node, and be out of service all that time (issue 26's soak);
        the workers it would start are the cluster's, and already up."""
        from app.jobs.dispatch import warm_search_worker
        from app.obs.background import background_options

        if once and self.warming is not None and self.warming[0] >= workers:
            task = self.warming[1]
            if not task.done() or task.exception() is None:
                return await asyncio.shield(task)
        options = background_options(settings.api.search_task_nice)
        ref = warm_search_worker.options(**options).remote(settings, max(1, workers - 1), hold_s)
        task = asyncio.ensure_future(asyncio.wrap_future(ref.future()))
        self.warming = (workers, task)
        return await asyncio.shield(task)

    async def submit_index(self, settings: AppSettings, job_id: str) -> dict:
        from app.jobs.index_job import run_index_job

        self._watch()
        ref = run_index_job.remote(settings, job_id, self.incarnation)
        self.indexing[job_id] = ref
        return {"task_id": ref.task_id().hex(), "owner": self.incarnation, "ref": ref}

    async def cancel(self, job_ids: list[str]) -> int:
        """Cancel superseded search jobs (and their clipping tasks); returns how many it held.

        A job that is still its record's current attempt is never cancelled: nothing would
        then end the search before its request deadline. The caller judged from its own read
        of the record; this read is later, so it is at least as fresh."""
        cancelled = 0
        current: dict[str, str | None] = {}  # request_id -> its processing attempt: one read per request
        for job_id in job_ids:
            held = self.searches.get(job_id)
            if held is None:
                continue
            if held[0] not in current:
                record = await asyncio.to_thread(self.records.read, held[0])
                current[held[0]] = record.job_id if record is not None and record.status == PROCESSING else None
            if current[held[0]] == job_id:
                log.warning("search %s: job %s is its current attempt; not cancelled", held[0], job_id)
                continue
            self.searches.pop(job_id, None)
            self.pace.ended(time.monotonic(), counted=False, job_id=job_id)
            try:
                ray.cancel(held[1], recursive=True)
                cancelled += 1
            except Exception:  # already finished, or its worker is gone
                log.debug("cancelling job %s failed", job_id, exc_info=True)
        return cancelled

    async def running(self) -> list[str]:
        """Job ids of the searches and index jobs it follows that have not ended."""
        refs = {ref: jid for jid, (_, ref) in self.searches.items()} | {r: j for j, r in self.indexing.items()}
        if not refs:
            return []
        _, pending = ray.wait(list(refs), num_returns=len(refs), timeout=0, fetch_local=False)
        return sorted(refs[r] for r in pending)

    async def watch_forever(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.check)
            except Exception:
                log.exception("supervising jobs failed")
            await asyncio.sleep(self.settings.api.job_watch_interval_s)

    def check(self) -> tuple[int, int]:
        """End the jobs whose worker died (or that ended without an outcome), and the
        attempts a gone incarnation owned; (searches, index jobs) ended."""
        from app.jobs.index_job import end_if_driver_lost

        ended = self.check_searches()
        indexed = 0
        refs = dict(self.indexing)
        if refs:
            ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=0, fetch_local=False)
            for job_id, ref in refs.items():
                if ref not in ready:
                    continue
                self.indexing.pop(job_id, None)
                indexed += end_if_driver_lost(self.settings, self.index_jobs, job_id, ref)
        failed = sweep_lost_owners(self.settings, self.records, self.index_jobs, self.incarnation)
        return ended + failed[0], indexed + failed[1]

    def check_searches(self) -> int:
        refs = {ref: jid for jid, (_, ref) in self.searches.items()}
        if not refs:
            return 0
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0, fetch_local=False)
        failed = 0
        for ref in ready:
            held = self.searches.pop(refs[ref], None)
            if held is None:
                continue
            self.pace.ended(time.monotonic(), job_id=refs[ref])
            try:
                ray.get(ref, timeout=0)
            except Exception as exc:  # the task never wrote its outcome
                failed += end_search(self.settings, self.records, held[0], refs[ref], exc)
        return failed


def end_search(settings: AppSettings, records, request_id: str, job_id: str, exc: BaseException) -> int:
    """Fail an attempt whose job died; 1 when this call ended it (and told its webhook)."""
    from app.jobs.dispatch import notify_search_later

    if records.finish(request_id, job_id, "failed", error=LOST_WORKER_ERROR.format(type(exc).__name__)):
        log.warning("search %s lost its worker: %s", request_id, exc)
        notify_search_later.remote(settings, request_id)
        return 1
    return 0


def sweep_lost_owners(settings: AppSettings, records, index_jobs, live_owner: str) -> tuple[int, int]:
    """End the searches and index jobs owned by a supervisor incarnation other than the live
    one: their tasks died with it. (searches, index jobs) ended."""
    from app.jobs.dispatch import notify_search_later
    from app.jobs.index_job import end_lost
    from app.store.index_jobs import LOST_ERROR

    searches = records.sweep_lost_owners(live_owner)
    for record in searches:
        log.warning("search %s: its owner %s is gone, failed", record.request_id, record.owner)
        if record.webhook_url:
            notify_search_later.remote(settings, record.request_id)
    jobs = 0
    for job in index_jobs.lost_owners(live_owner):
        jobs += end_lost(settings, index_jobs, job, LOST_ERROR.format("its supervisor died"))
    return len(searches), jobs


def supervisor_name(settings: AppSettings) -> str:
    """One supervisor per control store: two applications on one cluster with stores of their
    own (another data dir, another bucket) must not end each other's attempts."""
    import hashlib

    return f"{NAME}-{hashlib.blake2b(settings.control_uri.encode(), digest_size=6).hexdigest()}"


def supervisor(settings: AppSettings):
    """The store's supervisor, created by the first caller (detached: no replica owns it)."""
    return JobSupervisor.options(
        name=supervisor_name(settings), namespace=NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote(settings)
