"""LanceDB store: connection, every table schema, writes, search, index upkeep.

One ``faces`` table (one row per detected face, all orgs and events), one ``tracks``
table (one row per face track, pipelines/tracks.py) and one ``media`` table (one row per
indexed source). The faces table remembers which model pack filled
it; a store is bound to one pack, so mixing embeddings is impossible.
"""

from __future__ import annotations

import logging
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import BTree, IvfPq

from pipelines.event_faces import ROW_ID, EventFaces, EventFacesCache, best_matches, estimated_bytes, event_faces
from pipelines.lance_tables import event_filter, new_table_options, sql_str
from pipelines.models.base import PackInfo
from pipelines.tracks import NO_TRACK

log = logging.getLogger(__name__)

# lancedb warns on every fork once imported; Ray and ffmpeg only fork to exec at once.
warnings.filterwarnings("ignore", message="lancedb fork support is experimental", category=RuntimeWarning)

FACES = "faces"
MEDIA = "media"
TRACKS = "tracks"
BIBS = "bibs"
PACK_META_KEY = b"facereel.model_pack"
VERSION_META_KEY = b"facereel.model_version"

MEDIA_INDEXED = "indexed"
MEDIA_FAILED = "failed"


def faces_schema(pack: PackInfo) -> pa.Schema:
    return pa.schema(
        [
            pa.field("face_id", pa.string()),
            pa.field("org_id", pa.int64()),
            pa.field("event_id", pa.int64()),
            pa.field("media_type", pa.string()),  # video | photo
            pa.field("media_key", pa.string()),
            pa.field("timestamp_s", pa.float64()),  # presentation time; 0 for photos
            pa.field("frame_index", pa.int64()),
            pa.field("bbox", pa.list_(pa.float32(), 4)),  # x1, y1, x2, y2 in source pixels
            pa.field("landmarks", pa.list_(pa.float32(), 10)),
            pa.field("det_score", pa.float32()),
            pa.field("face_px", pa.float32()),  # shorter side of the bbox
            pa.field("track_id", pa.int64()),  # per media key (pipelines/tracks.py); NO_TRACK for photos
            pa.field("quality", pa.float32()),  # size x sharpness x detector score, in [0, 1]
            pa.field("vector", pa.list_(pa.float32(), pack.dim)),
            pa.field("model_pack", pa.string()),
            pa.field("model_version", pa.string()),
        ],
        metadata={PACK_META_KEY: pack.name.encode(), VERSION_META_KEY: pack.version.encode()},
    )


def tracks_schema(pack: PackInfo) -> pa.Schema:
    """One row per face track: a person's consecutive faces in one shot of one video."""
    return pa.schema(
        [
            pa.field("org_id", pa.int64()),
            pa.field("event_id", pa.int64()),
            pa.field("media_key", pa.string()),
            pa.field("track_id", pa.int64()),
            pa.field("start_s", pa.float64()),
            pa.field("end_s", pa.float64()),
            pa.field("faces", pa.int64()),
            pa.field("best_face_id", pa.string()),
            pa.field("best_quality", pa.float32()),
            pa.field("vector", pa.list_(pa.float32(), pack.dim)),  # quality-weighted mean, unit norm
        ]
    )


BIBS_SCHEMA = pa.schema(
    [
        pa.field("org_id", pa.int64()),
        pa.field("event_id", pa.int64()),
        pa.field("media_key", pa.string()),
        pa.field("media_type", pa.string()),
        pa.field("timestamp_s", pa.float64()),  # presentation time; 0 for photos
        pa.field("frame_index", pa.int64()),
        pa.field("number", pa.string()),  # digits as printed (leading zeros kept)
        pa.field("confidence", pa.float32()),  # the recogniser's, for the whole number
        pa.field("bbox", pa.list_(pa.float32(), 4)),  # the number's box, source pixels
        pa.field("face_id", pa.string()),  # the face whose torso holds it; null when none
        pa.field("track_id", pa.int64()),  # that face's track (videos); NO_TRACK otherwise
    ]
)

