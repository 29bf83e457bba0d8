"""An indexed event read for calibration: its media, bounds, faces and tracks, and a store
whose reads are remembered across a sweep."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from pipelines.config import Settings
from pipelines.eval_runner import EVAL_EVENT, EVAL_ORG
from pipelines.evaluate import LabelledSet
from pipelines.models import ModelPack, load_pack

if TYPE_CHECKING:  # annotations only: pipelines.index imports Ray
    from pipelines.index import IndexReport
    from pipelines.store import FaceStore


class CachedStore:
    """A FaceStore whose reads are remembered, for many ``find_person`` calls on an event
    that does not change meanwhile (a threshold sweep): the first pass's candidates and the
    competitors do not depend on the threshold, so most reads repeat. Other attributes pass
    through unchanged."""

    CACHED = frozenset({"search", "track_faces", "video_tracks", "face_vectors", "track_vectors", "media_rows"})

    def __init__(self, store: FaceStore) -> None:
        self._store = store
        self._memo: dict[Any, Any] = {}
        self.reads = 0  # reads that reached the store

    @staticmethod
    def _freeze(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return ("ndarray", value.dtype.str, value.shape, value.tobytes())
        if isinstance(value, list | tuple):
            return tuple(CachedStore._freeze(v) for v in value)
        if isinstance(value, dict):
            return tuple(sorted((k, CachedStore._freeze(v)) for k, v in value.items()))
        return value

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name not in self.CACHED:
            return attr

        def cached(*args: Any, **kwargs: Any) -> Any:
            key = (name, self._freeze(args), self._freeze(kwargs))
            if key not in self._memo:
                self.reads += 1
                self._memo[key] = attr(*args, **kwargs)
            found = self._memo[key]
            return list(found) if isinstance(found, list) else found  # callers may extend lists

        return cached


@dataclass
class EventIndex:
    """An indexed event and what reading it needs: the settings, the pack, the store."""

    settings: Settings
    org_id: int
    event_id: int
    pack: ModelPack
    store: FaceStore
    report: IndexReport | None = None  # when this session indexed it

    def media(self) -> pa.Table:
        """The event's media rows (the store's media table)."""
        rows = self.store.media_rows(self.org_id, self.event_id)
        from pipelines.store import MEDIA_SCHEMA

        return pa.Table.from_pylist(rows, schema=MEDIA_SCHEMA).sort_by("media_key")

    def bounds(self) -> dict[str, tuple[float, float]]:
        """media_key -> (first frame time, end time), as ``facereel eval`` clamps segments."""
        return {
            row["media_key"]: (row["start_s"] or 0.0, (row["start_s"] or 0.0) + (row["duration_s"] or 0.0))
            for row in self.store.media_rows(self.org_id, self.event_id)
        }

    def sources(self) -> dict[str, str]:
        """media_key -> uri of the event's indexed media."""
        return self.store.indexed_sources(self.org_id, self.event_id)

    def faces(self) -> EventFaces:
        return event_faces(self.store, self.org_id, self.event_id)

    def tracks(self) -> pa.Table:
        """The tracks table of the event (no vectors): start_s/end_s/faces per track per video."""
        from pipelines.lance_tables import event_filter

        cols = ["media_key", "track_id", "start_s", "end_s", "faces", "best_face_id", "best_quality"]
        where = event_filter(self.org_id, self.event_id)
        table = self.store.tracks.search().where(where).select(cols).limit(None).to_arrow()
        return table.sort_by([("media_key", "ascending"), ("start_s", "ascending")])


def open_event(settings: Settings, org_id: int, event_id: int, pack: ModelPack | None = None) -> EventIndex:
    """An existing event's store (nothing is indexed; an unknown event simply has no rows)."""
    from pipelines.store import FaceStore

    pack = pack or load_pack(settings.models)
    return EventIndex(settings, org_id, event_id, pack, FaceStore.from_settings(settings, pack.info))


def set_sources(labelled: LabelledSet) -> list[str]:
    """The set's videos as index inputs (paths)."""
    return [str(labelled.root / v) for v in labelled.videos]


