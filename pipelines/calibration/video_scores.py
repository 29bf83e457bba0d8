"""Genuine and impostor scores of an event's video faces against reference photos, by the
labels' timelines (pure)."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from pipelines.calibration.events import EventFaces
from pipelines.calibration.rates import ScoreSet
from pipelines.evaluate import Interval, LabelledSet, inside, match_video

# Label accuracy of video_truth.csv (../shared/data/faces/README.md): ±0.1 s at shot cuts,
# ±0.3 s where someone leaves the frame by camera motion.
LABEL_TOLERANCE_S = 0.3


@dataclass(frozen=True)
class FaceScore:
    """One scored comparison of a video face with an identity's reference photos."""

    identity: str
    face: int  # row in the EventFaces it came from
    media_key: str
    timestamp_s: float
    bbox: tuple[float, float, float, float]
    similarity: float
    genuine: bool


@dataclass(frozen=True)
class VideoFaceScores:
    """Genuine and impostor scores of video faces against reference photos.

    Genuine: per sampled frame in which exactly one labelled person is visible (no other
    labelled person within the label tolerance, nobody's don't-care time), that person's
    best-matching face in the frame against their photos (best over photos). Frames where
    the person's face was not detected have no face row and are not counted; when it was
    missed but someone unlabelled was detected, the "best" face is that stranger: this
    understates TAR, never overstates it. Taking the best of the frame's faces slightly
    flatters TAR where several faces are visible.

    Impostor: per face and identity, the identity's best photo similarity for faces in
    frames where that identity is not labelled (nor don't-care) within the tolerance. Only
    faces of videos in the set count (the labels say who is absent there). Faces of one
    track are strongly correlated, so the effective number of impostor comparisons is
    nearer the number of (identity, track) pairs (``impostor_tracks``) than the face count.
    """

    faces: EventFaces
    genuine_face: np.ndarray  # face rows
    genuine_identity: np.ndarray
    genuine_similarity: np.ndarray
    impostor_face: np.ndarray
    impostor_identity: np.ndarray
    impostor_similarity: np.ndarray
    frames_skipped: int  # frames with a labelled or don't-care person that gave no genuine sample

    @property
    def scores(self) -> ScoreSet:
        return ScoreSet(self.genuine_similarity, self.impostor_similarity)

    @property
    def impostor_tracks(self) -> int:
        tracks = self.faces.track_id[self.impostor_face]
        keys = self.faces.media_key[self.impostor_face]
        faces = self.impostor_face
        return len(
            {
                (who, key, int(tr) if tr >= 0 else f"face{f}")
                for who, key, tr, f in zip(self.impostor_identity, keys, tracks, faces, strict=True)
            }
        )

    def _record(self, identity: str, face: int, similarity: float, genuine: bool) -> FaceScore:
        f = self.faces
        return FaceScore(
            identity,
            int(face),
            str(f.media_key[face]),
            float(f.timestamp_s[face]),
            tuple(float(v) for v in f.bbox[face]),
            float(similarity),
            genuine,
        )

    def weakest_genuine(self, n: int) -> list[FaceScore]:
        order = np.argsort(self.genuine_similarity, kind="stable")[:n]
        return [
            self._record(self.genuine_identity[i], self.genuine_face[i], self.genuine_similarity[i], True)
            for i in order
        ]

    def strongest_impostors(self, n: int) -> list[FaceScore]:
        order = np.argsort(-self.impostor_similarity, kind="stable")[:n]
        return [
            self._record(self.impostor_identity[i], self.impostor_face[i], self.impostor_similarity[i], False)
            for i in order
        ]


