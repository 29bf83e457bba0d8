"""What is kept, and for how long: event retention, orphaned clip files, event purge.

- Retention: a search (record, selfie embeddings, extra clips, clip files) is deleted once
  its last change is older than its event's ``retention_days`` (else ``api.retention_days``),
  exactly as a consent DELETE would (``app.features.search.requests.remove_request``).
- Orphans: clip files under ``{org}/{event}/clips/{request_id}/`` that no record points at
  (a worker lost between writing a clip and recording it, a crash mid-deletion) are removed
  once older than ``api.orphan_grace_s``.
- Purge: everything stored for one event (``facereel event purge``).

The decisions (``expired_requests``, ``orphan_keys``) are pure; the sweeps around them read
the control tables and storage and are run periodically by ``app.features.upkeep.sweep_forever``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath

from app.core.contract import PROCESSING
from app.features.stores import Stores
from app.store.control import EXTRA_CLIPS, REQUESTS
from app.store.events import Event
from pipelines.lance_tables import event_filter, sql_str
from pipelines.storage import OutputStorage

log = logging.getLogger(__name__)

# What the sweeps read of a record: never its embeddings.
RECORD_COLUMNS = ["request_id", "status", "created_at", "updated_at", "face_searched_at"]
CLIP_COLUMNS = ["request_id", "status", "item_json", "created_at", "updated_at"]


def _utc(when: datetime | None) -> datetime | None:
    """Stored times are UTC; a naive one (older writers, tests) is read as UTC."""
    if when is None:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def last_change(*times: datetime | None) -> datetime | None:
    """The latest of the given times (None when none is known)."""
    known = [t for t in map(_utc, times) if t is not None]
    return max(known, default=None)


# ---- retention -------------------------------------------------------------------------
def expired_requests(
    rows: Iterable[Mapping],
    retention_days: int | None,
    now: datetime,
    activity: Mapping[str, datetime] | None = None,
) -> list[str]:
    """The request_ids whose search is past retention: its last change (created, updated,
    Face Search run, or the newest of its extra clips in ``activity``) is more than
    ``retention_days`` before ``now``, and it is not processing. A record whose age is
    unknown is kept; ``retention_days`` None keeps everything."""
    if retention_days is None:
        return []
    cutoff = _utc(now) - timedelta(days=retention_days)
    activity = activity or {}
    expired = []
    for row in rows:
        if row.get("status") == PROCESSING:
            continue  # its worker may still write; the overdue sweep ends it first
        changed = last_change(
            row.get("created_at"), row.get("updated_at"), row.get("face_searched_at"), activity.get(row["request_id"])
        )
        if changed is not None and changed < cutoff:
            expired.append(row["request_id"])
    return expired


def _event_rows(services: Stores, table: str, event: Event, columns: list[str], where: str = "") -> list[dict]:
    query = f"{event_filter(event.org_id, event.event_id)}{f' AND ({where})' if where else ''}"
    return services.control.table(table).search().where(query).select(columns).limit(None).to_arrow().to_pylist()


def _clip_activity(clip_rows: Iterable[Mapping]) -> dict[str, datetime]:
    """request_id -> the last change of its newest extra clip."""
    out: dict[str, datetime] = {}
    for row in clip_rows:
        changed = last_change(row.get("created_at"), row.get("updated_at"))
        if changed is not None:
            out[row["request_id"]] = max(changed, out.get(row["request_id"], changed))
    return out


def sweep_event_retention(services: Stores, event: Event, now: datetime | None = None) -> int:
    """Delete the event's searches past retention (as a consent DELETE would); returns how many."""
    from app.features.search.requests import RequestBusy, remove_request

    days = event.retention(services.settings)
    if days is None:
        return 0
    now = now or datetime.now(UTC)
    rows = _event_rows(services, REQUESTS, event, RECORD_COLUMNS, f"status IS NULL OR status != {sql_str(PROCESSING)}")
    activity = _clip_activity(_event_rows(services, EXTRA_CLIPS, event, CLIP_COLUMNS))
    removed = 0
    for request_id in expired_requests(rows, days, now, activity):
        try:
            record = services.records.get(request_id)
            if record is None or (record.org_id, record.event_id) != (event.org_id, event.event_id):
                continue  # deleted meanwhile
            # Read again: a new run may have started or ended since the listing.
            if not expired_requests([record.to_row()], days, now, activity):
                continue
            remove_request(services, event, record)
            removed += 1
        except RequestBusy:
            log.info("search %s is past retention but still working; deleted on a later sweep", request_id)
        except Exception:
            log.exception("deleting search %s past retention failed", request_id)
    if removed:
        log.info("event %d/%d: deleted %d searches older than %d days", event.org_id, event.event_id, removed, days)
    return removed


