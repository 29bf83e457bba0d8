"""Find one person in an event's stored faces: the store's reads around the matching rule.

pipelines/match_rules.py is the rule (pure): scoring faces and tracks, choosing expansions and
competitors. Here are its inputs from the face store: the candidate faces near the
references (and all faces of their tracks), the video's clear tracks of other people, and
the two passes of ``find_person``.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from pipelines.config import MatchSettings
from pipelines.match_rules import (
    Candidates,
    FaceMatch,
    References,
    max_sim,
    merge_candidates,
    pick_competitors,
    pick_expansions,
    score_faces,
    timed_hits,
)
from pipelines.segments import TimedHit
from pipelines.store import FaceStore
from pipelines.tracks import NO_TRACK

# Callers find the person here, and take the rule's types and hit timing from here with it.
__all__ = [
    "Candidates",
    "FaceMatch",
    "References",
    "candidate_faces",
    "competitors",
    "find_person",
    "timed_hits",
    "video_hits",
]


def candidate_faces(
    store: FaceStore, org_id: int, event_id: int, refs: np.ndarray, floor: float, tracks: bool
) -> dict[str, Candidates]:
    """Per video: faces at least ``floor`` similar to any of ``refs`` (and, with ``tracks``,
    every face of their tracks)."""
    seeds: dict[str, dict[str, object]] = defaultdict(dict)
    for ref in refs:
        for hit in store.search(org_id, event_id, ref, min_similarity=floor, limit=None, media_type="video"):
            seeds[hit.media_key][hit.face_id] = hit
    out = {}
    for key, hits in seeds.items():
        track_ids = sorted({h.track_id for h in hits.values() if h.track_id != NO_TRACK})
        rows = store.track_faces(org_id, event_id, key, track_ids) if tracks and track_ids else None
        ids = set(rows.column("face_id").to_pylist()) if rows is not None else set()
        loose = [h for fid, h in hits.items() if fid not in ids]  # untracked, or tracks off
        vectors = [] if rows is None else rows.column("vector").to_pylist()
        if loose:
            vectors += store.face_vectors(org_id, event_id, [h.face_id for h in loose])
        cols = {
            "timestamps": ([] if rows is None else rows.column("timestamp_s").to_pylist())
            + [h.timestamp_s for h in loose],
            "track_ids": ([] if rows is None else rows.column("track_id").to_pylist()) + [h.track_id for h in loose],
            "qualities": ([] if rows is None else rows.column("quality").to_pylist()) + [h.quality for h in loose],
            "boxes": ([] if rows is None else rows.column("bbox").to_pylist()) + [list(h.bbox) for h in loose],
        }
        if not tracks:
            cols["track_ids"] = [NO_TRACK] * len(cols["track_ids"])
        out[key] = Candidates(
            key,
            np.asarray(cols["timestamps"], np.float64),
            np.asarray(cols["track_ids"], np.int64),
            np.asarray([q if q is not None else 0.0 for q in cols["qualities"]], np.float32),
            np.asarray(vectors, np.float32).reshape(len(cols["timestamps"]), -1),
            np.asarray(cols["boxes"], np.float32).reshape(-1, 4),
        )
    return out


def competitors(
    store: FaceStore, org_id: int, event_id: int, media_key: str, originals: np.ndarray, rules: MatchSettings
) -> np.ndarray:
    """Embeddings of the video's clear tracks of other people (``pick_competitors``)."""
    tracks = store.video_tracks(org_id, event_id, media_key)
    dim = originals.shape[1]
    if not tracks.num_rows:
        return np.zeros((0, dim), np.float32)
    vectors = np.asarray(tracks.column("vector").to_pylist(), np.float32).reshape(-1, dim)
    return pick_competitors(
        vectors, tracks.column("best_quality").to_numpy(), tracks.column("faces").to_numpy(), originals, rules
    )


def find_person(
    store: FaceStore,
    org_id: int,
    event_id: int,
    refs: References,
    threshold: float,
    rules: MatchSettings,
) -> dict[str, list[FaceMatch]]:
    """Every matched video face of the person, per media key, in time order."""
    use_tracks = rules.mode == "tracks"
    floor = min(rules.candidate_floor, threshold) if use_tracks else threshold
    originals, negatives = refs.positives, refs.negatives
    expansions = np.zeros((0, originals.shape[1]), np.float32)
    videos = candidate_faces(store, org_id, event_id, originals, floor, use_tracks)
    passes = 2 if use_tracks and rules.expansion and rules.expansion_refs > 0 else 1
    against: dict[str, np.ndarray] = {}
    for attempt in range(passes):
        for key in videos:
            if key not in against:
                others = (
                    competitors(store, org_id, event_id, key, originals, rules)
                    if use_tracks and rules.competitors
                    else None
                )
                against[key] = (
                    negatives
                    if others is None or not len(others)
                    else np.concatenate([negatives.reshape(-1, originals.shape[1]), others])
                )
        results = {
            key: score_faces(faces, originals, expansions, against[key], threshold, rules)
            for key, faces in videos.items()
        }
        if attempt == passes - 1:
            break
        picked = [
            pick_expansions(
                faces, results[key][0], max_sim(faces.vectors, originals), threshold + rules.expansion_margin, 10**6
            )
            for key, faces in videos.items()
        ]
        pool = np.concatenate([p for p in picked if len(p)] or [expansions])
        if not len(pool):
            break
        # Best first across videos: the most photo-like of the person's video faces.
        expansions = pool[np.argsort(-max_sim(pool, originals), kind="stable")[: rules.expansion_refs]]
        for key, faces in candidate_faces(store, org_id, event_id, expansions, floor, use_tracks).items():
            videos[key] = merge_candidates(videos.get(key), faces)
    out: dict[str, list[FaceMatch]] = {}
    for key, (matched, score) in results.items():
        faces = videos[key]
        own = max_sim(faces.vectors, originals)  # to the selfies only: what clients are told
        found = [
            FaceMatch(
                float(faces.timestamps[i]),
                float(own[i]),
                int(faces.track_ids[i]),
                tuple(faces.boxes[i]),
                score=float(score[i]),
            )
            for i in np.flatnonzero(matched)
        ]
        if found:
            out[key] = sorted(found, key=lambda m: m.timestamp_s)
    return out


def video_hits(
    store: FaceStore,
    org_id: int,
    event_id: int,
    vector: np.ndarray,
    threshold: float,
    rules: MatchSettings | None = None,
) -> dict[str, list[TimedHit]]:
    """Timed hits per video for one photo (``rules`` default to plain per-face matching)."""
    rules = rules or MatchSettings(mode="faces")
    refs = References(np.asarray(vector, np.float32).reshape(1, -1))
    return timed_hits(find_person(store, org_id, event_id, refs, threshold, rules))
