"""Synthetic face rows for the store's tests and benchmarks: vectors drawn around identity
centres, written with the faces table's own schema (no models, no video)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipelines.models.base import PackInfo
from pipelines.store import faces_schema


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def face_rows(
    pack: PackInfo,
    event_id: int,
    vectors: np.ndarray,
    org_id: int = 1,
    first: int = 0,
    per_media: int = 100,
    media_type: str = "video",
) -> pa.Table:
    """Rows ``first .. first+len(vectors)`` of an event: face ids ``"<event>-<n>"``,
    ``per_media`` faces per video ``e<event>/v<n // per_media>.mp4``, two samples a second."""
    n = len(vectors)
    at = first + np.arange(n)
    cols = {
        "face_id": pa.array([f"{event_id}-{i}" for i in at]),
        "org_id": pa.array(np.full(n, org_id, np.int64)),
        "event_id": pa.array(np.full(n, event_id, np.int64)),
        "media_type": pa.array([media_type] * n),
        "media_key": pa.array([f"e{event_id}/v{i // per_media}.mp4" for i in at]),
        "timestamp_s": pa.array((at % per_media) * 0.5),
        "frame_index": pa.array((at % per_media) * 12),
        "bbox": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(n * 4, np.float32)), 4),
        "landmarks": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(n * 10, np.float32)), 10),
        "det_score": pa.array(np.full(n, 0.9, np.float32)),
        "face_px": pa.array(np.full(n, 80.0, np.float32)),
        "track_id": pa.array(np.full(n, -1, np.int64)),
        "quality": pa.array(np.full(n, 0.5, np.float32)),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(vectors, np.float32).reshape(-1)), pack.dim),
    }
    schema = faces_schema(pack)
    return pa.table({f.name: cols.get(f.name, pa.nulls(n, f.type)) for f in schema}, schema=schema)
