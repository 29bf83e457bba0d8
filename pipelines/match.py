"""Find one person among an event's video faces: per face, by track, with query expansion.

A single frame often cannot be matched to a photo (profiles, small faces), but the
person's frames link into tracks at index time (pipelines/tracks.py). Here:

1. Candidates: faces at least ``candidate_floor`` similar to any reference, and all the
   faces of their tracks (store reads).
2. Scoring (pure, ``score_faces``): a face's score is its best similarity to the person's
   own photos (its reported ``similarity``, always); an expanded reference (one of the person's confident video faces) may lift
   it, but only when the face is also ``expansion_floor`` similar to a photo. A track
   matches when the quality-weighted mean of its best k scores passes the threshold, and
   then all of its faces count. A face or track closer to a "not me" reference than to
   the person never counts.
3. Expansion: faces matched ``expansion_margin`` above the threshold become references for
   a second pass, one per track, best first. Expansion decides what matches and how it
   ranks (``FaceMatch.score``); it never changes the similarity a client is shown.

``mode="faces"`` keeps the plain per-face rule (no tracks, no expansion) for comparison.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from pipelines.config import MatchSettings
from pipelines.segments import TimedHit
from pipelines.store import FaceStore
from pipelines.tracks import NO_TRACK, track_evidence

NO_REFS = np.zeros((0, 1), np.float32)


@dataclass(frozen=True)
class References:
    """The person's own photos (positives) and "not me" faces (negatives), unit vectors."""

    positives: np.ndarray  # (P, D)
    negatives: np.ndarray = field(default_factory=lambda: NO_REFS)  # (N, D), may be empty

    def __post_init__(self) -> None:
        if len(self.positives) == 0:
            raise ValueError("at least one positive reference is needed")


@dataclass
class Candidates:
    """Faces of one video, with what scoring needs (rows in time order)."""

    media_key: str
    timestamps: np.ndarray  # (F,)
    track_ids: np.ndarray  # (F,) NO_TRACK for faces on no track
    qualities: np.ndarray  # (F,)
    vectors: np.ndarray  # (F, D)
    boxes: np.ndarray  # (F, 4)

    def select(self, keep: np.ndarray) -> Candidates:
        return Candidates(
            self.media_key,
            self.timestamps[keep],
            self.track_ids[keep],
            self.qualities[keep],
            self.vectors[keep],
            self.boxes[keep],
        )


@dataclass(frozen=True)
class FaceMatch:
    """A matched video face: when, where, how similar to the selfie, and on which track.

    ``similarity`` is what clients see: the face's best cosine similarity to the person's
    own photos (the selfies), never lifted by query expansion. ``score`` is the evidence the
    match and the ranking used: with expansion, the face's similarity to one of the person's
    confident video faces may be higher (a face that is itself an expansion reference
    scores 1.0 against itself). None means the same as ``similarity``.
    """

    timestamp_s: float
    similarity: float
    track_id: int
    bbox: tuple[float, float, float, float]
    confirmed: bool = False  # seen by two kinds of evidence (selfie and BIB, pipelines/bib_search.py)
    score: float | None = None

    @property
    def rank_score(self) -> float:
        """The evidence that ranks: ``score`` when set, else ``similarity``."""
        return self.similarity if self.score is None else self.score


def _max_sim(vectors: np.ndarray, refs: np.ndarray) -> np.ndarray:
    if len(refs) == 0 or refs.shape[1] != vectors.shape[1]:
        return np.full(len(vectors), -np.inf)
    return (vectors @ refs.T).max(axis=1)


def score_faces(
    faces: Candidates,
    originals: np.ndarray,
    expansions: np.ndarray,
    negatives: np.ndarray,
    threshold: float,
    rules: MatchSettings,
) -> tuple[np.ndarray, np.ndarray]:
    """(matched mask, score) per face. Pure: the whole matching rule lives here."""
    own = _max_sim(faces.vectors, originals)
    lifted = _max_sim(faces.vectors, expansions)
    score = np.where(own >= rules.expansion_floor, np.maximum(own, lifted), own)
    negative = _max_sim(faces.vectors, negatives)
    matched = (score >= threshold) & (score > negative)
    if rules.mode == "faces":
        return matched, score
    for track in np.unique(faces.track_ids):
        if track == NO_TRACK:
            continue
        members = np.flatnonzero(faces.track_ids == track)
        k = rules.best_k
        evidence = track_evidence(score[members], faces.qualities[members], k)
        against = track_evidence(negative[members], faces.qualities[members], k) if len(negatives) else -np.inf
        if evidence >= threshold and evidence > against:
            matched[members] = True
        elif against >= evidence:
            matched[members] = False  # "not me": the whole track goes
    return matched, score


