"""Find one person among an event's photos (Face Search): every photo with a face at or
above the threshold, best first.

Photos have no tracks: each face stands alone, so the rule is the plain per-face one.
The event filter is pushed down into LanceDB (prefilter) and the search stays exact
until the table is large enough for its vector index (pipelines/store.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from pipelines.store import FaceHit, FaceStore


@dataclass(frozen=True)
class PhotoMatch:
    """One photo showing the person: its best face and how many of its faces matched."""

    media_key: str
    similarity: float  # of the best matching face, to the closest reference photo
    bbox: tuple[float, float, float, float]  # that face, x1, y1, x2, y2 in photo pixels
    match_count: int  # faces in the photo that matched (mirrors, screens, collages)


def rank_photos(hits: Iterable[FaceHit]) -> list[PhotoMatch]:
    """Face hits (one per face and reference, any order) to photos, best first. Pure."""
    best_per_face: dict[str, FaceHit] = {}
    for hit in hits:
        seen = best_per_face.get(hit.face_id)
        if seen is None or hit.similarity > seen.similarity:
            best_per_face[hit.face_id] = hit
    per_photo: dict[str, list[FaceHit]] = {}
    for hit in best_per_face.values():
        per_photo.setdefault(hit.media_key, []).append(hit)
    photos = []
    for key, faces in per_photo.items():
        top = max(faces, key=lambda h: h.similarity)
        photos.append(PhotoMatch(key, float(top.similarity), tuple(float(v) for v in top.bbox), len(faces)))
    return sorted(photos, key=lambda p: (-p.similarity, -p.match_count, p.media_key))


def find_photos(
    store: FaceStore, org_id: int, event_id: int, references: np.ndarray, threshold: float
) -> list[PhotoMatch]:
    """The event's photos of the person shown in ``references`` (P, D), best first."""
    hits: list[FaceHit] = []
    for ref in np.atleast_2d(references):
        hits.extend(store.search(org_id, event_id, ref, min_similarity=threshold, limit=None, media_type="photo"))
    return rank_photos(hits)
