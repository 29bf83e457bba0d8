"""Video matches computed by one search kind and reused by another (Face Search computes
them; a file-less video-clipping POST with the same request_id clips from them).

Stored matches are only as good as the rules and the index they came from: the basis
names the model pack, the threshold, the matching rules, the "not me" references and the
event's face count, and a mismatch means matching again.
"""

from __future__ import annotations

import hashlib
import json

from app.config import AppSettings
from pipelines.match import FaceMatch

# Bumped when what a stored row means changes: v2 rows hold the selfie similarity and the
# match score apart (before, expansion could lift the stored similarity to 1.0).
ENCODING = "v2"


def encode_matches(matches: dict[str, list[FaceMatch]]) -> dict[str, list[list[float]]]:
    """Per video: [t, similarity, track_id, x1, y1, x2, y2, score] rows (JSON-ready)."""
    return {
        key: [
            [
                m.timestamp_s,
                round(m.similarity, 6),
                m.track_id,
                *(round(float(v), 2) for v in m.bbox),
                round(m.rank_score, 6),
            ]
            for m in found
        ]
        for key, found in matches.items()
    }


def decode_matches(stored: dict[str, list[list[float]]]) -> dict[str, list[FaceMatch]]:
    return {
        key: [
            FaceMatch(
                float(r[0]),
                float(r[1]),
                int(r[2]),
                (r[3], r[4], r[5], r[6]),
                score=float(r[7]) if len(r) > 7 else None,
            )
            for r in rows
        ]
        for key, rows in stored.items()
    }


def matches_basis(settings: AppSettings, threshold: float, negatives: int, event_faces: int) -> str:
    """A fingerprint of everything a video match depends on besides the selfie itself."""
    rules = json.dumps(settings.match.model_dump(), sort_keys=True)
    digest = hashlib.sha256(rules.encode()).hexdigest()[:16]
    return f"{settings.models.pack}|{threshold:.6f}|{digest}|neg={negatives}|faces={event_faces}|{ENCODING}"
