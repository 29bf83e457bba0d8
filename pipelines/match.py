"""Match a query embedding against an event's indexed faces, grouped per source video."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from pipelines.segments import TimedHit
from pipelines.store import FaceStore


def video_hits(
    store: FaceStore, org_id: int, event_id: int, vector: np.ndarray, threshold: float
) -> dict[str, list[TimedHit]]:
    """Every video face at or above ``threshold``, as timed hits per media key.

    Several faces of one frame can match (reflections, screens); a frame counts once,
    with its best similarity.
    """
    best: dict[str, dict[float, float]] = defaultdict(dict)
    for hit in store.search(org_id, event_id, vector, min_similarity=threshold, limit=None, media_type="video"):
        frames = best[hit.media_key]
        frames[hit.timestamp_s] = max(frames.get(hit.timestamp_s, -1.0), hit.similarity)
    return {key: [TimedHit(t, s) for t, s in sorted(frames.items())] for key, frames in best.items()}
