"""Index jobs on the Ray cluster: the driver task and how a job that will not finish ends.

A job is a record in the ``index_jobs`` control table (app/store/index_jobs.py) and one Ray
task, ``run_index_job``, that drives the same streaming Ray Data pipeline as ``facereel
index`` (``pipelines.index.index_sources``) and writes its progress to the record. Every path
ends in a terminal status: the task writes completed / failed / cancelled; whoever watches
its driver ends it at once if the worker dies (``end_if_driver_lost``); any replica's sweep
fails it past its deadline. A job that did not finish removes the rows of the media it had
started (``remove_unfinished``), so a media item is always either fully indexed or not at all.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

import ray

from app.config import AppSettings
from app.store.control import ControlStore
from app.store.index_jobs import CANCELLED, COMPLETED, FAILED, LOST_ERROR, IndexJob, IndexJobs, registered_media

log = logging.getLogger(__name__)


def remove_unfinished(settings: AppSettings, control: ControlStore, job: IndexJob) -> list[str]:
    """Remove the rows of the job's media that it started and did not finish, so an
    interrupted job leaves each media item fully indexed or not at all; returns their keys.

    Kept: media indexed from their registered location (skipped by the job, or finished by
    it: a media row is written only after all of its faces), and media the job itself marked
    failed (their faces were removed then).
    """
    from pipelines.models import pack_info
    from pipelines.store import FaceStore

    store = FaceStore.from_settings(settings, pack_info(settings.models.pack))
    registered = {r["media_key"]: r["uri"] for r in registered_media(control, job.org_id, job.event_id, job.media_keys)}
    rows = store.media_by_keys(job.org_id, job.event_id, job.media_keys)
    started = job.created_at or datetime.now(UTC)

    def settled(key: str) -> bool:
        row = rows.get(key)
        if row is None:
            return False
        if row["status"] == "indexed":
            return row["uri"] == registered.get(key, row["uri"])
        return row["indexed_at"] is not None and row["indexed_at"] >= started

    unfinished = [k for k in job.media_keys if not settled(k)]
    if unfinished:
        store.delete_media_faces(job.org_id, job.event_id, unfinished)
        store.delete_media_rows(job.org_id, job.event_id, unfinished)
    return unfinished


# ---- the job's task ---------------------------------------------------------------------
# SPREAD: jobs of several events drive their pipelines from different nodes.
@ray.remote(num_cpus=0, max_retries=0, scheduling_strategy="SPREAD")
def run_index_job(settings: AppSettings, job_id: str, owner: str | None = None) -> str:
    """Drive one job to a terminal status; returns it. ``owner``: the supervisor incarnation
    that submitted it."""
    from app.store.control import ControlStore
    from pipelines.index import index_sources
    from pipelines.index_report import IndexCancelled, IndexProgress
    from pipelines.media import MediaSource

    control = ControlStore(settings.control_uri, settings.store.storage_options)
    jobs = IndexJobs(control, settings.api.index_job_deadline_s, settings.api.dispatch_deadline_s)
    job = jobs.started(job_id, ray.get_runtime_context().get_task_id(), owner)
    if job is None:
        return "not started"
    media = registered_media(control, job.org_id, job.event_id, job.media_keys)
    from app.store.events import EventStore

    event = EventStore(control).get(job.org_id, job.event_id)
    sources = [
        MediaSource(
            r["uri"],
            r["media_key"],
            r["media_type"],
            r["size_bytes"] or 0,
            # a source in the org's own storage is read with its options
            event.options_for(r["uri"], settings) if event is not None and event.storage is not None else None,
        )
        for r in media
    ]
    missing = sorted(set(job.media_keys) - {s.media_key for s in sources})
    job.media_errors.update({k: "not registered (deleted before the job ran)" for k in missing})
    last = {"write": 0.0, "check": 0.0, "stop": False, "dirty": False}
    interval = settings.api.index_progress_interval_s
    writing = threading.Lock()  # the heartbeat thread and the progress writes share ``job``

    def write_progress() -> None:  # holding ``writing``
        last["write"], last["dirty"] = time.monotonic(), False
        if not jobs.progress(job):
            last["stop"] = True

    def on_progress(status: IndexProgress) -> None:
        """Each stage change is written at once, progress at most every ``interval``; what
        a batch moved in between is written by the heartbeat thread (``flush_progress``),
        so a record is never more than about one interval behind."""
        with writing:
            stage_changed = status.stage != job.current_stage
            job.current_stage = status.stage
            job.frames_planned, job.frames_done = status.frames_planned, status.frames_done
            job.media_done, job.faces = status.media_done + len(missing), status.faces
            job.indexed = list(status.indexed)
            job.media_errors.update(status.failed)
            last["dirty"] = True
            if stage_changed or time.monotonic() - last["write"] >= interval:
                write_progress()

    def flush_progress() -> None:
        with writing:
            if last["dirty"] and time.monotonic() - last["write"] >= interval:
                write_progress()

    def should_stop() -> bool:
        now = time.monotonic()
        if not last["stop"] and now - last["check"] >= interval:
            last["check"] = now
            last["stop"] = jobs.cancel_requested(job_id)
        return bool(last["stop"])

    alive = threading.Event()

    def heartbeat() -> None:
        beat = settings.api.index_job_heartbeat_s
        due = time.monotonic() + beat
        while not alive.wait(min(beat, interval)):
            try:
                flush_progress()
                if time.monotonic() >= due:
                    due = time.monotonic() + beat
                    with writing:
                        jobs.heartbeat(job)
            except Exception:  # the next beat tries again; the deadline is several beats away
                log.warning("index job %s: heartbeat failed", job_id, exc_info=True)

    beats = threading.Thread(target=heartbeat, name=f"index-job-heartbeat-{job_id}", daemon=True)
    beats.start()
    try:
        bibs = EventStore(control).reads_bibs(job.org_id, job.event_id)
        report = index_sources(
            settings, job.org_id, job.event_id, sources, on_progress=on_progress, bibs=bibs, should_stop=should_stop
        )
    except IndexCancelled as stopped:  # it removed what it had not finished
        job.indexed = list(stopped.report.indexed)
        job.media_errors.update(stopped.report.failed)
        job.cancel_requested = True
        if jobs.end(job, CANCELLED, "Cancelled: media it had not finished were left unindexed."):
            notify_job(settings, control, job)
        return CANCELLED
    except Exception as exc:
        log.exception("index job %s failed", job_id)
        end_lost(settings, jobs, job, f"indexing failed: {type(exc).__name__}: {exc}", notify_here=True)
        return FAILED
    finally:
        alive.set()
        beats.join()
    job.indexed = list(report.indexed)
    job.media_errors.update(report.failed)
    job.faces = report.faces  # the rows stored
    job.media_done = len(job.media_keys)
    job.frames_done = job.frames_planned
    job.current_stage = "write"
    status = COMPLETED
    if job.media_keys and not job.indexed and job.media_errors:
        status = FAILED  # nothing could be indexed
    if jobs.end(job, status, None if status == COMPLETED else "No media could be indexed; see errors."):
        notify_job(settings, control, job)
    return status


def notify_job(settings: AppSettings, control: ControlStore, job: IndexJob) -> None:
    """The job's final state to its webhook, when it has one (never raises)."""
    if not job.webhook_url:
        return
    from app.jobs.notify import notify

    final = IndexJobs(control, 1, 1).read(job.job_id) or job
    notify(
        settings,
        control,
        final.org_id,
        final.event_id,
        f"index_job.{final.status}",
        final.job_id,
        final.webhook_url,
        final.payload(),
    )


