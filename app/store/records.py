"""Durable search-request records, shared by every replica (LanceDB, see app/store/control.py).

Each (re)start of a search is an attempt with a new ``job_id``. An attempt goes
``processing`` -> one terminal status, once, and the store enforces it: every write of an
attempt (its dispatch, its start, its outcome, a sweep's or a watcher's ``failed``) is
conditional on the row still holding that attempt, still ``processing``, and unchanged
since it was read (``updated_at``), so concurrent writers never undo each other and a
terminal status never flips. Only a new attempt (``start``, a new POST) moves a request on.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from app.core.contract import FAILED, PROCESSING, TERMINAL
from app.core.key_locks import KeyLocks
from app.obs.metrics import search_outcome, search_queued, search_running
from app.store.control import EXTRA_CLIPS, REQUESTS, ControlStore
from pipelines.lance_tables import sql_str, sql_timestamp

OVERDUE_ERROR = "The search did not finish before its deadline; its worker was lost. Start a new search."
NEVER_DISPATCHED_ERROR = "The search could not be handed to the cluster in time. Start a new search."
LOST_OWNER_ERROR = "The search's job was lost with the supervisor that owned it. Start a new search."

log = logging.getLogger(__name__)


def vectors_bytes(vectors: np.ndarray | None) -> bytes | None:
    return None if vectors is None else np.ascontiguousarray(np.atleast_2d(vectors), np.float32).tobytes()


def bytes_vectors(data: bytes | None, dim: int | None) -> np.ndarray | None:
    """Stored float32 bytes back to (n, dim); records from before ``embedding_dim`` hold one vector."""
    if data is None:
        return None
    flat = np.frombuffer(data, np.float32).copy()
    return flat.reshape(-1, dim) if dim else flat.reshape(1, -1)


@dataclass
class SearchRecord:
    request_id: str
    org_id: int
    event_id: int
    status: str
    job_id: str
    model_pack: str | None
    embedding: np.ndarray | None  # (selfies, dim): one row per uploaded selfie
    selfie: dict = field(default_factory=dict)
    hits: int = 0
    videos: list[dict] = field(default_factory=list)
    clip_errors: list[dict] = field(default_factory=list)
    negatives: np.ndarray | None = None  # (n, dim) "not me" references from feedback
    segments: list[dict] = field(default_factory=list)  # ranked segments of the last run
    bib: str | None = None  # the race number of a BIB search
    rules: dict = field(default_factory=dict)  # the threshold and segment rules of the last run
    photos: list[dict] | None = None  # Face Search's ranked photos; None before one ran
    video_matches: dict | None = None  # Face Search's video matches (app/jobs/stored_matches.py)
    matches_basis: str | None = None  # the rules and index those matches were computed under
    face_searched_at: datetime | None = None
    webhook_url: str | None = None  # told of the final result (app/core/webhooks.py)
    task_id: str | None = None  # the attempt's Ray task, once handed to Ray
    owner: str | None = None  # the supervisor incarnation owning that task (app/jobs/supervisor.py)
    dispatched_at: datetime | None = None  # handed to Ray (the ObjectRef exists)
    started_at: datetime | None = None  # the job began to run
    queued_s: float | None = None  # dispatched -> started
    running_s: float | None = None  # started -> its outcome recorded
    error: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deadline_at: datetime | None = None

    def to_row(self) -> dict:
        return {
            "request_id": self.request_id,
            "org_id": self.org_id,
            "event_id": self.event_id,
            "status": self.status,
            "job_id": self.job_id,
            "selfie_embedding": vectors_bytes(self.embedding),
            "embedding_dim": None if self.embedding is None else int(np.atleast_2d(self.embedding).shape[1]),
            "negative_embedding": vectors_bytes(self.negatives),
            "model_pack": self.model_pack,
            "selfie_json": json.dumps(self.selfie),
            "hits": self.hits,
            "videos_json": json.dumps(self.videos),
            "clip_errors_json": json.dumps(self.clip_errors),
            "segments_json": json.dumps(self.segments),
            "bib": self.bib,
            "rules_json": json.dumps(self.rules),
            "photos_json": None if self.photos is None else json.dumps(self.photos),
            "video_matches_json": None if self.video_matches is None else json.dumps(self.video_matches),
            "matches_basis": self.matches_basis,
            "face_searched_at": self.face_searched_at,
            "webhook_url": self.webhook_url,
            "task_id": self.task_id,
            "owner": self.owner,
            "dispatched_at": self.dispatched_at,
            "started_at": self.started_at,
            "queued_s": self.queued_s,
            "running_s": self.running_s,
            "error": self.error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "deadline_at": self.deadline_at,
        }

    @classmethod
    def from_row(cls, r: dict) -> SearchRecord:
        dim = r.get("embedding_dim")
        return cls(
            request_id=r["request_id"],
            org_id=r["org_id"],
            event_id=r["event_id"],
            status=r["status"],
            job_id=r["job_id"],
            model_pack=r["model_pack"],
            embedding=bytes_vectors(r["selfie_embedding"], dim),
            selfie=json.loads(r["selfie_json"] or "{}"),
            hits=r["hits"] or 0,
            videos=json.loads(r["videos_json"] or "[]"),
            clip_errors=json.loads(r["clip_errors_json"] or "[]"),
            negatives=bytes_vectors(r.get("negative_embedding"), dim),
            segments=json.loads(r.get("segments_json") or "[]"),
            bib=r.get("bib"),
            rules=json.loads(r.get("rules_json") or "{}"),
            photos=None if r.get("photos_json") is None else json.loads(r["photos_json"]),
            video_matches=None if r.get("video_matches_json") is None else json.loads(r["video_matches_json"]),
            matches_basis=r.get("matches_basis"),
            face_searched_at=r.get("face_searched_at"),
            webhook_url=r.get("webhook_url"),
            task_id=r.get("task_id"),
            owner=r.get("owner"),
            dispatched_at=r.get("dispatched_at"),
            started_at=r.get("started_at"),
            queued_s=r.get("queued_s"),
            running_s=r.get("running_s"),
            error=r["error"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            deadline_at=r["deadline_at"],
        )


def is_past(deadline: datetime | None) -> bool:
    return deadline is not None and deadline < datetime.now(UTC)


class RequestRecords:
    def __init__(self, control: ControlStore, deadline_s: float, dispatch_deadline_s: float | None = None) -> None:
        self.control = control
        self.deadline = timedelta(seconds=deadline_s)
        # Until its job is dispatched a fresh record only has this long (None: the full deadline).
        self.dispatch_deadline = timedelta(seconds=dispatch_deadline_s) if dispatch_deadline_s else self.deadline
        # This process's writes of one record queue instead of conflicting in LanceDB.
        self.writing = KeyLocks()

    def read(self, request_id: str) -> SearchRecord | None:
        """The stored record as it is."""
        rows = self.control.rows(REQUESTS, f"request_id = {sql_str(str(uuid.UUID(request_id)))}", 1)
        return SearchRecord.from_row(rows[0]) if rows else None

    def get(self, request_id: str) -> SearchRecord | None:
        """The record, failed first when it is processing past its deadline."""
        record = self.read(request_id)
        if record is not None and record.status == PROCESSING and is_past(record.deadline_at):
            self.fail_overdue(record)
            record = self.read(request_id) or record
        return record

    def start(self, record: SearchRecord, status: str = PROCESSING) -> SearchRecord:
        """Write a fresh attempt (new job id, results cleared); returns the stored record.
        The one write that is not conditional: a new POST moves the request on."""
        with self.writing.hold(record.request_id):
            now = datetime.now(UTC)  # after any queue: the dispatch deadline counts from the write
            record.job_id = uuid.uuid4().hex
            record.status = status
            record.videos, record.clip_errors, record.error, record.hits = [], [], None, 0
            record.segments = []
            record.task_id = record.owner = record.dispatched_at = record.started_at = None
            record.queued_s = record.running_s = None
            record.created_at = record.created_at or now
            record.updated_at = now
            record.deadline_at = now + self.dispatch_deadline
            self.control.upsert(REQUESTS, [record.to_row()])
        return record

    def change(
        self,
        request_id: str,
        job_id: str,
        mutate: Callable[[SearchRecord], bool | None],
        attempts: int = 20,
    ) -> SearchRecord | None:
        """Apply ``mutate`` to the attempt ``job_id`` while it is ``processing``; the stored
        record, or None once the attempt was superseded or ended (or ``mutate`` returned
        False: the change no longer applies). The write holds only while the row is still
        the one read (its ``updated_at``), else it is read and applied again: a compare and
        set, so no writer's change is lost and a terminal status is written once."""
        for _ in range(attempts):
            with self.writing.hold(request_id):
                current = self.read(request_id)
                if current is None or current.job_id != job_id or current.status != PROCESSING:
                    return None
                read_at = current.updated_at
                if mutate(current) is False:
                    return None
                now = datetime.now(UTC)
                if read_at is not None and now <= read_at:  # a clock step back: still a new version
                    now = read_at + timedelta(microseconds=1)
                current.updated_at = now
                only_if = f"target.job_id = {sql_str(job_id)} AND target.status = {sql_str(PROCESSING)} AND " + (
                    "target.updated_at IS NULL" if read_at is None else f"target.updated_at = {sql_timestamp(read_at)}"
                )
                if self.control.upsert(REQUESTS, [current.to_row()], only_if=only_if):
                    return current
        log.warning("search %s: attempt %s kept changing; a write of it gave up", request_id, job_id)
        return None

    def dispatched(self, request_id: str, job_id: str, task_id: str, owner: str, at: datetime) -> bool:
        """The attempt reached Ray (its ObjectRef exists, task ``task_id`` owned by ``owner``):
        it is no longer at risk of never being dispatched. Waiting in Ray's queue is not a
        failure; the deadline becomes the full request deadline, and it is supervised by
        its task (app/jobs/supervisor.py). False once the attempt was superseded or ended."""

        def mark(record: SearchRecord) -> None:
            record.task_id, record.owner = task_id, owner
            record.dispatched_at = record.dispatched_at or at
            if record.started_at is None:  # a job that started already set its own deadline
                record.deadline_at = datetime.now(UTC) + self.deadline

        return self.change(request_id, job_id, mark) is not None

    def started(self, record: SearchRecord, task_id: str | None = None, owner: str | None = None) -> bool:
        """The job began to run (its first write): the full deadline counts from now, and the
        time it waited in Ray's queue is kept. False once the attempt was superseded or ended:
        the job should not run."""
        now = datetime.now(UTC)
        queued: list[float] = []

        def mark(current: SearchRecord) -> None:
            current.started_at = now
            current.task_id = current.task_id or task_id
            current.owner = current.owner or owner
            current.dispatched_at = current.dispatched_at or record.dispatched_at
            since = current.dispatched_at or record.dispatched_at
            current.queued_s = None if since is None else max(0.0, (now - since).total_seconds())
            current.deadline_at = now + self.deadline
            queued[:] = [current.queued_s] if current.queued_s is not None else []

        written = self.change(record.request_id, record.job_id, mark)
        if written is not None:
            record.started_at, record.deadline_at = written.started_at, written.deadline_at
            for seconds in queued:
                search_queued(seconds)
        return written is not None

    def finish(
        self,
        request_id: str,
        job_id: str,
        status: str,
        videos: list[dict] | None = None,
        clip_errors: list[dict] | None = None,
        error: str | None = None,
        hits: int = 0,
        segments: list[dict] | None = None,
        still: Callable[[SearchRecord], bool] | None = None,
    ) -> bool:
        """End the attempt ``job_id`` with a terminal status: written only while it is still
        that attempt and still ``processing`` (and ``still`` holds for it, when given). False
        when another writer ended it first or a newer attempt replaced it; every writer of a
        terminal status (the job, the sweeps, the watchers) goes through here."""
        if status not in TERMINAL:
            raise ValueError(f"a job ends in a terminal status, not {status!r}")

        def end(current: SearchRecord) -> bool:
            if still is not None and not still(current):
                return False
            current.status = status
            current.videos = videos or []
            current.clip_errors = clip_errors or []
            current.error = error
            current.hits = hits
            current.segments = segments or []
            if current.started_at is not None:
                current.running_s = max(0.0, (datetime.now(UTC) - current.started_at).total_seconds())
            return True

        written = self.change(request_id, job_id, end)
        if written is not None:
            search_outcome(status)
            if written.running_s is not None:
                search_running(written.running_s)
        return written is not None

    def save_face_search(self, record: SearchRecord, attempts: int = 5) -> SearchRecord:
        """Store a Face Search's selfie and results without touching a video search that
        may be running on the same record: written only if the record's job and status are
        still what was read, else re-read and applied again."""
        fields = ("embedding", "model_pack", "selfie", "negatives", "photos", "video_matches", "matches_basis")
        now = datetime.now(UTC)
        for _ in range(attempts):
            current = self.read(record.request_id)
            if current is None:
                record.created_at = record.created_at or now
                record.updated_at = record.face_searched_at = now
                if self.control.upsert(REQUESTS, [record.to_row()], only_if="false", insert=True):
                    return record
                continue  # created meanwhile by another request: apply to that one
            for name in fields:
                setattr(current, name, getattr(record, name))
            current.updated_at = current.face_searched_at = now
            status = "target.status IS NULL" if current.status is None else f"target.status = {sql_str(current.status)}"
            only_if = f"target.job_id = {sql_str(current.job_id)} AND {status}"
            if self.control.upsert(REQUESTS, [current.to_row()], only_if=only_if):
                return current
        raise RuntimeError(f"request {record.request_id} kept changing; Face Search results not stored")

    def delete(self, request_id: str) -> int:
        """Remove the record (its selfie embeddings and results); returns rows removed."""
        where = f"request_id = {sql_str(str(uuid.UUID(request_id)))}"
        table = self.control.table(REQUESTS)
        before = table.count_rows(where)
        table.delete(where)
        return before

    def fail_overdue(self, record: SearchRecord) -> bool:
        """Fail one overdue search; False when it ended meanwhile (another sweep, its job) or
        its deadline moved since it was read. An attempt that never reached Ray says so."""
        error = OVERDUE_ERROR if record.task_id else NEVER_DISPATCHED_ERROR
        return self.finish(
            record.request_id, record.job_id, FAILED, error=error, still=lambda r: is_past(r.deadline_at)
        )

    def sweep_overdue(self) -> list[SearchRecord]:
        """Fail every search processing past its deadline; returns them."""
        rows = self.control.rows(
            REQUESTS, f"status = {sql_str(PROCESSING)} AND deadline_at < {sql_timestamp(datetime.now(UTC))}"
        )
        overdue = [SearchRecord.from_row(row) for row in rows]
        return [record for record in overdue if self.fail_overdue(record)]

    def sweep_lost_owners(self, live_owner: str) -> list[SearchRecord]:
        """Fail the attempts owned by a supervisor incarnation that is gone: their tasks died
        with it (Ray's tasks share their owner's fate). Returns them."""
        where = f"status = {sql_str(PROCESSING)} AND owner IS NOT NULL AND owner != {sql_str(live_owner)}"
        lost = [SearchRecord.from_row(row) for row in self.control.rows(REQUESTS, where)]
        return [
            r
            for r in lost
            if self.finish(
                r.request_id, r.job_id, FAILED, error=LOST_OWNER_ERROR, still=lambda c: c.owner != live_owner
            )
        ]


