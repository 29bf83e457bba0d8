"""Video frames and face crops for the notebooks' contact sheets, and the faces indexing drops
(the detector rerun with relaxed filters on sampled frames)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from pipelines.calibration.events import EventIndex
from pipelines.calibration.photos import PhotoEmbedding, read_photo
from pipelines.calibration.video_scores import FaceScore
from pipelines.models import load_pack


def read_frames(uri: str, times: Iterable[float], storage_options: dict | None = None) -> dict[float, np.ndarray]:
    """BGR frames of a video at the given presentation times (the frame nearest each time,
    within half a frame; times of indexed faces are exact frame times). One sequential
    decode from a seek before the first time."""
    import av

    from pipelines.media import open_binary

    wanted = sorted(set(float(t) for t in times))
    out: dict[float, np.ndarray] = {}
    if not wanted:
        return out
    with open_binary(uri, storage_options) as fh, av.open(fh) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
        half = 0.5 / fps
        if stream.time_base is not None and wanted[0] > 1.0:
            container.seek(int((wanted[0] - 1.0) / float(stream.time_base)), stream=stream, backward=True)
        i = 0
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            t = float(frame.time)
            while i < len(wanted) and t > wanted[i] + half:
                i += 1  # passed without a frame close enough
            if i >= len(wanted):
                break
            if abs(t - wanted[i]) <= half:
                image = frame.to_ndarray(format="bgr24")
                while i < len(wanted) and abs(t - wanted[i]) <= half:
                    out[wanted[i]] = image
                    i += 1
    return out


def crop_face(image: np.ndarray, bbox: Sequence[float], pad: float = 0.25, size: int = 112) -> np.ndarray:
    """A square crop around the box (``pad`` of its longer side on each side), ``size`` px,
    grey where it leaves the image. Pure."""
    import cv2

    x1, y1, x2, y2 = (float(v) for v in bbox)
    side = max(x2 - x1, y2 - y1) * (1 + 2 * pad)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    n = max(1, round(side))
    canvas = np.full((n, n, 3), 128, np.uint8)
    h, w = image.shape[:2]
    sx1, sy1, sx2, sy2 = max(0, left), max(0, top), min(w, left + n), min(h, top + n)
    if sx2 > sx1 and sy2 > sy1:
        canvas[sy1 - top : sy2 - top, sx1 - left : sx2 - left] = image[sy1:sy2, sx1:sx2]
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA if n > size else cv2.INTER_LINEAR)


def video_crops(
    event: EventIndex, records: Sequence[FaceScore], pad: float = 0.25, size: int = 112
) -> list[np.ndarray | None]:
    """A crop per scored video face, cut from the frame decoded at its time (None when the
    media is gone)."""
    sources = event.sources()
    by_key: dict[str, list[float]] = defaultdict(list)
    for r in records:
        by_key[r.media_key].append(r.timestamp_s)
    frames = {
        key: read_frames(sources[key], times, event.settings.store.storage_options or None)
        for key, times in by_key.items()
        if key in sources
    }
    out: list[np.ndarray | None] = []
    for r in records:
        image = frames.get(r.media_key, {}).get(r.timestamp_s)
        out.append(None if image is None else crop_face(image, r.bbox, pad, size))
    return out


def photo_crop(photo: PhotoEmbedding, pad: float = 0.25, size: int = 112) -> np.ndarray:
    return crop_face(read_photo(photo.path), photo.bbox, pad, size)


# ================================================================================ dropped faces


@dataclass(frozen=True)
class DroppedFace:
    """A face the detector finds with relaxed filters that indexing drops."""

    media_key: str
    timestamp_s: float
    bbox: tuple[float, float, float, float]
    det_score: float
    face_px: float
    reason: str  # "small", "low score" or "small, low score"
    crop: np.ndarray


def sample_times(start_s: float, end_s: float, count: int) -> list[float]:
    """``count`` times spread evenly inside [start, end) (not at the very end). Pure."""
    if count <= 0 or end_s <= start_s:
        return []
    step = (end_s - start_s) / count
    return [start_s + (i + 0.5) * step for i in range(count)]


def dropped_faces(
    event: EventIndex,
    frames_per_video: int = 4,
    relaxed_score: float = 0.3,
    pad: float = 0.25,
    size: int = 112,
) -> tuple[list[DroppedFace], int]:
    """Re-runs the detector on a few sampled frames per video with the filters relaxed
    (score down to ``relaxed_score``, no minimum size) and returns what the pack's filters
    (``models.det_score_threshold``, ``models.min_face_px``) drop, with crops; plus the number
    of faces kept on those frames. Detection runs as indexing does (``models.detect_mode``)."""
    from pipelines.detect import detect_faces
    from pipelines.models.base import filter_detections

    models = event.settings.models
    relaxed = load_pack(models.model_copy(update={"det_score_threshold": relaxed_score}))
    out: list[DroppedFace] = []
    kept = 0
    bounds = event.bounds()
    for key, uri in sorted(event.sources().items()):
        media = event.store.media_row(event.org_id, event.event_id, key)
        if not media or media["media_type"] != "video":
            continue
        start, end = bounds.get(key, (0.0, 0.0))
        for t, image in sorted(read_frames(uri, sample_times(start, end, frames_per_video)).items()):
            found = detect_faces(relaxed.detector, image, models.detect_mode, models.det_size)
            keep = filter_detections(found, models.det_score_threshold, models.min_face_px)
            kept += len(keep)
            for box, score in zip(found.boxes, found.scores, strict=True):
                side = float(min(box[2] - box[0], box[3] - box[1]))
                why = [n for n, bad in (("small", side < models.min_face_px), ("low score", score < models.det_score_threshold)) if bad]  # fmt: skip
                if why:
                    bbox = tuple(float(v) for v in box)
                    out.append(
                        DroppedFace(key, t, bbox, float(score), side, ", ".join(why), crop_face(image, bbox, pad, size))
                    )
    return out, kept
