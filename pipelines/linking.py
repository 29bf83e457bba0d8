"""Tracks at index time: the writer's side of pipelines/tracks.py.

The indexer hands over each batch of face rows as it streams in (in input order: the
dataset preserves it). Rows wait per video until their decode chunk ends, then that
chunk's frames go through the video's ``TrackLinker`` in time order: each row gets its
``track_id``, and tracks that closed come back as rows for the tracks table. No second
pass over the video; memory holds at most one chunk of face rows per video.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import pyarrow as pa

from pipelines.config import TrackSettings
from pipelines.models.base import PackInfo
from pipelines.tracks import NO_TRACK, Track, TrackLinker, is_shot_cut

T = TypeVar("T")


def _timed(method: Callable[..., T]) -> Callable[..., T]:
    """Adds the method's run time to ``self.seconds``."""

    @functools.wraps(method)
    def wrapper(self: VideoTracks, *args: object) -> T:
        started = time.perf_counter()
        try:
            return method(self, *args)
        finally:
            self.seconds += time.perf_counter() - started

    return wrapper


class VideoTracks:
    """Per-video linkers for one indexing run."""

    def __init__(self, settings: TrackSettings, org_id: int, event_id: int, pack: PackInfo) -> None:
        self.settings = settings
        self.org_id, self.event_id = org_id, event_id
        from pipelines.store import tracks_schema  # lancedb only once Ray is up

        self.schema = tracks_schema(pack)
        self.linkers: dict[str, TrackLinker] = {}
        self.last_signature: dict[str, np.ndarray] = {}
        self.waiting: dict[str, list[tuple[pa.Table, np.ndarray]]] = defaultdict(list)
        self.seconds = 0.0  # time spent here, for the index report

    @_timed
    def add(self, faces: pa.Table, signatures: np.ndarray) -> None:
        """Face rows (faces schema; several videos possible) and each row's frame signature."""
        keys = np.asarray(faces.column("media_key").to_numpy(zero_copy_only=False))
        for key in np.unique(keys):
            rows = np.flatnonzero(keys == key)
            self.waiting[str(key)].append((faces.take(pa.array(rows)), signatures[rows]))

    @_timed
    def end_chunk(self, media_key: str) -> tuple[pa.Table | None, pa.Table]:
        """The chunk's face rows with track ids (None when it had none), and tracks closed so far."""
        parts = self.waiting.pop(media_key, [])
        if not parts:
            return None, self._rows(self._linker(media_key).pop_closed())
        faces = pa.concat_tables([p[0] for p in parts])
        signatures = np.concatenate([p[1] for p in parts])
        if faces.column("media_type")[0].as_py() != "video":
            return faces, self._rows([])  # photos: every face on its own
        track_ids = self._link(media_key, faces, signatures)
        column = faces.schema.get_field_index("track_id")
        faces = faces.set_column(column, "track_id", pa.array(track_ids, pa.int64()))
        return faces, self._rows(self._linker(media_key).pop_closed())

    @_timed
    def end_media(self, media_key: str) -> pa.Table:
        """Close the video's remaining tracks."""
        self.waiting.pop(media_key, None)
        self.last_signature.pop(media_key, None)
        linker = self.linkers.pop(media_key, None)
        return self._rows(linker.finish() if linker else [])

    def _linker(self, media_key: str) -> TrackLinker:
        if media_key not in self.linkers:
            self.linkers[media_key] = TrackLinker(self.settings, media_key)
        return self.linkers[media_key]

    def _link(self, media_key: str, faces: pa.Table, signatures: np.ndarray) -> np.ndarray:
        linker = self._linker(media_key)
        times = faces.column("timestamp_s").to_numpy()
        order = np.argsort(times, kind="stable")
        boxes = np.asarray(faces.column("bbox").to_pylist(), np.float32).reshape(-1, 4)
        vectors = np.asarray(faces.column("vector").to_pylist(), np.float32)
        qualities = faces.column("quality").to_numpy()
        face_ids = faces.column("face_id").to_pylist()
        track_ids = np.full(len(times), NO_TRACK, np.int64)
        frame_starts = np.flatnonzero(np.r_[True, np.diff(times[order]) > 0])
        for start, end in zip(frame_starts, np.r_[frame_starts[1:], len(order)], strict=True):
            rows = order[start:end]
            signature = signatures[rows[0]]
            cut = is_shot_cut(self.last_signature.get(media_key), signature, self.settings.cut_threshold)
            self.last_signature[media_key] = signature
            track_ids[rows] = linker.add_frame(
                float(times[rows[0]]),
                boxes[rows],
                vectors[rows],
                qualities[rows],
                cut=cut,
                face_refs=[face_ids[i] for i in rows],
            )
        return track_ids

    def _rows(self, tracks: list[Track]) -> pa.Table:
        dim = self.schema.field("vector").type.list_size
        vectors = np.asarray([t.embedding for t in tracks], np.float32).reshape(-1, dim)
        return pa.table(
            {
                "org_id": pa.array([self.org_id] * len(tracks), pa.int64()),
                "event_id": pa.array([self.event_id] * len(tracks), pa.int64()),
                "media_key": pa.array([t.media_key for t in tracks], pa.string()),
                "track_id": pa.array([t.track_id for t in tracks], pa.int64()),
                "start_s": pa.array([t.start_s for t in tracks], pa.float64()),
                "end_s": pa.array([t.end_s for t in tracks], pa.float64()),
                "faces": pa.array([t.n_faces for t in tracks], pa.int64()),
                "best_face_id": pa.array([str(t.best_ref) for t in tracks], pa.string()),
                "best_quality": pa.array([t.best_quality for t in tracks], pa.float32()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
            },
            schema=self.schema,
        )