def score_jitter(scores: VideoFaceScores) -> float:
    """Median change of a video face's score from one sample to the next on the same track
    (impostor and genuine comparisons together; NaN without consecutive pairs). The noise of
    a single score: one frame later the same face scores about this much higher or lower. Pure."""
    f = scores.faces
    steps: list[float] = []
    for faces_, who, sims in (
        (scores.genuine_face, scores.genuine_identity, scores.genuine_similarity),
        (scores.impostor_face, scores.impostor_identity, scores.impostor_similarity),
    ):
        runs: dict[tuple[str, str, int], list[tuple[float, float]]] = defaultdict(list)
        for row, identity, sim in zip(faces_, who, sims, strict=True):
            if f.track_id[row] >= 0:
                runs[(identity, f.media_key[row], int(f.track_id[row]))].append((float(f.timestamp_s[row]), float(sim)))
        for run in runs.values():
            run.sort()
            steps += [abs(b[1] - a[1]) for a, b in itertools.pairwise(run)]
    return float(np.median(steps)) if steps else math.nan


def _shrunk(spans: Iterable[Interval], by: float) -> list[Interval]:
    return [(s + by, e - by) for s, e in spans if e - s > 2 * by]


def video_face_scores(
    faces: EventFaces,
    references: Mapping[str, np.ndarray],
    labelled: LabelledSet,
    tolerance_s: float = LABEL_TOLERANCE_S,
) -> VideoFaceScores:
    """Genuine and impostor video-face scores (the rules: ``VideoFaceScores``). Pure."""
    identities = sorted(references)
    video = np.flatnonzero(faces.media_type == "video") if len(faces) else np.zeros(0, np.int64)
    empty = np.zeros(0, np.int64)
    if not identities or not video.size:
        none = np.zeros(0, np.float64)
        return VideoFaceScores(faces, empty, np.zeros(0, object), none, empty, np.zeros(0, object), none, 0)
    # (F, I): each face's best similarity to each identity's photos.
    sims = np.stack([(faces.vectors @ np.asarray(references[i], np.float32).T).max(axis=1) for i in identities], 1)
    resolved = {key: match_video(key, labelled.videos) for key in set(faces.media_key[video].tolist())}
    frames: dict[tuple[str, float], list[int]] = defaultdict(list)
    for row in video:
        if resolved[faces.media_key[row]] is not None:
            frames[(faces.media_key[row], float(faces.timestamp_s[row]))].append(int(row))
    labelled_by_video: dict[str, list[str]] = defaultdict(list)
    for vid, who in labelled.truth:
        labelled_by_video[vid].append(who)
    dontcare_by_video: dict[str, list[str]] = defaultdict(list)
    for vid, who in labelled.dontcare:
        dontcare_by_video[vid].append(who)

    gen_face, gen_who, gen_sim, imp_face, imp_who, imp_sim = [], [], [], [], [], []
    skipped = 0
    for (key, t), rows in sorted(frames.items()):
        vid = resolved[key]
        near = {w for w in labelled_by_video[vid] if inside(t, labelled.truth[(vid, w)], tolerance_s)}
        clear = {w for w in near if inside(t, _shrunk(labelled.truth[(vid, w)], tolerance_s), 0.0)}
        doubt = {w for w in dontcare_by_video[vid] if inside(t, labelled.dontcare[(vid, w)], tolerance_s)}
        if near or doubt:
            if len(near) == 1 and clear == near and not doubt and next(iter(near)) in references:
                who = next(iter(near))
                col = identities.index(who)
                best = max(rows, key=lambda r: sims[r, col])
                gen_face.append(best)
                gen_who.append(who)
                gen_sim.append(float(sims[best, col]))
            else:
                skipped += 1
        for col, who in enumerate(identities):
            if who in near or who in doubt:
                continue
            for r in rows:
                imp_face.append(r)
                imp_who.append(who)
                imp_sim.append(float(sims[r, col]))
    return VideoFaceScores(
        faces,
        np.asarray(gen_face, np.int64),
        np.asarray(gen_who, object),
        np.asarray(gen_sim, np.float64),
        np.asarray(imp_face, np.int64),
        np.asarray(imp_who, object),
        np.asarray(imp_sim, np.float64),
        skipped,
    )