def sweep_retention(services: Stores, now: datetime | None = None) -> int:
    """Apply retention to every event; returns searches deleted."""
    removed = 0
    for event in services.events.all():
        try:
            removed += sweep_event_retention(services, event, now)
        except Exception:
            log.exception("retention sweep of event %d/%d failed", event.org_id, event.event_id)
    return removed


# ---- orphaned clip files ---------------------------------------------------------------
@dataclass(frozen=True)
class ClipRefs:
    """What one request's clip folder must keep."""

    busy: bool  # the search or one of its clips is processing: its folder is not touched
    uuids: frozenset[str] = frozenset()  # clip ids that the record or its extra clips list


def item_uuids(items: Iterable[Mapping]) -> set[str]:
    """Clip ids named by clip items: their ``uuid`` and the file names of their URLs."""
    out = set()
    for item in items:
        if item.get("uuid"):
            out.add(str(item["uuid"]))
        for name in ("video_url", "poster_url"):
            if item.get(name):
                out.add(PurePosixPath(str(item[name]).split("?", 1)[0]).name.split(".", 1)[0])
    return out


def request_refs(record: Mapping | None, clips: Iterable[Mapping]) -> ClipRefs | None:
    """The folder rules of a request from its record row (``status``, ``videos_json``) and its
    extra clip rows (``status``, ``item_json``); None when there is no record."""
    if record is None:
        return None
    clips = list(clips)
    if record.get("status") == PROCESSING or any(c.get("status") == PROCESSING for c in clips):
        return ClipRefs(busy=True)
    items = list(json.loads(record.get("videos_json") or "[]"))
    items += [json.loads(c.get("item_json") or "{}") for c in clips]
    return ClipRefs(busy=False, uuids=frozenset(item_uuids(items)))


def orphan_keys(
    files: Mapping[str, float],
    clips_prefix: str,
    refs: Mapping[str, ClipRefs | None],
    now: float,
    grace_s: float,
) -> list[str]:
    """Which clip files to remove. ``files``: key -> modification time (POSIX seconds) under
    ``clips_prefix`` (``{org}/{event}/clips``); ``refs``: request_id -> its ``ClipRefs`` (None
    or absent: no record). A file older than ``grace_s`` goes when its request has no record,
    or when the record is not busy and names no clip with the file's uuid. Anything not laid
    out as ``{request_id}/{file}`` is left alone."""
    remove = []
    for key, mtime in files.items():
        if not key.startswith(f"{clips_prefix}/"):
            continue
        parts = key[len(clips_prefix) + 1 :].split("/")
        if len(parts) != 2 or not all(parts):
            continue
        request_id, name = parts
        if now - mtime < grace_s:
            continue  # may be about to be recorded
        ref = refs.get(request_id)
        # No record at all, or a settled record that names no clip of this file's uuid.
        if ref is None or (not ref.busy and name.split(".", 1)[0] not in ref.uuids):
            remove.append(key)
    return sorted(remove)


def sweep_event_orphans(services: Stores, event: Event, now: float | None = None) -> list[str]:
    """Remove the event's orphaned clip files; returns their keys."""
    settings = services.settings
    storage = OutputStorage(event.output_location(settings), event.storage_options(settings))
    prefix = f"{event.org_id}/{event.event_id}/clips"
    # Files are listed before records are read: a clip recorded after the listing is then
    # seen as referenced, never removed as an orphan.
    files = storage.list_modified(prefix)
    if not files:
        return []
    now = datetime.now(UTC).timestamp() if now is None else now
    request_ids = sorted({k[len(prefix) + 1 :].split("/", 1)[0] for k in files})
    records: dict[str, dict] = {}
    clips: dict[str, list[dict]] = {}
    for start in range(0, len(request_ids), 500):
        ids = f"request_id IN ({', '.join(sql_str(r) for r in request_ids[start : start + 500])})"
        for row in _event_rows(services, REQUESTS, event, ["request_id", "status", "videos_json"], ids):
            records[row["request_id"]] = row
        for row in _event_rows(services, EXTRA_CLIPS, event, CLIP_COLUMNS, ids):
            clips.setdefault(row["request_id"], []).append(row)
    refs = {rid: request_refs(records.get(rid), clips.get(rid, [])) for rid in request_ids}
    keys = orphan_keys(files, prefix, refs, now, settings.api.orphan_grace_s)
    storage.remove(keys)
    for request_id in {k[len(prefix) + 1 :].split("/", 1)[0] for k in keys}:
        if refs.get(request_id) is None:  # a recorded request's folder stays for its next clips
            storage.remove_empty_folder(f"{prefix}/{request_id}")
    if keys:
        log.info("event %d/%d: removed %d orphaned clip files", event.org_id, event.event_id, len(keys))
    return keys


