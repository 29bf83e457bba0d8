"""Index jobs' records: the ``index_jobs`` and ``index_locks`` control tables.

A job is a record in the ``index_jobs`` control table and one Ray task, ``run_index_job``,
that drives the same streaming Ray Data pipeline as ``facereel index``
(``pipelines.index.index_sources``) and writes its progress to the record. One job runs per
event at a time (the ``index_locks`` row names it). Every path ends in a terminal status:
the task writes completed / failed / cancelled; the replica that dispatched it fails it at
once if its worker dies; any replica's sweep fails it past its deadline. A job that did not
finish removes the rows of the media it had started, so a media item is always either fully
indexed or not at all.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from app.store.control import EVENT_MEDIA, INDEX_JOBS, INDEX_LOCKS, ControlStore
from pipelines.lance_tables import sql_str, sql_timestamp

log = logging.getLogger(__name__)

QUEUED, PROCESSING, COMPLETED, FAILED, CANCELLED = "queued", "processing", "completed", "failed", "cancelled"
ACTIVE = (QUEUED, PROCESSING)
TERMINAL = (COMPLETED, FAILED, CANCELLED)
OVERDUE_ERROR = "The index job did not finish within its deadline (its driver was lost); start a new job."
LOST_ERROR = "The index job's driver was lost ({}); media it had not finished were left unindexed."
# How long an ended job's lock stays with it (its ender removes unfinished media, then frees
# it), and how long a lock naming no job (a deletion) lives if its holder died.
LOCK_GRACE = timedelta(seconds=120)
# A new job waits this long for an ended job's ender to free the lock (its clean-up is a
# couple of deletes) before it is refused.
ENDED_LOCK_WAIT_S = 30.0
ENDED_LOCK_POLL_S = 0.25


@dataclass
class IndexJob:
    job_id: str
    org_id: int
    event_id: int
    status: str
    media_keys: list[str]
    webhook_url: str | None = None
    current_stage: str | None = None
    frames_planned: int = 0
    frames_done: int = 0
    media_done: int = 0
    faces: int = 0
    media_errors: dict[str, str] = field(default_factory=dict)
    indexed: list[str] = field(default_factory=list)
    cancel_requested: bool = False
    task_id: str | None = None  # the driver task in Ray
    owner: str | None = None  # the supervisor incarnation that owns it (app/jobs/supervisor.py)
    error: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deadline_at: datetime | None = None

    @property
    def progress_percent(self) -> float:
        """Sampled frames done / planned; 100 only once completed (the last write, compaction
        and index build come after the frames)."""
        if self.status == COMPLETED:
            return 100.0
        if self.frames_planned:
            return min(99.9, round(100.0 * self.frames_done / self.frames_planned, 1))
        return 0.0

    def to_row(self) -> dict:
        return {
            "job_id": self.job_id,
            "org_id": self.org_id,
            "event_id": self.event_id,
            "status": self.status,
            "media_keys_json": json.dumps(self.media_keys),
            "webhook_url": self.webhook_url,
            "current_stage": self.current_stage,
            "frames_planned": self.frames_planned,
            "frames_done": self.frames_done,
            "media_done": self.media_done,
            "faces": self.faces,
            "media_errors_json": json.dumps(self.media_errors),
            "indexed_json": json.dumps(self.indexed),
            "cancel_requested": self.cancel_requested,
            "task_id": self.task_id,
            "owner": self.owner,
            "error": self.error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "deadline_at": self.deadline_at,
        }

    @classmethod
    def from_row(cls, r: dict) -> IndexJob:
        return cls(
            job_id=r["job_id"],
            org_id=r["org_id"],
            event_id=r["event_id"],
            status=r["status"],
            media_keys=json.loads(r["media_keys_json"] or "[]"),
            webhook_url=r["webhook_url"],
            current_stage=r["current_stage"],
            frames_planned=r["frames_planned"] or 0,
            frames_done=r["frames_done"] or 0,
            media_done=r["media_done"] or 0,
            faces=r["faces"] or 0,
            media_errors=json.loads(r["media_errors_json"] or "{}"),
            indexed=json.loads(r["indexed_json"] or "[]"),
            cancel_requested=bool(r["cancel_requested"]),
            task_id=r.get("task_id"),
            owner=r.get("owner"),
            error=r["error"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            deadline_at=r["deadline_at"],
        )

    def payload(self, deliveries: list[dict] | None = None) -> dict:
        """The job as GET answers it (and as its webhook delivers it)."""
        return {
            "job_id": self.job_id,
            "status": self.status,
            "progress_percent": self.progress_percent,
            "current_stage": self.current_stage,
            "media": {
                "total": len(self.media_keys),
                "done": self.media_done,
                "indexed": len(self.indexed),
                "failed": len(self.media_errors),
            },
            "frames": {"planned": self.frames_planned, "done": self.frames_done},
            "faces": self.faces,
            "media_keys": self.media_keys,
            "errors": [{"media_key": k, "error": e} for k, e in sorted(self.media_errors.items())],
            "error": self.error,
            "cancel_requested": self.cancel_requested,
            "webhook": None if not self.webhook_url else {"url": self.webhook_url, "deliveries": deliveries or []},
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class IndexJobs:
    """The job records and the per-event lock (writes are conditional, so replicas and the
    job's own task never overwrite each other's newer state)."""

    def __init__(self, control: ControlStore, deadline_s: float, dispatch_deadline_s: float) -> None:
        self.control = control
        self.deadline = timedelta(seconds=deadline_s)
        self.dispatch_deadline = timedelta(seconds=dispatch_deadline_s)

    # ---- records -----------------------------------------------------------------------
    def read(self, job_id: str) -> IndexJob | None:
        rows = self.control.rows(INDEX_JOBS, f"job_id = {sql_str(job_id)}", 1)
        return IndexJob.from_row(rows[0]) if rows else None

    def get(self, org_id: int, event_id: int, job_id: str) -> IndexJob | None:
        """The event's job (None for another event's). An overdue job is ended by the sweep,
        which also removes what it left unfinished."""
        job = self.read(job_id)
        if job is None or (job.org_id, job.event_id) != (org_id, event_id):
            return None
        return job

    def create(
        self, job_id: str, org_id: int, event_id: int, media_keys: list[str], webhook_url: str | None
    ) -> IndexJob:
        now = datetime.now(UTC)
        job = IndexJob(
            job_id=job_id,
            org_id=org_id,
            event_id=event_id,
            status=QUEUED,
            media_keys=media_keys,
            webhook_url=webhook_url,
            current_stage=None,
            created_at=now,
            updated_at=now,
            deadline_at=now + self.dispatch_deadline,
        )
        self.control.upsert(INDEX_JOBS, [job.to_row()])
        return job

    def _write(self, job: IndexJob, only_if: str) -> bool:
        job.updated_at = datetime.now(UTC)
        return bool(self.control.upsert(INDEX_JOBS, [job.to_row()], only_if=only_if, insert=False))

    def dispatched(self, job: IndexJob, task_id: str | None = None, owner: str | None = None) -> None:
        """Handed to Ray (task ``task_id``, owned by supervisor incarnation ``owner``): the full
        deadline applies."""
        job.deadline_at = datetime.now(UTC) + self.deadline
        job.task_id, job.owner = task_id, owner
        self._write(job, f"target.status = {sql_str(QUEUED)}")

    def started(self, job_id: str, task_id: str | None = None, owner: str | None = None) -> IndexJob | None:
        """The task took the job (queued -> processing); None when it was cancelled first."""
        job = self.read(job_id)
        if job is None or job.status != QUEUED:
            return None
        job.status = PROCESSING
        job.task_id, job.owner = job.task_id or task_id, job.owner or owner
        job.current_stage = "probe"
        job.deadline_at = datetime.now(UTC) + self.deadline
        return job if self._write(job, f"target.status = {sql_str(QUEUED)}") else None

    def progress(self, job: IndexJob) -> bool:
        """Store progress, and push the deadline on. False once a cancel was asked or the
        job ended."""
        job.deadline_at = datetime.now(UTC) + self.deadline
        only_if = f"target.status = {sql_str(PROCESSING)} AND (target.cancel_requested IS NULL OR NOT target.cancel_requested)"
        return self._write(job, only_if)

    def heartbeat(self, job: IndexJob) -> bool:
        """Push the deadline on while the driver lives (also through stages that report no
        progress, and after a cancel was asked, which it keeps); False once the job ended."""
        if self.progress(job):
            return True
        current = self.read(job.job_id)
        if current is None or current.status != PROCESSING:
            return False
        job.cancel_requested = bool(current.cancel_requested)
        return self._write(job, f"target.status = {sql_str(PROCESSING)}")

    def end(
        self, job: IndexJob, status: str, error: str | None = None, only_from: tuple = ACTIVE, release: bool = True
    ) -> bool:
        """Write a terminal status over one of ``only_from``; True for the one writer that
        did. With ``release`` the event's lock is freed too (else the caller frees it once it
        has cleaned up)."""
        if status not in TERMINAL:
            raise ValueError(f"a job ends in a terminal status, not {status!r}")
        job.status, job.error = status, error
        written = self._write(job, f"target.status IN ({', '.join(sql_str(s) for s in only_from)})")
        if written and release:
            self.release(job.org_id, job.event_id, job.job_id)
        return written

    def request_cancel(self, job: IndexJob) -> IndexJob:
        """A queued job is cancelled at once; a running one is asked to stop (its task removes
        what it had not finished, then writes ``cancelled``). Only ``cancel_requested``
        changes: the write holds only while the row is still the one read."""
        if job.status == QUEUED:
            job.cancel_requested = True
            if self.end(job, CANCELLED, "Cancelled before it started.", only_from=(QUEUED,)):
                return job
            job = self.read(job.job_id) or job
        for _ in range(5):
            if job.status != PROCESSING or job.cancel_requested:
                break
            unchanged = (
                f"target.status = {sql_str(PROCESSING)} AND target.frames_done = {int(job.frames_done)} "
                f"AND target.media_done = {int(job.media_done)} AND target.faces = {int(job.faces)} "
                f"AND target.current_stage = {sql_str(job.current_stage or '')}"
            )
            job.cancel_requested = True
            if self._write(job, unchanged):
                break
            job = self.read(job.job_id) or job
        return self.read(job.job_id) or job

    def cancel_requested(self, job_id: str) -> bool:
        rows = self.control.rows(INDEX_JOBS, f"job_id = {sql_str(job_id)}", 1)
        return bool(rows and (rows[0]["cancel_requested"] or rows[0]["status"] not in ACTIVE))

    def of_event(self, org_id: int, event_id: int, status: tuple[str, ...] = ()) -> list[IndexJob]:
        where = f"org_id = {int(org_id)} AND event_id = {int(event_id)}"
        if status:
            where += f" AND status IN ({', '.join(sql_str(s) for s in status)})"
        return [IndexJob.from_row(r) for r in self.control.rows(INDEX_JOBS, where)]

    def delete_of_event(self, org_id: int, event_id: int) -> int:
        where = f"org_id = {int(org_id)} AND event_id = {int(event_id)}"
        removed = 0
        for name in (INDEX_JOBS, INDEX_LOCKS):
            table = self.control.table(name)
            removed += table.count_rows(where)
            table.delete(where)
        return removed

    def lost_owners(self, live_owner: str) -> list[IndexJob]:
        """Active jobs owned by a supervisor incarnation other than ``live_owner`` (gone)."""
        where = (
            f"status IN ({sql_str(QUEUED)}, {sql_str(PROCESSING)}) AND owner IS NOT NULL"
            f" AND owner != {sql_str(live_owner)}"
        )
        return [IndexJob.from_row(r) for r in self.control.rows(INDEX_JOBS, where)]

    def overdue(self) -> list[IndexJob]:
        where = (
            f"status IN ({sql_str(QUEUED)}, {sql_str(PROCESSING)}) AND deadline_at < {sql_timestamp(datetime.now(UTC))}"
        )
        return [IndexJob.from_row(r) for r in self.control.rows(INDEX_JOBS, where)]

    # ---- the event's lock --------------------------------------------------------------
    def holder(self, org_id: int, event_id: int) -> str | None:
        row = self._lock(org_id, event_id)
        return row["job_id"] if row else None

    def _lock(self, org_id: int, event_id: int) -> dict | None:
        rows = self.control.rows(INDEX_LOCKS, f"org_id = {int(org_id)} AND event_id = {int(event_id)}", 1)
        return rows[0] if rows else None

    def _stale(self, row: dict) -> bool:
        """A lock whose holder is gone: its job ended (and had the grace to clean up), or it
        names no job (a deletion, or a job that was never recorded) and is older than the grace."""
        now = datetime.now(UTC)
        held_by = self.read(row["job_id"])
        if held_by is not None:
            return held_by.status in TERMINAL and (held_by.updated_at or now) < now - LOCK_GRACE
        return row["taken_at"] is None or row["taken_at"] < now - LOCK_GRACE

    def acquire(self, org_id: int, event_id: int, holder: str) -> str | None:
        """Take the event's lock for ``holder`` (a job id, or a deletion's id); None when
        taken, else who holds it. One index job, or one deletion of media, at a time."""
        row = {"org_id": org_id, "event_id": event_id, "job_id": holder, "taken_at": datetime.now(UTC)}
        for _ in range(3):
            current = self._lock(org_id, event_id)
            held = current["job_id"] if current else None
            if held is not None and not self._stale(current):
                return held
            only_if = "target.job_id IS NULL" if held is None else f"target.job_id = {sql_str(held)}"
            taken = self.control.upsert(INDEX_LOCKS, [row], only_if=only_if, insert=True)
            if taken and self.holder(org_id, event_id) == holder:
                return None
        return self.holder(org_id, event_id) or "unknown"

    def acquire_after_ended(self, org_id: int, event_id: int, holder: str, wait_s: float) -> str | None:
        """``acquire``, but a lock held by a job that has already ended (its ender is removing
        the media it left unfinished, a few seconds) is waited for, up to ``wait_s``: a client
        that sees ``failed`` and starts a new job at once gets it, not a 409."""
        deadline = time.monotonic() + wait_s
        while True:
            held = self.acquire(org_id, event_id, holder)
            if held is None or time.monotonic() >= deadline:
                return held
            ending = self.read(held)
            if ending is None or ending.status not in TERMINAL:
                return held
            time.sleep(ENDED_LOCK_POLL_S)

    def release(self, org_id: int, event_id: int, holder: str) -> None:
        row = {"org_id": org_id, "event_id": event_id, "job_id": None, "taken_at": None}
        self.control.upsert(INDEX_LOCKS, [row], only_if=f"target.job_id = {sql_str(holder)}", insert=False)


# ---- what a job indexes -----------------------------------------------------------------
def registered_media(
    control: ControlStore, org_id: int, event_id: int, media_keys: list[str] | None = None
) -> list[dict]:
    where = f"org_id = {int(org_id)} AND event_id = {int(event_id)}"
    if media_keys is not None:
        if not media_keys:
            return []
        where += f" AND media_key IN ({', '.join(sql_str(k) for k in media_keys)})"
    return sorted(control.rows(EVENT_MEDIA, where), key=lambda r: r["media_key"])
