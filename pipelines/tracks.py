"""Face tracks within one video: link the faces of adjacent samples into per-person tracks (pure, no I/O).

Why: a single frame often cannot be matched to a reference photo (profiles, small faces, see
shared/MEASURED.md "Where recall is lost"), but the same person's frames link to each other
easily: boxes overlap between adjacent samples and embeddings of adjacent faces resemble each
other more than the photo. A track that holds one confident frontal match then carries its
profiles and small faces with it.

Per video, ``TrackLinker`` is fed the sampled frames in time order. Each face is linked 1:1 to
an open track when its box overlaps the track's motion-predicted box and its embedding is
similar enough to the track (or, without overlap, when the embedding is very similar and the
face is near). A shot cut or a gap longer than ``max_gap_s`` closes tracks. Closed tracks carry
a quality-weighted mean embedding and their members, so search can score a whole track with
``track_evidence`` (the best k faces) instead of one frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from pipelines.config import TrackSettings

FaceRef = str | int
NO_TRACK = -1  # a face linked to no track: photos, and faces indexed before tracks existed

# Face quality saturates here: SFace aligns to 112x112, so faces of ~80 px and more keep almost
# all the detail it uses; smaller faces are upsampled and blur.
FULL_QUALITY_FACE_PX = 80.0
# Variance of the Laplacian on the aligned 112x112 crop: a sharp frontal crop gives several
# hundred, one blurred by sigma 1 px ~40, a 40 px face upsampled to 112 ~30. 100 counts as sharp.
FULL_QUALITY_SHARPNESS = 100.0

# Frame signature: hue x saturation histogram plus a down-weighted value histogram, over a
# strided subsample of the frame (~3-4k pixels whatever the resolution).
_SIG_HUE_BINS = 16
_SIG_SAT_BINS = 4
_SIG_VAL_BINS = 4
_SIG_VAL_WEIGHT = 0.25  # brightness changes within a shot (flashes, exposure) should not look like cuts
_SIG_SAMPLES_SHORT_SIDE = 48
SIGNATURE_DIM = _SIG_HUE_BINS * _SIG_SAT_BINS + _SIG_VAL_BINS


# --- face quality ---------------------------------------------------------------------------


def crop_sharpness(crop_bgr: np.ndarray) -> float:
    """Variance of the Laplacian of the (aligned 112x112) crop: low for blurred or upsampled faces."""
    gray = cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2GRAY) if crop_bgr.ndim == 3 else crop_bgr
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def face_quality(
    face_px: float,
    det_score: float,
    sharpness: float,
    *,
    full_face_px: float = FULL_QUALITY_FACE_PX,
    full_sharpness: float = FULL_QUALITY_SHARPNESS,
) -> float:
    """Quality in [0, 1], non-decreasing in each input: size and sharpness ramps (saturating) times det score.

    A product, so a face that is small or blurred or barely detected counts little, whatever the rest.
    """
    size = min(max(face_px / full_face_px, 0.0), 1.0)
    sharp = min(max(sharpness / full_sharpness, 0.0), 1.0)
    det = min(max(det_score, 0.0), 1.0)
    return float(size * sharp * det)


# --- shot cuts --------------------------------------------------------------------------------


def frame_signature(image_bgr: np.ndarray) -> np.ndarray:
    """Colour signature of a frame: sqrt of a normalised HSV histogram, unit length (float32, 68 values).

    Histograms ignore where things are, so pans and motion within a shot barely move it; the
    square root makes the dot product of two signatures the Bhattacharyya coefficient.
    """
    h, w = image_bgr.shape[:2]
    step = max(1, min(h, w) // _SIG_SAMPLES_SHORT_SIDE)
    # Strided pixels instead of a resize: cost independent of the resolution, ~0.1 ms.
    sample = np.ascontiguousarray(image_bgr[step // 2 :: step, step // 2 :: step])
    hsv = cv2.cvtColor(sample, cv2.COLOR_BGR2HSV)
    hs = cv2.calcHist([hsv], [0, 1], None, [_SIG_HUE_BINS, _SIG_SAT_BINS], [0, 180, 0, 256]).ravel()
    val = cv2.calcHist([hsv], [2], None, [_SIG_VAL_BINS], [0, 256]).ravel()
    n = float(hsv.shape[0] * hsv.shape[1])
    hist = np.concatenate([hs / n, val * (_SIG_VAL_WEIGHT / n)])
    sig = np.sqrt(hist)
    return (sig / np.linalg.norm(sig)).astype(np.float32)


def signature_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Hellinger distance in [0, 1] between two frame signatures (0 = same histogram)."""
    return float(np.sqrt(max(0.0, 1.0 - float(np.dot(a, b)))))


