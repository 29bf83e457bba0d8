"""The control-plane store: orgs, events, API keys and search requests, in LanceDB.

LanceDB (local path or s3://) rather than a per-node file so that every Serve replica
on every node reads and writes the same records, and they survive restarts.
"""

from __future__ import annotations

import logging
import os
import warnings
from datetime import timedelta
from pathlib import Path

import lancedb
import pyarrow as pa

from pipelines.lance_tables import new_table_options

log = logging.getLogger(__name__)
warnings.filterwarnings("ignore", message="lancedb fork support is experimental", category=RuntimeWarning)

ORGS = "orgs"
EVENTS = "events"
API_KEYS = "api_keys"
REQUESTS = "search_requests"
EXTRA_CLIPS = "extra_clips"
EVENT_MEDIA = "event_media"
INDEX_JOBS = "index_jobs"
INDEX_LOCKS = "index_locks"
WEBHOOK_DELIVERIES = "webhook_deliveries"
STORAGE_LOCATIONS = "storage_locations"

TS = pa.timestamp("us", tz="UTC")

OWNER = (pa.field("org_id", pa.int64()), pa.field("event_id", pa.int64()))


def key(name: str, type_: pa.DataType) -> pa.Field:
    """A primary-key column: LanceDB requires it non-nullable."""
    return pa.field(name, type_, nullable=False)


# What every job record ends with: its error, when it started, changed, and must be done by.
LIFECYCLE = (
    pa.field("error", pa.string()),
    pa.field("created_at", TS),
    pa.field("updated_at", TS),
    pa.field("deadline_at", TS),
)