def pick_expansions(faces: Candidates, matched: np.ndarray, own: np.ndarray, floor: float, limit: int) -> np.ndarray:
    """Up to ``limit`` matched faces scoring at least ``floor`` against the photos, one per
    track, best first: the person as the event's cameras saw them."""
    order = [i for i in np.argsort(-own, kind="stable") if matched[i] and own[i] >= floor]
    chosen, seen = [], set()
    for i in order:
        track = int(faces.track_ids[i])
        if track != NO_TRACK and track in seen:
            continue
        seen.add(track)
        chosen.append(i)
        if len(chosen) == limit:
            break
    return faces.vectors[chosen]


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
    """Embeddings of the video's clear tracks of other people (see MatchSettings.competitors)."""
    tracks = store.video_tracks(org_id, event_id, media_key)
    dim = originals.shape[1]
    if not tracks.num_rows:
        return np.zeros((0, dim), np.float32)
    vectors = np.asarray(tracks.column("vector").to_pylist(), np.float32).reshape(-1, dim)
    clear = (tracks.column("best_quality").to_numpy() >= rules.competitor_min_quality) & (
        tracks.column("faces").to_numpy() >= 2
    )
    other = _max_sim(vectors, originals) <= rules.competitor_max_similarity
    return vectors[clear & other]


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
                faces, results[key][0], _max_sim(faces.vectors, originals), threshold + rules.expansion_margin, 10**6
            )
            for key, faces in videos.items()
        ]
        pool = np.concatenate([p for p in picked if len(p)] or [expansions])
        if not len(pool):
            break
        # Best first across videos: the most photo-like of the person's video faces.
        expansions = pool[np.argsort(-_max_sim(pool, originals), kind="stable")[: rules.expansion_refs]]
        for key, faces in candidate_faces(store, org_id, event_id, expansions, floor, use_tracks).items():
            videos[key] = merge_candidates(videos.get(key), faces)
    out: dict[str, list[FaceMatch]] = {}
    for key, (matched, score) in results.items():
        faces = videos[key]
        own = _max_sim(faces.vectors, originals)  # to the selfies only: what clients are told
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


def merge_candidates(a: Candidates | None, b: Candidates) -> Candidates:
    """The union of two candidate sets of one video (faces identified by time and box)."""
    if a is None:
        return b
    seen = {(t, tuple(box)) for t, box in zip(a.timestamps.tolist(), a.boxes.tolist(), strict=True)}
    new = np.array(
        [(t, tuple(box)) not in seen for t, box in zip(b.timestamps.tolist(), b.boxes.tolist(), strict=True)], bool
    )
    b = b.select(new)
    return Candidates(
        a.media_key,
        np.concatenate([a.timestamps, b.timestamps]),
        np.concatenate([a.track_ids, b.track_ids]),
        np.concatenate([a.qualities, b.qualities]),
        np.concatenate([a.vectors, b.vectors]),
        np.concatenate([a.boxes, b.boxes]),
    )


def timed_hits(matches: dict[str, list[FaceMatch]]) -> dict[str, list[TimedHit]]:
    """One hit per matched frame (several faces of a frame can match: mirrors, screens):
    the frame's best similarity to the selfie, and its best ranking score."""
    out = {}
    for key, found in matches.items():
        best: dict[float, float] = {}
        scores: dict[float, float] = {}
        confirmed: set[float] = set()
        for m in found:
            best[m.timestamp_s] = max(best.get(m.timestamp_s, -1.0), m.similarity)
            scores[m.timestamp_s] = max(scores.get(m.timestamp_s, -1.0), m.rank_score)
            if m.confirmed:
                confirmed.add(m.timestamp_s)
        out[key] = [TimedHit(t, s, t in confirmed, scores[t]) for t, s in sorted(best.items())]
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