def sweep_orphans(services: Stores, now: float | None = None) -> int:
    """Remove orphaned clip files of every event; returns files removed."""
    removed = 0
    for event in services.events.all():
        try:
            removed += len(sweep_event_orphans(services, event, now))
        except Exception:
            log.exception("orphan sweep of event %d/%d failed", event.org_id, event.event_id)
    return removed


# ---- purge -----------------------------------------------------------------------------
class EventBusy(ValueError):
    """A search of the event is still working: its files would land after the purge."""


@dataclass
class PurgeReport:
    org_id: int
    event_id: int
    records: int = 0
    selfie_embeddings: int = 0
    extra_clips: int = 0
    files: dict[str, int] = field(default_factory=dict)  # top folder (clips, thumbnails) -> files
    index_rows: dict[str, int] = field(default_factory=dict)  # faces, tracks, bibs, media -> rows
    sources: int = 0  # registered sources (event_media rows)
    uploads: int = 0  # uploaded source files removed
    index_jobs: int = 0  # index job and lock rows
    event_deleted: bool = False

    def lines(self) -> list[str]:
        """The summary, one line per kind of data."""
        files = ", ".join(f"{n} {k}" for k, n in sorted(self.files.items())) or "none"
        rows = ", ".join(f"{n} {k}" for k, n in self.index_rows.items())
        return [
            f"event {self.org_id}/{self.event_id} purged:",
            f"  search records: {self.records} ({self.selfie_embeddings} selfie embeddings), "
            f"extra clips: {self.extra_clips}",
            f"  files: {sum(self.files.values())} ({files})",
            f"  face index rows: {rows}",
            f"  registered sources: {self.sources} ({self.uploads} uploaded files), index job rows: {self.index_jobs}",
            "  event configuration: " + ("deleted" if self.event_deleted else "kept"),
        ]


def _embedding_rows(row: Mapping) -> int:
    data, dim = row.get("selfie_embedding"), row.get("embedding_dim")
    if not data:
        return 0
    return len(data) // (4 * dim) if dim else 1


def purge_event(
    services: Stores, org_id: int, event_id: int, delete_event: bool = False, face_store=None
) -> PurgeReport:
    """Remove everything stored for one event: its search records and extra clips, every
    file under ``{org}/{event}/`` in its output storage, and its rows in the face index; the
    event's configuration too with ``delete_event``. Raises ``EventBusy`` while one of its
    searches or clips is still processing (after failing those past their deadline)."""
    settings = services.settings
    event = services.events.get(org_id, event_id)
    where = event_filter(org_id, event_id)
    services.records.sweep_overdue()
    services.extra_clips.sweep_overdue()
    processing = f"{where} AND status = {sql_str(PROCESSING)}"
    busy = services.control.table(REQUESTS).count_rows(processing)
    busy += services.control.table(EXTRA_CLIPS).count_rows(processing)
    busy += len(services.index_jobs.of_event(org_id, event_id, ("queued", "processing")))
    if busy:
        raise EventBusy(
            f"event {org_id}/{event_id} has {busy} searches, clips or index jobs still processing; "
            "purge once they have finished"
        )
    report = PurgeReport(org_id, event_id)

    root = event.output_location(settings) if event is not None else settings.output_root
    storage = OutputStorage(
        root, event.storage_options(settings) if event is not None else settings.store.storage_options
    )
    for key in storage.remove_folder(f"{int(org_id)}/{int(event_id)}"):
        top = key.split("/")[2] if key.count("/") >= 3 else "other"
        report.files[top] = report.files.get(top, 0) + 1

    store = face_store if face_store is not None else services.face_store()
    report.index_rows = store.delete_event(org_id, event_id)
    if event is not None:  # uploads live in the event's source location, not its outputs
        from app.features.sources import remove_upload

        for row in services.sources.rows(org_id, event_id):
            if row.get("origin") == "upload":
                report.uploads += len(remove_upload(settings, event, row["uri"]))
    report.sources = services.sources.delete_of_event(org_id, event_id)
    report.index_jobs = services.index_jobs.delete_of_event(org_id, event_id)

    requests = services.control.table(REQUESTS)
    rows = requests.search().where(where).select(["selfie_embedding", "embedding_dim"]).limit(None).to_arrow()
    report.records = rows.num_rows
    report.selfie_embeddings = sum(_embedding_rows(r) for r in rows.to_pylist())
    if report.records:
        requests.delete(where)
    clips = services.control.table(EXTRA_CLIPS)
    report.extra_clips = clips.count_rows(where)
    if report.extra_clips:
        clips.delete(where)

    if delete_event and event is not None:
        report.event_deleted = bool(services.events.delete_event(org_id, event_id))
    log.info("purged event %d/%d: %s", org_id, event_id, "; ".join(report.lines()[1:]))
    return report