def index_set(
    settings: Settings,
    labelled: LabelledSet,
    org_id: int = EVAL_ORG,
    event_id: int = EVAL_EVENT,
    pack: ModelPack | None = None,
) -> EventIndex:
    """Every video of the set indexed into one (throw-away) event, as ``facereel eval`` does.

    Incremental: when every video is already indexed at the same location, nothing runs
    (not even Ray); otherwise ``index_event`` starts a local Ray (``ensure_ray``) and indexes
    what is missing.
    """
    from pipelines.media import list_media

    event = open_event(settings, org_id, event_id, pack)
    idx = settings.index
    wanted = list_media(
        set_sources(labelled), idx.photo_extensions, idx.video_extensions, settings.store.storage_options
    )
    done = event.sources()
    if any(done.get(s.media_key) != s.uri for s in wanted):
        from pipelines.index import index_event

        event.report = index_event(settings, org_id, event_id, set_sources(labelled))
    return event


@dataclass(frozen=True)
class EventFaces:
    """An event's faces as columns (one row per face, media and time order)."""

    face_id: np.ndarray
    media_key: np.ndarray
    media_type: np.ndarray
    timestamp_s: np.ndarray
    bbox: np.ndarray  # (F, 4) x1, y1, x2, y2 source pixels
    det_score: np.ndarray
    face_px: np.ndarray
    track_id: np.ndarray
    quality: np.ndarray
    vectors: np.ndarray  # (F, dim)

    def __len__(self) -> int:
        return int(self.face_id.size)

    def select(self, keep: np.ndarray) -> EventFaces:
        return EventFaces(**{k: v[keep] for k, v in _fields(self).items()})

    def table(self, full_face_px: float = 80.0) -> pa.Table:
        """Columns without vectors, plus ``sharpness``: the quality's sharpness factor,
        quality / (size ramp x det score), in [0, 1] and saturated at 1 from ~100 (variance of
        the Laplacian of the aligned crop): the store keeps only the product."""
        size = np.clip(self.face_px / full_face_px, 0.0, 1.0)
        denom = size * np.clip(self.det_score, 0.0, 1.0)
        sharp = np.where(denom > 0, self.quality / np.maximum(denom, 1e-9), np.nan)
        return pa.table(
            {
                "face_id": self.face_id,
                "media_key": self.media_key,
                "media_type": self.media_type,
                "timestamp_s": self.timestamp_s,
                "x1": self.bbox[:, 0],
                "y1": self.bbox[:, 1],
                "x2": self.bbox[:, 2],
                "y2": self.bbox[:, 3],
                "det_score": self.det_score,
                "face_px": self.face_px,
                "track_id": self.track_id,
                "quality": self.quality,
                "sharpness": np.clip(sharp, 0.0, 1.0),
            }
        )


def _fields(obj: Any) -> dict[str, Any]:
    return {f: getattr(obj, f) for f in obj.__dataclass_fields__}


def event_faces(store: FaceStore, org_id: int, event_id: int, media_type: str | None = None) -> EventFaces:
    from pipelines.lance_tables import event_filter, sql_str

    where = event_filter(org_id, event_id)
    if media_type is not None:
        where += f" AND media_type = {sql_str(media_type)}"
    cols = [
        "face_id", "media_key", "media_type", "timestamp_s", "bbox", "det_score", "face_px", "track_id", "quality", "vector",
    ]  # fmt: skip
    table = store.faces.search().where(where).select(cols).limit(None).to_arrow()
    table = table.sort_by([("media_key", "ascending"), ("timestamp_s", "ascending")])
    n = table.num_rows
    return EventFaces(
        face_id=np.asarray(table.column("face_id").to_pylist(), dtype=object),
        media_key=np.asarray(table.column("media_key").to_pylist(), dtype=object),
        media_type=np.asarray(table.column("media_type").to_pylist(), dtype=object),
        timestamp_s=np.asarray(table.column("timestamp_s").to_pylist(), np.float64),
        bbox=np.asarray(table.column("bbox").to_pylist(), np.float32).reshape(n, 4),
        det_score=np.asarray(table.column("det_score").fill_null(0.0).to_pylist(), np.float32),
        face_px=np.asarray(table.column("face_px").fill_null(0.0).to_pylist(), np.float32),
        track_id=np.asarray(table.column("track_id").fill_null(-1).to_pylist(), np.int64),
        quality=np.asarray(table.column("quality").fill_null(0.0).to_pylist(), np.float32),
        vectors=np.asarray(table.column("vector").to_pylist(), np.float32).reshape(n, store.pack.dim),
    )