@dataclass
class ExtraClip:
    """A clip asked for after a search (reselect, another aspect ratio): its own status."""

    clip_id: str
    request_id: str
    org_id: int
    event_id: int
    search_job_id: str
    status: str
    item: dict  # what was asked (segment, times, aspect) and, once cut, the clip item
    error: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deadline_at: datetime | None = None

    @classmethod
    def from_row(cls, r: dict) -> ExtraClip:
        fields = {k: v for k, v in r.items() if k != "item_json"}
        return cls(**fields, item=json.loads(r["item_json"] or "{}"))


class ExtraClips:
    def __init__(self, control: ControlStore, deadline_s: float) -> None:
        self.control = control
        self.deadline = timedelta(seconds=deadline_s)

    def start(self, clip: ExtraClip) -> ExtraClip:
        now = datetime.now(UTC)
        clip.status, clip.created_at, clip.updated_at, clip.deadline_at = PROCESSING, now, now, now + self.deadline
        self.control.upsert(EXTRA_CLIPS, [_clip_row(clip)])
        return clip

    def finish(
        self, clip_id: str, status: str, video: dict | None = None, error: str | None = None, overdue: bool = False
    ) -> None:
        """Record a clip's outcome, only while it is still processing (``overdue``: the
        sweep's, kept for its callers)."""
        rows = self.control.rows(EXTRA_CLIPS, f"clip_id = {sql_str(clip_id)}", 1)
        if not rows:
            return
        clip = ExtraClip.from_row(rows[0])
        clip.status, clip.error, clip.updated_at = status, error, datetime.now(UTC)
        if video is not None:
            clip.item = {**clip.item, **video}
        # Terminal once: a sweep never overwrites a worker's outcome, nor a worker the sweep's.
        if not self.control.upsert(EXTRA_CLIPS, [_clip_row(clip)], only_if=f"target.status = {sql_str(PROCESSING)}"):
            log.info("extra clip %s had already ended; its %s was not recorded", clip_id, status)

    def sweep_overdue(self) -> int:
        """Fail every extra clip processing past its deadline; returns how many."""
        now = sql_timestamp(datetime.now(UTC))
        rows = self.control.rows(EXTRA_CLIPS, f"status = {sql_str(PROCESSING)} AND deadline_at < {now}")
        for row in rows:
            self.finish(row["clip_id"], FAILED, error=OVERDUE_CLIP_ERROR, overdue=True)
        return len(rows)

    def delete_of_request(self, request_id: str) -> int:
        where = f"request_id = {sql_str(request_id)}"
        table = self.control.table(EXTRA_CLIPS)
        before = table.count_rows(where)
        table.delete(where)
        return before

    def of_request(self, request_id: str) -> list[ExtraClip]:
        """The request's extra clips, oldest first; one processing past its deadline reads as failed."""
        rows = self.control.rows(EXTRA_CLIPS, f"request_id = {sql_str(request_id)}")
        clips = sorted((ExtraClip.from_row(r) for r in rows), key=lambda c: c.created_at or datetime.min)
        for clip in clips:
            if clip.status == PROCESSING and is_past(clip.deadline_at):
                self.finish(clip.clip_id, FAILED, error=OVERDUE_CLIP_ERROR, overdue=True)
                clip.status, clip.error = FAILED, OVERDUE_CLIP_ERROR
        return clips


OVERDUE_CLIP_ERROR = "The clip was not cut before its deadline; its worker was lost. Ask for it again."


def _clip_row(clip: ExtraClip) -> dict:
    row = {k: v for k, v in clip.__dict__.items() if k != "item"}
    row["item_json"] = json.dumps(clip.item)
    return row
