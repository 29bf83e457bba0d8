"""The search jobs one ingress replica started, and which of them a re-POST superseded.

Pure bookkeeping behind a lock (no Ray, no store): the event loop adds jobs while the job
watcher and the superseded-job cancelling read and remove them in threads. Unguarded, a
dict changing size during iteration (or a job already removed) made a cancelling pass give
up half way, leaving superseded jobs running alongside the current one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class WatchedSearches:
    def __init__(self) -> None:
        self._jobs: dict[str, tuple[str, Any]] = {}  # job_id -> (request_id, the run_search ObjectRef)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def add(self, request_id: str, job_id: str, ref: Any) -> int:
        """Follow ``job_id``; how many are followed now."""
        with self._lock:
            self._jobs[job_id] = (request_id, ref)
            return len(self._jobs)

    def refs(self) -> dict[Any, str]:
        """ObjectRef -> job_id of every job followed now."""
        with self._lock:
            return {ref: job_id for job_id, (_, ref) in self._jobs.items()}

    def pop(self, job_id: str) -> tuple[str, Any] | None:
        """Stop following ``job_id``: its (request_id, ref), or None when no longer followed."""
        with self._lock:
            return self._jobs.pop(job_id, None)

    def superseded(self, request_id: str, current_job: Callable[[], str | None]) -> dict[str, Any]:
        """Take out the jobs of ``request_id`` that are no longer its record's job
        (``current_job()`` reads it); job_id -> ref, for the caller to cancel.

        Only jobs followed *before* the record is read are candidates. A job is followed
        after its attempt was recorded, so a read that begins later sees that attempt or a
        newer one: a candidate that is not the record's job was truly replaced. A job
        followed during the read may be newer than what the read returns, and is left to
        the next dispatch's pass (CI once saw two concurrent passes cancel all four jobs of
        one request this way, and the record stayed ``processing`` with nothing running).
        Without a second job of the request, nothing is read (the POST's usual path)."""
        with self._lock:
            candidates = [job_id for job_id, (rid, _) in self._jobs.items() if rid == request_id]
        if len(candidates) < 2:
            return {}
        current = current_job()
        if current is None:
            return {}
        with self._lock:
            return {
                job_id: self._jobs.pop(job_id)[1] for job_id in candidates if job_id != current and job_id in self._jobs
            }
