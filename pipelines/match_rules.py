"""Find one person among an event's video faces: per face, by track, with query expansion.

A single frame often cannot be matched to a photo (profiles, small faces), but the
person's frames link into tracks at index time (pipelines/tracks.py). Here:

1. Candidates: faces at least ``candidate_floor`` similar to any reference, and all the
   faces of their tracks (store reads: pipelines/match.py, ``find_person``).
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

This module is the rule, pure (numpy only): the store's reads around it live in
pipelines/match.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipelines.config import MatchSettings
from pipelines.segments import TimedHit
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


def max_sim(vectors: np.ndarray, refs: np.ndarray) -> np.ndarray:
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
    own = max_sim(faces.vectors, originals)
    lifted = max_sim(faces.vectors, expansions)
    score = np.where(own >= rules.expansion_floor, np.maximum(own, lifted), own)
    negative = max_sim(faces.vectors, negatives)
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


def pick_competitors(
    vectors: np.ndarray, best_quality: np.ndarray, faces: np.ndarray, originals: np.ndarray, rules: MatchSettings
) -> np.ndarray:
    """Of a video's tracks (their embeddings, best face quality and face counts), the clear
    tracks of other people (see MatchSettings.competitors): at least two faces, the best at
    least ``competitor_min_quality``, and at most ``competitor_max_similarity`` to the photos."""
    clear = (best_quality >= rules.competitor_min_quality) & (faces >= 2)
    other = max_sim(vectors, originals) <= rules.competitor_max_similarity
    return vectors[clear & other]


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