SCHEMAS: dict[str, pa.Schema] = {
    ORGS: pa.schema(
        [
            key("org_id", pa.int64()),
            pa.field("name", pa.string()),
            pa.field("created_at", TS),
            pa.field("webhook_secret", pa.string()),  # signs the org's webhooks; never returned by the API
        ]
    ),
    EVENTS: pa.schema(
        [
            key("org_id", pa.int64()),
            key("event_id", pa.int64()),
            pa.field("name", pa.string()),
            pa.field("video_search", pa.bool_()),
            pa.field("video_selfie_search", pa.bool_()),
            pa.field("face_search", pa.bool_()),
            pa.field("bib_search", pa.bool_()),
            pa.field("match_threshold", pa.float64()),  # null: the model pack's default
            pa.field("segments_json", pa.string()),  # overrides of SegmentSettings, JSON
            pa.field("source_uri", pa.string()),  # where the event's media live (informational)
            pa.field("output_uri", pa.string()),  # null: <api.output_root>
            pa.field("created_at", TS),
            pa.field("retention_days", pa.int64()),  # null: <api.retention_days>
            pa.field("storage_location", pa.string()),  # the org's location for sources and clips; null: ours
        ]
    ),
    API_KEYS: pa.schema(
        [
            key("key_id", pa.string()),
            pa.field("org_id", pa.int64()),
            pa.field("event_id", pa.int64()),  # null: every event of the org
            pa.field("key_hash", pa.string()),
            pa.field("name", pa.string()),
            pa.field("active", pa.bool_()),
            pa.field("created_at", TS),
        ]
    ),
    REQUESTS: pa.schema(
        [
            key("request_id", pa.string()),
            *OWNER,
            pa.field("status", pa.string()),
            pa.field("job_id", pa.string()),  # the attempt allowed to write results
            pa.field("selfie_embedding", pa.binary()),  # float32 bytes of (selfies x dim); null when none
            pa.field("embedding_dim", pa.int64()),  # dim of the vectors in selfie_embedding / negatives
            pa.field("negative_embedding", pa.binary()),  # "not me" references, float32 (n x dim)
            pa.field("model_pack", pa.string()),
            pa.field("selfie_json", pa.string()),  # bbox, score, faces found
            pa.field("hits", pa.int64()),
            pa.field("videos_json", pa.string()),
            pa.field("clip_errors_json", pa.string()),
            pa.field("segments_json", pa.string()),  # ranked segments of the last run
            pa.field("bib", pa.string()),  # the race number searched for, when any
            pa.field("rules_json", pa.string()),  # threshold and segment rules of the last run
            pa.field("photos_json", pa.string()),  # Face Search: ranked photos; null before one ran
            pa.field("video_matches_json", pa.string()),  # Face Search: the video faces it matched
            pa.field("matches_basis", pa.string()),  # what those matches were computed under
            pa.field("face_searched_at", TS),
            pa.field("webhook_url", pa.string()),  # told of the search's final result, when set
            # The attempt in Ray (app/jobs/supervisor.py): its task, the supervisor incarnation that
            # owns it, when it was handed to Ray and began to run, and its time queued and running.
            pa.field("task_id", pa.string()),
            pa.field("owner", pa.string()),
            pa.field("dispatched_at", TS),
            pa.field("started_at", TS),
            pa.field("queued_s", pa.float64()),
            pa.field("running_s", pa.float64()),
            *LIFECYCLE,
        ]
    ),
    EXTRA_CLIPS: pa.schema(
        [
            key("clip_id", pa.string()),
            pa.field("request_id", pa.string()),
            *OWNER,
            pa.field("search_job_id", pa.string()),  # the search run whose segments it cuts
            pa.field("status", pa.string()),  # processing | completed | clip_failed | failed
            pa.field("item_json", pa.string()),  # what was asked, and the clip once cut
            *LIFECYCLE,
        ]
    ),
    # The sources an event's index jobs read: uploaded over HTTP or registered by URI.
    EVENT_MEDIA: pa.schema(
        [
            key("org_id", pa.int64()),
            key("event_id", pa.int64()),
            key("media_key", pa.string()),
            pa.field("uri", pa.string()),
            pa.field("media_type", pa.string()),  # video | photo (sniffed from the content)
            pa.field("origin", pa.string()),  # upload | uri
            pa.field("size_bytes", pa.int64()),
            pa.field("duration_s", pa.float64()),
            pa.field("fps", pa.float64()),
            pa.field("width", pa.int64()),
            pa.field("height", pa.int64()),
            pa.field("codec", pa.string()),
            pa.field("created_at", TS),
        ]
    ),
    INDEX_JOBS: pa.schema(
        [
            key("job_id", pa.string()),
            *OWNER,
            pa.field("status", pa.string()),  # queued | processing | completed | failed | cancelled
            pa.field("media_keys_json", pa.string()),  # the media the job indexes
            pa.field("webhook_url", pa.string()),
            pa.field("current_stage", pa.string()),  # probe | decode | detect | embed | write
            pa.field("frames_planned", pa.int64()),
            pa.field("frames_done", pa.int64()),  # sampled frames of finished chunks
            pa.field("media_done", pa.int64()),
            pa.field("faces", pa.int64()),
            pa.field("media_errors_json", pa.string()),  # {media_key: error}
            pa.field("indexed_json", pa.string()),  # media keys fully indexed by this job
            pa.field("cancel_requested", pa.bool_()),
            pa.field("task_id", pa.string()),  # the driver task in Ray
            pa.field("owner", pa.string()),  # the supervisor incarnation that owns it (app/jobs/supervisor.py)
            *LIFECYCLE,
        ]
    ),
    # One running index job per event: held by a job id, taken only when free (or stale).
    INDEX_LOCKS: pa.schema([key("org_id", pa.int64()), key("event_id", pa.int64()), pa.field("job_id", pa.string())]),
    # Bring-your-own storage (app/store/storage_locations.py): secrets stay in this table.
    STORAGE_LOCATIONS: pa.schema(
        [
            key("org_id", pa.int64()),
            key("location_id", pa.string()),
            pa.field("name", pa.string()),
            pa.field("endpoint_url", pa.string()),
            pa.field("bucket", pa.string()),
            pa.field("prefix", pa.string()),
            pa.field("region", pa.string()),
            pa.field("access_key_id", pa.string()),
            pa.field("secret_access_key", pa.string()),
            pa.field("profile", pa.string()),
            pa.field("public_base_url", pa.string()),
            pa.field("url_ttl_s", pa.int64()),
            pa.field("created_at", TS),
        ]
    ),
    WEBHOOK_DELIVERIES: pa.schema(
        [
            key("delivery_id", pa.string()),
            *OWNER,
            pa.field("event", pa.string()),  # index_job.completed, search.completed, ...
            pa.field("subject_id", pa.string()),  # the job_id or request_id
            pa.field("url", pa.string()),
            pa.field("status", pa.string()),  # pending | delivered | failed
            pa.field("attempts_json", pa.string()),  # [{at, status_code, error, duration_ms}]
            pa.field("created_at", TS),
            pa.field("updated_at", TS),
        ]
    ),
}

# Each table's primary key. Declared to LanceDB so that concurrent upserts of one new key
# (twenty POSTs of one request_id at once) conflict and retry instead of each appending a
# row: without it merge_insert's conflict check only sees rows that already existed.
PRIMARY_KEYS: dict[str, list[str]] = {
    ORGS: ["org_id"],
    EVENTS: ["org_id", "event_id"],
    API_KEYS: ["key_id"],
    REQUESTS: ["request_id"],
    EXTRA_CLIPS: ["clip_id"],
    EVENT_MEDIA: ["org_id", "event_id", "media_key"],
    INDEX_JOBS: ["job_id"],
    INDEX_LOCKS: ["org_id", "event_id"],
    WEBHOOK_DELIVERIES: ["delivery_id"],
    STORAGE_LOCATIONS: ["org_id", "location_id"],
}