# Columns added to the faces table after it was first released: (name, SQL default).
FACE_COLUMNS_ADDED = {"track_id": f"CAST({NO_TRACK} AS BIGINT)", "quality": "CAST(0.5 AS FLOAT)"}
FACE_COLUMNS = ["face_id", "media_key", "media_type", "timestamp_s", "frame_index", "bbox", "track_id", "quality"]

MEDIA_SCHEMA = pa.schema(
    [
        pa.field("org_id", pa.int64()),
        pa.field("event_id", pa.int64()),
        pa.field("media_key", pa.string()),
        pa.field("uri", pa.string()),
        pa.field("media_type", pa.string()),
        pa.field("status", pa.string()),  # indexed | failed
        pa.field("start_s", pa.float64()),  # presentation time of the first frame
        pa.field("duration_s", pa.float64()),
        pa.field("fps", pa.float64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("codec", pa.string()),
        pa.field("size_bytes", pa.int64()),
        pa.field("face_count", pa.int64()),
        pa.field("error", pa.string()),
        pa.field("indexed_at", pa.timestamp("us", tz="UTC")),
        pa.field("model_pack", pa.string()),
        pa.field("media_id", pa.string()),  # random: photo URLs are public by unguessable name
        pa.field("taken_at", pa.timestamp("us", tz="UTC")),  # photos: EXIF capture time
    ]
)
MEDIA_COLUMNS_ADDED = ("media_id", "taken_at")


class PackMismatch(RuntimeError):
    pass


@dataclass(frozen=True)
class FaceHit:
    face_id: str
    media_key: str
    media_type: str
    timestamp_s: float
    frame_index: int
    bbox: tuple[float, float, float, float]
    similarity: float
    track_id: int = NO_TRACK
    quality: float = 0.0


def _hit(row: dict, similarity: float) -> FaceHit:
    return FaceHit(
        row["face_id"],
        row["media_key"],
        row["media_type"],
        row["timestamp_s"],
        row["frame_index"],
        tuple(row["bbox"]),
        similarity,
        row["track_id"] if row["track_id"] is not None else NO_TRACK,
        row["quality"] or 0.0,
    )


class FaceStore:
    def __init__(
        self,
        uri: str,
        pack: PackInfo,
        storage_options: dict[str, str] | None = None,
        ann_min_rows: int = 300_000,
        ann_nprobes: int = 20,
        ann_refine_factor: int = 10,
        read_consistency_s: float = 0.0,
        search_cache_mb: float = 0.0,
    ) -> None:
        self.uri = uri
        self.pack = pack
        # Without a consistency interval a handle never sees other writers' commits;
        # 0 checks the latest version on every read (cheap on local disk).
        self.db = lancedb.connect(
            uri,
            storage_options=storage_options or None,
            read_consistency_interval=timedelta(seconds=read_consistency_s),
        )
        self.ann_min_rows = ann_min_rows
        self.ann_nprobes = ann_nprobes
        self.ann_refine_factor = ann_refine_factor
        # Events' faces in memory for a long-lived searcher (pipelines.event_faces); off for
        # one-shot users, who would read every column once instead of only the vectors.
        self.event_cache = EventFacesCache(int(search_cache_mb * 2**20)) if search_cache_mb > 0 else None
        self.faces = self._open_or_create(FACES, faces_schema(pack))
        self.media = self._open_or_create(MEDIA, MEDIA_SCHEMA)
        self.tracks = self._open_or_create(TRACKS, tracks_schema(pack))
        self.bibs = self._open_or_create(BIBS, BIBS_SCHEMA)
        self._check_pack()
        self._add_new_face_columns()
        self._add_new_media_columns()

    @classmethod
    def from_settings(cls, settings, pack: PackInfo, search_cache: bool = False) -> FaceStore:
        """``settings``: pipelines.config.Settings. ``search_cache``: keep searched events'
        faces in memory (``store.search_cache_mb``), for a process that searches again."""
        s = settings.store
        return cls(
            settings.store_uri,
            pack,
            s.storage_options,
            s.ann_min_rows,
            s.ann_nprobes,
            s.ann_refine_factor,
            s.read_consistency_s,
            s.search_cache_mb if search_cache else 0.0,
        )

    def _open_or_create(self, name: str, schema: pa.Schema):
        if name in self.db.list_tables().tables:
            return self.db.open_table(name)
        try:
            return self.db.create_table(name, schema=schema, storage_options=new_table_options())
        except ValueError:  # created concurrently by another process
            return self.db.open_table(name)

    def _check_pack(self) -> None:
        meta = self.faces.schema.metadata or {}
        stored = meta.get(PACK_META_KEY, b"").decode()
        version = meta.get(VERSION_META_KEY, b"").decode()
        if (stored, version) != (self.pack.name, self.pack.version):
            raise PackMismatch(
                f"the faces table at {self.uri} holds {stored or 'unknown'} ({version or '?'}) embeddings, "
                f"but the configured model pack is {self.pack.name} ({self.pack.version}); "
                "use the same pack or another store.uri"
            )

    def _add_new_face_columns(self) -> None:
        """A store written before tracks existed gains the columns (no track, middling quality);
        re-indexing its media fills them properly."""
        missing = {k: v for k, v in FACE_COLUMNS_ADDED.items() if k not in self.faces.schema.names}
        if missing:
            log.warning(
                "faces table at %s predates %s: added; re-index media to build tracks", self.uri, sorted(missing)
            )
            try:
                self.faces.add_columns(missing)
            except Exception:  # another process added them first
                self.faces = self.db.open_table(FACES)

    def _add_new_media_columns(self) -> None:
        """Media rows written before photo search gain an id (so their photos get URLs)."""
        missing = [f for f in MEDIA_SCHEMA if f.name in MEDIA_COLUMNS_ADDED and f.name not in self.media.schema.names]
        if not missing:
            return
        try:
            self.media.add_columns(missing)
        except Exception:  # another process added them first
            self.media = self.db.open_table(MEDIA)
        rows = self.media.search().where("media_id IS NULL").limit(None).to_arrow().to_pylist()
        if rows:
            self.record_media([{**r, "media_id": uuid.uuid4().hex} for r in rows])

    # ---- media -----------------------------------------------------------------
    def media_rows(self, org_id: int, event_id: int) -> list[dict]:
        return self.media.search().where(event_filter(org_id, event_id)).limit(None).to_arrow().to_pylist()

    def indexed_sources(self, org_id: int, event_id: int) -> dict[str, str]:
        """media_key -> uri of the event's successfully indexed media."""
        where = f"{event_filter(org_id, event_id)} AND status = {sql_str(MEDIA_INDEXED)}"
        rows = self.media.search().where(where).select(["media_key", "uri"]).limit(None).to_arrow()
        return dict(zip(rows.column("media_key").to_pylist(), rows.column("uri").to_pylist(), strict=True))

    def media_row(self, org_id: int, event_id: int, media_key: str) -> dict | None:
        rows = (
            self.media.search()
            .where(f"{event_filter(org_id, event_id)} AND media_key = {sql_str(media_key)}")
            .limit(1)
            .to_arrow()
            .to_pylist()
        )
        return rows[0] if rows else None

    def media_by_id(self, org_id: int, event_id: int, media_id: str) -> dict | None:
        where = f"{event_filter(org_id, event_id)} AND media_id = {sql_str(media_id)}"
        rows = self.media.search().where(where).limit(1).to_arrow().to_pylist()
        return rows[0] if rows else None

    def media_by_keys(self, org_id: int, event_id: int, media_keys: Sequence[str]) -> dict[str, dict]:
        """media_key -> media row, for the given keys of one event."""
        out: dict[str, dict] = {}
        for start in range(0, len(media_keys), 500):
            keys = ", ".join(sql_str(k) for k in media_keys[start : start + 500])
            rows = self.media.search().where(f"{event_filter(org_id, event_id)} AND media_key IN ({keys})")
            out.update((r["media_key"], r) for r in rows.limit(None).to_arrow().to_pylist())
        return out

    def record_media(self, rows: Sequence[dict]) -> None:
        """Insert or replace media rows (keyed by org, event, media_key)."""
        if not rows:
            return
        now = datetime.now(UTC)
        table = pa.Table.from_pylist(
            [
                {**r, "indexed_at": r.get("indexed_at") or now, "media_id": r.get("media_id") or uuid.uuid4().hex}
                for r in rows
            ],
            schema=MEDIA_SCHEMA,
        )
        (
            self.media.merge_insert(["org_id", "event_id", "media_key"])
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(table)
        )

    # ---- faces -----------------------------------------------------------------
    def add_faces(self, table: pa.Table) -> None:
        if table.num_rows:
            self.faces.add(table.cast(self.faces.schema))

    def add_tracks(self, table: pa.Table) -> None:
        if table.num_rows:
            self.tracks.add(table.cast(self.tracks.schema))

    def add_bibs(self, table: pa.Table) -> None:
        if table.num_rows:
            self.bibs.add(table.cast(BIBS_SCHEMA))

    def bib_sightings(self, org_id: int, event_id: int, number: str, media_type: str | None = None) -> pa.Table:
        """Every sighting of one BIB number in the event, in media and time order."""
        where = f"{event_filter(org_id, event_id)} AND number = {sql_str(number)}"
        if media_type is not None:
            where += f" AND media_type = {sql_str(media_type)}"
        table = self.bibs.search().where(where).limit(None).to_arrow()
        return table.sort_by([("media_key", "ascending"), ("timestamp_s", "ascending")])

    def count_bibs(self, org_id: int, event_id: int) -> int:
        return self.bibs.count_rows(event_filter(org_id, event_id))

    def delete_media_faces(self, org_id: int, event_id: int, media_keys: Sequence[str]) -> None:
        """Remove faces, tracks and BIBs of media about to be (re)indexed, so a retry never
        duplicates rows."""
        for start in range(0, len(media_keys), 500):
            keys = ", ".join(sql_str(k) for k in media_keys[start : start + 500])
            for table in (self.faces, self.tracks, self.bibs):
                table.delete(f"{event_filter(org_id, event_id)} AND media_key IN ({keys})")

    def delete_media_rows(self, org_id: int, event_id: int, media_keys: Sequence[str]) -> int:
        """Forget media (their index status); returns rows removed. Their faces go with
        ``delete_media_faces``."""
        removed = 0
        for start in range(0, len(media_keys), 500):
            keys = ", ".join(sql_str(k) for k in media_keys[start : start + 500])
            where = f"{event_filter(org_id, event_id)} AND media_key IN ({keys})"
            removed += self.media.count_rows(where)
            self.media.delete(where)
        return removed

    def count_media_rows(self, org_id: int, event_id: int, media_key: str) -> dict[str, int]:
        """Rows of one media item per table (faces, tracks, bibs, media)."""
        where = f"{event_filter(org_id, event_id)} AND media_key = {sql_str(media_key)}"
        return {name: table.count_rows(where) for name, table in self._tables().items()}

    def _tables(self) -> dict:
        return {FACES: self.faces, TRACKS: self.tracks, BIBS: self.bibs, MEDIA: self.media}

    def delete_event(self, org_id: int, event_id: int) -> dict[str, int]:
        """Remove every row of one event from the faces, tracks, BIBs and media tables (the
        re-index deletion, for all of the event's media, including rows whose media row is
        missing); returns rows removed per table."""
        removed = {}
        where = event_filter(org_id, event_id)
        for name, table in self._tables().items():
            removed[name] = table.count_rows(where)
            if removed[name]:
                table.delete(where)
        return removed

    def video_tracks(self, org_id: int, event_id: int, media_key: str) -> pa.Table:
        where = f"{event_filter(org_id, event_id)} AND media_key = {sql_str(media_key)}"
        return self.tracks.search().where(where).limit(None).to_arrow()

    def track_vectors(self, org_id: int, event_id: int, media_key: str, track_ids: Sequence[int]) -> np.ndarray:
        """The embeddings of the given tracks of one video, (n, dim)."""
        if not track_ids:
            return np.zeros((0, self.pack.dim), np.float32)
        ids = ", ".join(str(int(t)) for t in sorted(set(track_ids)))
        where = f"{event_filter(org_id, event_id)} AND media_key = {sql_str(media_key)} AND track_id IN ({ids})"
        rows = self.tracks.search().where(where).select(["vector"]).limit(None).to_arrow()
        return np.asarray(rows.column("vector").to_pylist(), np.float32).reshape(-1, self.pack.dim)

    def face_vectors(self, org_id: int, event_id: int, face_ids: Sequence[str]) -> list[list[float]]:
        """Vectors of the given faces of one event, in the order given (zeros for a face gone
        meanwhile, e.g. re-indexed: it then matches nothing)."""
        by_id: dict[str, list[float]] = {}
        for start in range(0, len(face_ids), 500):
            ids = ", ".join(sql_str(f) for f in face_ids[start : start + 500])
            where = f"{event_filter(org_id, event_id)} AND face_id IN ({ids})"
            rows = self.faces.search().where(where).select(["face_id", "vector"]).limit(None).to_arrow()
            by_id.update(zip(rows.column("face_id").to_pylist(), rows.column("vector").to_pylist(), strict=True))
        return [by_id.get(f, [0.0] * self.pack.dim) for f in face_ids]

    def track_faces(self, org_id: int, event_id: int, media_key: str, track_ids: Sequence[int]) -> pa.Table:
        """Every face of the given tracks of one video, with vectors, in time order."""
        ids = ", ".join(str(int(t)) for t in sorted(set(track_ids)))
        where = f"{event_filter(org_id, event_id)} AND media_key = {sql_str(media_key)} AND track_id IN ({ids})"
        table = self.faces.search().where(where).select([*FACE_COLUMNS, "vector"]).limit(None).to_arrow()
        return table.sort_by("timestamp_s")

    def count_faces(self, org_id: int | None = None, event_id: int | None = None) -> int:
        if org_id is None or event_id is None:
            return self.faces.count_rows()
        return self.faces.count_rows(event_filter(org_id, event_id))

    def search(
        self,
        org_id: int,
        event_id: int,
        vector: np.ndarray,
        min_similarity: float | None = None,
        limit: int | None = 100,
        media_type: str | None = None,
    ) -> list[FaceHit]:
        """Faces of one event by cosine similarity, best first.

        With ``min_similarity`` every face at or above it is returned (``limit=None``),
        not a fixed top-k. Exact (the event's rows, brute force) unless the event has at
        least ``ann_min_rows`` faces and the table a vector index.
        """
        vector = np.asarray(vector, np.float32).reshape(-1)
        if vector.shape[0] != self.pack.dim:
            raise ValueError(f"query vector has {vector.shape[0]} dims, the {self.pack.name} store {self.pack.dim}")
        held = self.event_faces(org_id, event_id) if self.event_cache is not None else None
        if held is not None:  # exact, from memory
            matches = best_matches(held, vector, min_similarity, limit, media_type)
            rows = held.columns.select(FACE_COLUMNS).take(pa.array([i for i, _ in matches], pa.int64())).to_pylist()
            return [_hit(row, similarity) for row, (_, similarity) in zip(rows, matches, strict=True)]
        where = event_filter(org_id, event_id)
        if media_type is not None:
            where += f" AND media_type = {sql_str(media_type)}"
        query = (
            self.faces.search(vector, vector_column_name="vector")
            .distance_type("cosine")
            .where(where, prefilter=True)
            .select([*FACE_COLUMNS, "_distance"])
        )
        event_faces = self.count_faces(org_id, event_id)
        if event_faces >= self.ann_min_rows and self._has_vector_index():
            query = query.nprobes(self.ann_nprobes).refine_factor(self.ann_refine_factor)
            rows = self._ann_rows(query, min_similarity, limit, event_faces)
        else:  # the event's own rows, brute force: exact, and fast below ann_min_rows
            query = query.bypass_vector_index()
            if min_similarity is not None:
                # cosine distance = 1 - similarity; the upper bound is exclusive.
                query = query.distance_range(upper_bound=1.0 - min_similarity + 1e-6)
            rows = query.limit(limit if limit is not None else max(1, event_faces)).to_arrow().to_pylist()
        return [_hit(r, 1.0 - r["_distance"]) for r in rows]

    def event_faces(self, org_id: int, event_id: int) -> EventFaces | None:
        """The event's faces from the in-memory cache, brought up to date with the table
        first (see pipelines.event_faces for why this is never stale); None when the event
        is over the cache's budget."""
        cache = self.event_cache
        assert cache is not None
        key, where = (org_id, event_id), event_filter(org_id, event_id)
        with cache.loading(key):
            version = self.faces.version
            held = cache.get(key)
            if held is not None and held.version == version:
                return held
            total = self.faces.count_rows(where)
            if held is not None:
                added = self.faces.count_rows(f"{where} AND {ROW_ID} > {held.max_row_id}")
                if total - added == held.rows:  # nothing of the copy deleted or moved
                    if added:
                        held = held.extended(
                            self._read_event_faces(f"{where} AND {ROW_ID} > {held.max_row_id}", version)
                        )
                    held.version = version
                    return held if cache.put(key, held) else None
            if estimated_bytes(total, self.pack.dim) > cache.max_bytes:
                cache.drop(key)
                return None
            held = self._read_event_faces(where, version)
            return held if cache.put(key, held) else None

    def _read_event_faces(self, where: str, version: int) -> EventFaces:
        query = self.faces.search().where(where).with_row_id(True).select([*FACE_COLUMNS, "vector"])
        return event_faces(query.limit(None).to_arrow(), self.pack.dim, version)

    # ---- upkeep ----------------------------------------------------------------
    @staticmethod
    def _ann_rows(query, min_similarity: float | None, limit: int | None, event_faces: int) -> list[dict]:
        """Top-k through the index, k growing fourfold while every hit still passes.

        Not ``distance_range``: on an IVF_PQ query LanceDB applies it to the PQ-approximate
        distances and drops true matches (tests/test_store_ann.py: recall 0.001). The
        refined distances of the top-k are exact, so filtering them here is.
        """
        k = limit if limit is not None else 256
        while True:
            rows = query.limit(k).to_arrow().to_pylist()
            if min_similarity is None:
                return rows
            passing = [r for r in rows if 1.0 - r["_distance"] >= min_similarity - 1e-6]
            if limit is not None or len(passing) < len(rows) or len(rows) < k or k >= event_faces:
                return passing
            k *= 4

    def _has_vector_index(self) -> bool:
        return any(ix.columns == ["vector"] for ix in self.faces.list_indices())

    def optimize(self) -> None:
        """Compact small fragments left by streaming appends and refresh indices."""
        self.faces.optimize()
        self.media.optimize()
        self.tracks.optimize()
        self.bibs.optimize()

    def ensure_indices(self) -> None:
        """Scalar index for event filters; a vector index once the table is large enough."""
        names = {tuple(ix.columns) for ix in self.faces.list_indices()}
        rows = self.faces.count_rows()
        if rows and ("event_id",) not in names:
            self.faces.create_index("event_id", config=BTree())
        # No index on org_id: every filter names the event too, and an org holds most of the
        # table, so LanceDB intersecting the org's row ids with the event's cost ~30 ms per
        # query at a million faces (bench/search.py: 1k-face event 72 ms with it, 10 ms
        # without). Stores made while it was built lose it here.
        for ix in self.faces.list_indices():
            if ix.columns == ["org_id"]:
                self.faces.drop_index(ix.name)
        if self.tracks.count_rows() and not any(ix.columns == ["event_id"] for ix in self.tracks.list_indices()):
            self.tracks.create_index("event_id", config=BTree())
        if self.bibs.count_rows() and not any(ix.columns == ["number"] for ix in self.bibs.list_indices()):
            self.bibs.create_index("number", config=BTree())
        if rows >= self.ann_min_rows and ("vector",) not in names:
            log.info("building IVF_PQ index over %d faces", rows)
            self.faces.create_index(
                "vector",
                config=IvfPq(
                    distance_type="cosine",
                    num_partitions=max(1, int(rows**0.5)),
                    num_sub_vectors=max(1, self.pack.dim // 8),
                ),
            )
