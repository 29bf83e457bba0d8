"""Durable search-request records, shared by every replica (LanceDB, see app/control.py).

Each (re)start of a search gets a new ``job_id``; a worker may only write results for
the job it was given, so a stale worker can never overwrite a newer search. A search
still ``processing`` past its deadline is failed, whoever notices first.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from app.contract import FAILED, PROCESSING, TERMINAL
from app.control import REQUESTS, ControlStore
from pipelines.store import sql_str

OVERDUE_ERROR = "The search did not finish before its deadline; its worker was lost. Start a new search."


@dataclass
class SearchRecord:
    request_id: str
    org_id: int
    event_id: int
    status: str
    job_id: str
    model_pack: str | None
    embedding: np.ndarray | None
    selfie: dict = field(default_factory=dict)
    hits: int = 0
    videos: list[dict] = field(default_factory=list)
    clip_errors: list[dict] = field(default_factory=list)
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
            "selfie_embedding": None if self.embedding is None else np.asarray(self.embedding, np.float32).tobytes(),
            "model_pack": self.model_pack,
            "selfie_json": json.dumps(self.selfie),
            "hits": self.hits,
            "videos_json": json.dumps(self.videos),
            "clip_errors_json": json.dumps(self.clip_errors),
            "error": self.error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "deadline_at": self.deadline_at,
        }

    @classmethod
    def from_row(cls, r: dict) -> SearchRecord:
        emb = r["selfie_embedding"]
        return cls(
            request_id=r["request_id"],
            org_id=r["org_id"],
            event_id=r["event_id"],
            status=r["status"],
            job_id=r["job_id"],
            model_pack=r["model_pack"],
            embedding=None if emb is None else np.frombuffer(emb, np.float32).copy(),
            selfie=json.loads(r["selfie_json"] or "{}"),
            hits=r["hits"] or 0,
            videos=json.loads(r["videos_json"] or "[]"),
            clip_errors=json.loads(r["clip_errors_json"] or "[]"),
            error=r["error"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            deadline_at=r["deadline_at"],
        )


def is_past(deadline: datetime | None) -> bool:
    return deadline is not None and deadline < datetime.now(UTC)


class RequestRecords:
    def __init__(self, control: ControlStore, deadline_s: float) -> None:
        self.control = control
        self.deadline = timedelta(seconds=deadline_s)

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
        """Write a fresh attempt (new job id, results cleared); returns the stored record."""
        now = datetime.now(UTC)
        record.job_id = uuid.uuid4().hex
        record.status = status
        record.videos, record.clip_errors, record.error, record.hits = [], [], None, 0
        record.created_at = record.created_at or now
        record.updated_at = now
        record.deadline_at = now + self.deadline
        self.control.upsert(REQUESTS, ["request_id"], [record.to_row()])
        return record

    def finish(
        self,
        request_id: str,
        job_id: str,
        status: str,
        videos: list[dict] | None = None,
        clip_errors: list[dict] | None = None,
        error: str | None = None,
        hits: int = 0,
    ) -> bool:
        """Record a job's outcome; False when the record has moved on to a newer job."""
        if status not in TERMINAL:
            raise ValueError(f"a job ends in a terminal status, not {status!r}")
        current = self.get(request_id)
        if current is None or current.job_id != job_id:
            return False
        current.status = status
        current.videos = videos or []
        current.clip_errors = clip_errors or []
        current.error = error
        current.hits = hits
        current.updated_at = datetime.now(UTC)
        self.control.upsert(REQUESTS, ["request_id"], [current.to_row()], only_if=f"target.job_id = {sql_str(job_id)}")
        return True

    def fail_overdue(self, record: SearchRecord) -> None:
        self.control.upsert(
            REQUESTS,
            ["request_id"],
            [{**record.to_row(), "status": FAILED, "error": OVERDUE_ERROR, "updated_at": datetime.now(UTC)}],
            only_if=f"target.job_id = {sql_str(record.job_id)} AND target.status = {sql_str(PROCESSING)}",
        )

    def sweep_overdue(self) -> int:
        """Fail every search processing past its deadline; returns how many."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
        rows = self.control.rows(REQUESTS, f"status = {sql_str(PROCESSING)} AND deadline_at < timestamp '{now}'")
        for row in rows:
            self.fail_overdue(SearchRecord.from_row(row))
        return len(rows)