# The column each table is read by: indexed once the table has rows.
LOOKUP_COLUMNS = {
    REQUESTS: "request_id",
    API_KEYS: "key_hash",
    EVENTS: "event_id",
    EXTRA_CLIPS: "request_id",
    EVENT_MEDIA: "event_id",
    INDEX_JOBS: "job_id",
    WEBHOOK_DELIVERIES: "subject_id",
}


def local_root(uri: str) -> Path | None:
    """The directory of a store on the local filesystem; None for object stores."""
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    return None if "://" in uri else Path(uri)


class ControlStore:
    def __init__(self, uri: str, storage_options: dict[str, str] | None = None) -> None:
        self.uri = uri
        self.local_root = local_root(uri)
        # Always read the latest version: another replica may have just written.
        self.db = lancedb.connect(uri, storage_options=storage_options or None, read_consistency_interval=timedelta(0))
        existing = set(self.db.list_tables().tables)
        self.tables = {}
        for name, schema in SCHEMAS.items():
            if name in existing:
                self.tables[name] = self.db.open_table(name)
                self._add_missing_columns(name)
            else:
                try:
                    self.tables[name] = self.db.create_table(name, schema=schema, storage_options=new_table_options())
                except ValueError:  # another process created it first
                    self.tables[name] = self.db.open_table(name)
            self._declare_primary_key(name)

    def _declare_primary_key(self, name: str) -> None:
        """Tables created before keys were declared (or just now) get theirs."""
        table = self.tables[name]
        columns = PRIMARY_KEYS[name]
        if all(table.schema.field(c).metadata for c in columns):
            return
        try:
            nullable = [{"path": c, "nullable": False} for c in columns if table.schema.field(c).nullable]
            if nullable:
                table.alter_columns(*nullable)
            table.set_unenforced_primary_key(columns)
        except Exception:  # another replica declared it first
            log.debug("declaring the primary key of %s failed", name, exc_info=True)
            self.tables[name] = self.db.open_table(name)

    def _add_missing_columns(self, name: str) -> None:
        """Tables written by an older release gain new columns as nulls."""
        table = self.tables[name]
        missing = [f for f in SCHEMAS[name] if f.name not in table.schema.names]
        if missing:
            try:
                table.add_columns(missing)
            except Exception:  # another replica added them first
                self.tables[name] = self.db.open_table(name)

    def maintain(self, keep_versions_s: float = 3600.0) -> None:
        """Index lookup columns, compact small fragments, drop versions older than an hour.

        Every status update is a new table version; without this, point reads slow down
        as fragments and versions pile up.
        """
        from lancedb.index import BTree

        for name, column in LOOKUP_COLUMNS.items():
            table = self.tables[name]
            if table.count_rows() and not any(ix.columns == [column] for ix in table.list_indices()):
                table.create_index(column, config=BTree())
            table.optimize(cleanup_older_than=timedelta(seconds=keep_versions_s))

    def table(self, name: str):
        return self.tables[name]

    def change_stamp(self, names: tuple[str, ...], now_ns: int, settle_ns: int) -> tuple[int, ...] | None:
        """A synchronous, no-I/O-thread proof that the named tables did not change: each one's
        ``_versions`` directory (every commit adds a manifest there) as (inode, mtime) pairs.

        None where it proves nothing: a store that is not a local path, a missing table, or a
        directory written less than ``settle_ns`` before ``now_ns``. File times advance in ticks
        (a jiffy on Linux; a network filesystem's clock may be skewed), so two commits within
        one tick can share a time; once the time is older than the settle window, any later
        commit must show a later one."""
        if self.local_root is None:
            return None
        stamp: list[int] = []
        for name in names:
            try:
                st = os.stat(self.local_root / f"{name}.lance" / "_versions")
            except OSError:
                return None
            if now_ns - st.st_mtime_ns < settle_ns:
                return None
            stamp += (st.st_ino, st.st_mtime_ns)
        return tuple(stamp)

    def rows(self, name: str, where: str, limit: int | None = None) -> list[dict]:
        return self.tables[name].search().where(where).limit(limit).to_arrow().to_pylist()

    def upsert(self, name: str, rows: list[dict], only_if: str | None = None, insert: bool | None = None) -> int:
        """Insert or update ``rows`` by the table's primary key; with ``only_if`` existing
        rows change only where it holds (and new ones are inserted only when ``insert``).
        Returns rows written."""
        table = pa.Table.from_pylist(rows, schema=SCHEMAS[name])
        builder = self.tables[name].merge_insert(PRIMARY_KEYS[name]).when_matched_update_all(where=only_if)
        if insert if insert is not None else only_if is None:
            builder = builder.when_not_matched_insert_all()
        result = builder.execute(table)
        return int(getattr(result, "num_updated_rows", 0) or 0) + int(getattr(result, "num_inserted_rows", 0) or 0)