def is_shot_cut(prev_sig: np.ndarray | None, sig: np.ndarray, threshold: float) -> bool:
    """True when the frame's signature is further than ``threshold`` from the previous one (none: no cut)."""
    return prev_sig is not None and signature_distance(prev_sig, sig) > threshold


# --- tracks -------------------------------------------------------------------------------------


def track_evidence(similarities: np.ndarray, qualities: np.ndarray, k: int) -> float:
    """Quality-weighted mean of the best ``k`` similarities of a track's faces to a query.

    The best faces decide (a track is mostly profiles and small faces that match nothing), and
    weighting by quality trusts a sharp frontal hit more than a lucky blurred one.
    """
    sims = np.asarray(similarities, dtype=np.float64).ravel()
    quals = np.asarray(qualities, dtype=np.float64).ravel()
    if sims.size == 0:
        raise ValueError("a track has at least one face")
    if sims.shape != quals.shape:
        raise ValueError(f"{sims.size} similarities but {quals.size} qualities")
    if k < 1:
        raise ValueError("k must be at least 1")
    best = np.argsort(-sims, kind="stable")[:k]
    weights = _weights(quals[best])
    return float(np.dot(weights, sims[best]) / weights.sum())


def _weights(qualities: np.ndarray) -> np.ndarray:
    # A tiny floor keeps all-zero qualities usable (plain mean) without changing real weights.
    return np.clip(qualities, 0.0, None) + 1e-6


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (T, 4) and (N, 4) x1, y1, x2, y2 boxes -> (T, N)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0.0, None) * np.clip(iy2 - iy1, 0.0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0.0, None) * np.clip(a[:, 3] - a[:, 1], 0.0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0.0, None) * np.clip(b[:, 3] - b[:, 1], 0.0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclass(frozen=True, eq=False)
class Track:
    """One person's consecutive faces in one shot of one video; members in time order.

    ``refs`` are the per-face references given to ``TrackLinker.add_frame`` (face ids), or the
    face's running index in the video when none were given. ``boxes`` are in source pixels.
    """

    media_key: str
    track_id: int
    refs: tuple[FaceRef, ...]
    timestamps: np.ndarray  # (n,) seconds
    boxes: np.ndarray  # (n, 4) x1, y1, x2, y2
    qualities: np.ndarray  # (n,) in [0, 1]
    vectors: np.ndarray  # (n, D) unit-norm member embeddings
    embedding: np.ndarray = field(init=False)  # (D,) quality-weighted mean, unit norm
    best_index: int = field(init=False)  # member with the highest quality (first on ties)

    def __post_init__(self) -> None:
        if not len(self.refs) == len(self.timestamps) == len(self.boxes) == len(self.qualities) == len(self.vectors):
            raise ValueError("track members disagree in length")
        if not self.refs:
            raise ValueError("a track has at least one face")
        mean = _weights(self.qualities.astype(np.float64)) @ self.vectors.astype(np.float64)
        norm = float(np.linalg.norm(mean))
        # Members that cancel out exactly cannot happen for linked faces; fall back to the best one.
        embedding = mean / norm if norm > 1e-9 else self.vectors[int(np.argmax(self.qualities))]
        object.__setattr__(self, "embedding", np.asarray(embedding, dtype=np.float32))
        object.__setattr__(self, "best_index", int(np.argmax(self.qualities)))

    @property
    def n_faces(self) -> int:
        return len(self.refs)

    @property
    def start_s(self) -> float:
        return float(self.timestamps[0])

    @property
    def end_s(self) -> float:
        return float(self.timestamps[-1])

    @property
    def best_ref(self) -> FaceRef:
        return self.refs[self.best_index]

    @property
    def best_quality(self) -> float:
        return float(self.qualities[self.best_index])

    def evidence(self, query: np.ndarray, k: int) -> float:
        """``track_evidence`` of this track's faces against a unit-norm query embedding."""
        return track_evidence(self.vectors @ np.asarray(query, dtype=self.vectors.dtype), self.qualities, k)


class _OpenTrack:
    """Mutable state of a track still being extended."""

    __slots__ = ("boxes", "qualities", "refs", "timestamps", "track_id", "vectors", "weighted_sum")

    def __init__(self, track_id: int) -> None:
        self.track_id = track_id
        self.refs: list[FaceRef] = []
        self.timestamps: list[float] = []
        self.boxes: list[np.ndarray] = []
        self.qualities: list[float] = []
        self.vectors: list[np.ndarray] = []
        self.weighted_sum: np.ndarray | None = None

    def add(self, ref: FaceRef, t: float, box: np.ndarray, quality: float, vector: np.ndarray) -> None:
        self.refs.append(ref)
        self.timestamps.append(t)
        self.boxes.append(box)
        self.qualities.append(quality)
        self.vectors.append(vector)
        w = vector.astype(np.float64) * (max(quality, 0.0) + 1e-6)
        self.weighted_sum = w if self.weighted_sum is None else self.weighted_sum + w

    def predicted_box(self, t: float) -> np.ndarray:
        """Last box moved at the centre velocity of the last two members (size kept: zoom is slow, size noisy)."""
        last = self.boxes[-1]
        if len(self.boxes) < 2:
            return last
        dt = self.timestamps[-1] - self.timestamps[-2]
        shift = ((last[:2] + last[2:]) - (self.boxes[-2][:2] + self.boxes[-2][2:])) / 2.0 / dt
        offset = shift * (t - self.timestamps[-1])
        return last + np.concatenate([offset, offset])

    def mean_vector(self) -> np.ndarray:
        assert self.weighted_sum is not None
        norm = float(np.linalg.norm(self.weighted_sum))
        return self.weighted_sum / norm if norm > 1e-9 else self.vectors[-1].astype(np.float64)

    def close(self, media_key: str) -> Track:
        return Track(
            media_key=media_key,
            track_id=self.track_id,
            refs=tuple(self.refs),
            timestamps=np.asarray(self.timestamps, dtype=np.float64),
            boxes=np.stack(self.boxes).astype(np.float32),
            qualities=np.asarray(self.qualities, dtype=np.float32),
            vectors=np.stack(self.vectors).astype(np.float32),
        )


class TrackLinker:
    """Streaming face-track linker for one video: feed every sampled frame in time order.

    Feed frames without faces too (empty arrays) so gaps and cuts are seen. Per frame the cost is
    O(open tracks x faces) plus sorting the admissible pairs.
    """

    def __init__(self, settings: TrackSettings, media_key: str) -> None:
        self.settings = settings
        self.media_key = media_key
        self._open: list[_OpenTrack] = []
        self._closed: list[Track] = []
        self._next_id = 0
        self._next_face = 0
        self._last_t: float | None = None
        self._dim: int | None = None
        self._finished = False

    @property
    def open_tracks(self) -> int:
        return len(self._open)

    def add_frame(
        self,
        timestamp_s: float,
        boxes: np.ndarray,
        vectors: np.ndarray,
        qualities: np.ndarray,
        cut: bool = False,
        face_refs: list[FaceRef] | None = None,
    ) -> np.ndarray:
        """Link this frame's faces; returns each face's track id (int64, in input order)."""
        if self._finished:
            raise RuntimeError("add_frame after finish")
        t = float(timestamp_s)
        if self._last_t is not None and not t > self._last_t:
            raise ValueError(f"frames must be fed in increasing time order: {t} after {self._last_t}")
        boxes_a, vectors_a, qualities_a, refs = self._validate(boxes, vectors, qualities, face_refs)
        self._last_t = t

        # Close what can no longer be extended before linking, so nothing links across a cut or a gap.
        if cut:
            self._close([True] * len(self._open))
        else:
            self._close([t - tr.timestamps[-1] > self.settings.max_gap_s for tr in self._open])

        n = len(boxes_a)
        ids = np.full(n, -1, dtype=np.int64)
        if n == 0:
            return ids
        for ti, fi in self._assign(t, boxes_a, vectors_a):
            track = self._open[ti]
            track.add(refs[fi], t, boxes_a[fi], float(qualities_a[fi]), vectors_a[fi])
            ids[fi] = track.track_id
        for fi in np.flatnonzero(ids < 0):
            track = _OpenTrack(self._next_id)
            self._next_id += 1
            track.add(refs[fi], t, boxes_a[fi], float(qualities_a[fi]), vectors_a[fi])
            self._open.append(track)
            ids[fi] = track.track_id
        return ids

    def pop_closed(self) -> list[Track]:
        """Tracks closed since the last call (by cuts and gaps), in closing order; they will not change."""
        closed, self._closed = self._closed, []
        return closed

    def finish(self) -> list[Track]:
        """Close every open track; returns all tracks not yet returned by ``pop_closed``."""
        self._close([True] * len(self._open))
        self._finished = True
        return self.pop_closed()

    def _validate(
        self, boxes: np.ndarray, vectors: np.ndarray, qualities: np.ndarray, face_refs: list[FaceRef] | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[FaceRef]]:
        boxes_a = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        n = len(boxes_a)
        qualities_a = np.asarray(qualities, dtype=np.float64).ravel()
        vectors_a = np.asarray(vectors, dtype=np.float32)
        if n == 0:
            vectors_a = vectors_a.reshape(0, self._dim or 0)
        elif vectors_a.ndim != 2 or len(vectors_a) != n:
            raise ValueError(f"expected ({n}, D) vectors, got {vectors_a.shape}")
        if len(qualities_a) != n:
            raise ValueError(f"expected {n} qualities, got {len(qualities_a)}")
        if n:
            if self._dim is None:
                self._dim = vectors_a.shape[1]
            elif vectors_a.shape[1] != self._dim:
                raise ValueError(f"vector dimension changed from {self._dim} to {vectors_a.shape[1]}")
        if face_refs is None:
            refs: list[FaceRef] = list(range(self._next_face, self._next_face + n))
        else:
            refs = list(face_refs)
            if len(refs) != n:
                raise ValueError(f"expected {n} face refs, got {len(refs)}")
        self._next_face += n
        return boxes_a, vectors_a, qualities_a, refs

    def _close(self, which: list[bool]) -> None:
        keep: list[_OpenTrack] = []
        closing: list[_OpenTrack] = []
        for track, close in zip(self._open, which, strict=True):
            (closing if close else keep).append(track)
        self._open = keep
        self._closed.extend(track.close(self.media_key) for track in sorted(closing, key=lambda tr: tr.track_id))

    def _assign(self, t: float, boxes: np.ndarray, vectors: np.ndarray) -> list[tuple[int, int]]:
        """Greedy 1:1 assignment of faces to open tracks by link score among admissible pairs."""
        if not self._open:
            return []
        s = self.settings
        last = np.stack([tr.boxes[-1] for tr in self._open])
        pred = np.stack([tr.predicted_box(t) for tr in self._open])
        # The gate takes the better of predicted and last box (a person who just stopped makes the
        # 2 fps velocity overshoot); the score uses the prediction, which tells crossing people apart.
        iou_pred = box_iou(pred, boxes)
        iou = np.maximum(iou_pred, box_iou(last, boxes))

        recent = np.stack([tr.vectors[-1] for tr in self._open]).astype(np.float64)
        mean = np.stack([tr.mean_vector() for tr in self._open])
        v = vectors.astype(np.float64)
        # Recent face follows a head turning away; the mean brings it back after a noisy frame.
        sim = np.maximum(recent @ v.T, mean @ v.T)

        centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0
        dist = np.minimum(
            np.linalg.norm((pred[:, None, :2] + pred[:, None, 2:]) / 2.0 - centres[None], axis=2),
            np.linalg.norm((last[:, None, :2] + last[:, None, 2:]) / 2.0 - centres[None], axis=2),
        )
        size = np.sqrt(np.clip(last[:, 2] - last[:, 0], 1.0, None) * np.clip(last[:, 3] - last[:, 1], 1.0, None))

        overlap_link = (iou >= s.min_iou) & (sim >= s.min_link_similarity)
        identity_link = (sim >= s.strong_link_similarity) & (dist <= s.max_center_jump * size[:, None])
        score = np.where(overlap_link | identity_link, sim + s.iou_weight * iou_pred, -np.inf)

        pairs: list[tuple[int, int]] = []
        used_t: set[int] = set()
        used_f: set[int] = set()
        flat = np.flatnonzero(np.isfinite(score))
        for idx in flat[np.argsort(-score.ravel()[flat], kind="stable")]:
            ti, fi = divmod(int(idx), score.shape[1])
            if ti in used_t or fi in used_f:
                continue
            used_t.add(ti)
            used_f.add(fi)
            pairs.append((ti, fi))
        return pairs
