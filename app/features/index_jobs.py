"""Starting an index job: the use case behind ``POST .../index-jobs``."""

from __future__ import annotations

import uuid

import ray

from app.core.errors import DomainError
from app.features.services import Services
from app.store.events import Event
from app.store.index_jobs import ENDED_LOCK_WAIT_S, FAILED, TERMINAL, IndexJob, registered_media


def start_index_job(services: Services, event: Event, keys: list[str] | None, url: str | None) -> IndexJob:
    """Take the event's lock (409 while another job or a deletion holds it), record the job,
    hand it to Ray."""
    org_id, event_id = event.org_id, event.event_id
    registered = registered_media(services.control, org_id, event_id, keys)
    if keys is not None:
        unknown = sorted(set(keys) - {r["media_key"] for r in registered})
        if unknown:
            shown = ", ".join(repr(k) for k in unknown[:5])
            raise DomainError("unknown_media", f"Unknown media keys (register them first): {shown}.")
        todo = keys
    else:  # every registered source not indexed from where it is registered
        indexed = services.face_store().indexed_sources(org_id, event_id)
        todo = [r["media_key"] for r in registered if indexed.get(r["media_key"]) != r["uri"]]
    jobs = services.index_jobs
    job_id = str(uuid.uuid4())
    holder = jobs.acquire_after_ended(org_id, event_id, job_id, ENDED_LOCK_WAIT_S)
    if holder is not None:
        ended = jobs.read(holder)
        if ended is not None and ended.status in TERMINAL:
            message = f"Index job {holder} of this event has ended and is still removing the media it left unfinished; retry in a few seconds."
        else:
            message = f"Index job {holder} of this event is still running."
        raise DomainError("index_job_running", message, 5)
    try:
        job = jobs.create(job_id, org_id, event_id, todo, url)
    except Exception:
        jobs.release(org_id, event_id, job_id)
        raise
    try:  # owned by the supervisor: the job outlives this replica (app/jobs/supervisor.py)
        handed = ray.get(services.supervisor.submit_index.remote(services.settings, job.job_id), timeout=60)
    except Exception:
        jobs.end(job, FAILED, "The job could not be handed to Ray.")
        raise
    jobs.dispatched(job, handed["task_id"], handed["owner"])
    services.watch_index_job(job.job_id, handed["ref"])
    return job