def end_if_driver_lost(settings: AppSettings, index_jobs, job_id: str, ref) -> int:
    """A finished driver task ``ref``: when it raised and its job is still open, end the job
    (it lost its driver); 1 when this call ended it. Every watcher of index jobs uses it."""
    try:
        ray.get(ref, timeout=0)
        return 0
    except Exception as exc:
        job = index_jobs.read(job_id)
        if job is None or job.status not in ("queued", "processing"):
            return 0
        log.warning("index job %s lost its driver: %s", job_id, exc)
        return int(end_lost(settings, index_jobs, job, LOST_ERROR.format(type(exc).__name__)))


def end_lost(settings: AppSettings, jobs: IndexJobs, job: IndexJob, error: str, notify_here: bool = False) -> bool:
    """End a job that will not finish (its driver died, failed or went overdue): the one
    caller that wins the terminal write removes its unfinished media while it still holds
    the event's lock, then frees the lock and tells the webhook. Cancelled when a cancel was
    asked, else failed."""
    status = CANCELLED if job.cancel_requested else FAILED
    if not jobs.end(job, status, error, release=False):
        return False  # ended by someone else, who cleans up
    try:
        remove_unfinished(settings, jobs.control, job)
    except Exception:
        log.exception("removing the unfinished media of index job %s failed", job.job_id)
    finally:
        jobs.release(job.org_id, job.event_id, job.job_id)
    if job.webhook_url:
        if notify_here:
            notify_job(settings, jobs.control, job)
        else:  # from a task: deliveries retry for a while, the caller must not wait
            notify_job_later.remote(settings, job.job_id)
    return True


@ray.remote(num_cpus=0, max_retries=0)
def notify_job_later(settings: AppSettings, job_id: str) -> None:
    control = ControlStore(settings.control_uri, settings.store.storage_options)
    job = IndexJobs(control, 1, 1).read(job_id)
    if job is not None:
        notify_job(settings, control, job)
