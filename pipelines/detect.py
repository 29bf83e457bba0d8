"""Face detection at a chosen resolution: the scaled frame, the source frame, or tiles.

The pack's detector letterboxes every frame so its longest side is ``det_size`` (640 by
default). On 720p/1080p wide shots that shrinks small faces below what the detector finds
(~10 px at its input). The modes:

  scaled  today's behaviour: the detector as configured.
  source  one detector pass at the frame's own resolution (never below ``det_size``, so
          frames smaller than ``det_size`` are still upscaled as today).
  tiles   the scaled pass PLUS det_size x det_size tiles cut at source resolution, with
          overlap; tile detections are mapped back to frame coordinates and merged with
          the scaled ones by NMS (the higher score wins).
  scaled+source
          the scaled pass PLUS the source pass, merged the same way. YuNet at source
          resolution misses some 40-190 px faces that the scaled pass finds (measured on
          the dev footage), so "source" alone is not a superset of "scaled"; this is, at the
          cost of both passes (still cheaper than tiles, whose overlaps and square tiles
          feed the detector more pixels than the frame has).

The extra modes reuse the pack's ONNX session (``detector_at`` copies the detector object
with another ``det_size``), so no second model is loaded (SCRFD packs letterbox to a square,
so their source pass costs more than YuNet's). No Ray here: callers decide where
this runs.
"""

from __future__ import annotations

import copy
import math
from typing import Literal, get_args

import numpy as np

from pipelines.models.base import Detections, Detector

DetectMode = Literal["scaled", "source", "tiles", "scaled+source"]
DETECT_MODES: tuple[str, ...] = get_args(DetectMode)
MERGE_IOU = 0.35
# A tile detection this close (px) to an edge shared with another tile is a cut face: the
# overlapping tile (faces up to the overlap width) or the scaled pass (bigger faces) has it whole.
EDGE_MARGIN_PX = 2.0

Tile = tuple[int, int, int, int]  # x1, y1, x2, y2 in frame pixels, end exclusive


# --- pure helpers -------------------------------------------------------------------------------


def plan_axis(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of tiles of ``tile`` px covering ``length`` px, neighbours sharing >= ``overlap``.

    Starts are spread evenly from 0 to ``length - tile``, so the real overlap is at least the
    requested one and the last tile ends exactly at the border.
    """
    if tile <= 0:
        raise ValueError("tile must be positive")
    if not 0.0 <= overlap < 1.0:
        raise ValueError("overlap must be in [0, 1)")
    if length <= tile:
        return [0]
    stride = tile * (1.0 - overlap)
    count = math.ceil((length - tile) / stride - 1e-9) + 1
    span = length - tile
    return [round(i * span / (count - 1)) for i in range(count)]


def plan_tiles(width: int, height: int, tile: int, overlap: float) -> list[Tile]:
    """Tiles (x1, y1, x2, y2) covering a width x height frame, row by row."""
    xs, ys = plan_axis(width, tile, overlap), plan_axis(height, tile, overlap)
    return [(x, y, min(x + tile, width), min(y + tile, height)) for y in ys for x in xs]


def offset_detections(dets: Detections, dx: float, dy: float) -> Detections:
    """Detections found in a crop, moved into the coordinates of the frame it was cut from."""
    if not len(dets):
        return dets
    shift = np.array([dx, dy], np.float32)
    return Detections(
        (dets.boxes + np.tile(shift, 2)).astype(np.float32),
        (dets.landmarks + shift).astype(np.float32),
        dets.scores.astype(np.float32),
    )


def drop_cut_faces(dets: Detections, tile: Tile, width: int, height: int, margin: float = EDGE_MARGIN_PX) -> Detections:
    """Drop detections (frame coordinates) touching an edge of ``tile`` that is inside the frame."""
    if not len(dets):
        return dets
    x1, y1, x2, y2 = tile
    b = dets.boxes
    cut = np.zeros(len(dets), bool)
    if x1 > 0:
        cut |= b[:, 0] <= x1 + margin
    if y1 > 0:
        cut |= b[:, 1] <= y1 + margin
    if x2 < width:
        cut |= b[:, 2] >= x2 - margin
    if y2 < height:
        cut |= b[:, 3] >= y2 - margin
    return dets.select(~cut)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (4,) x1y1x2y2 box with each of (N, 4) boxes."""
    ix1 = np.maximum(box[0], boxes[:, 0])
    iy1 = np.maximum(box[1], boxes[:, 1])
    ix2 = np.minimum(box[2], boxes[:, 2])
    iy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def concat_detections(parts: list[Detections]) -> Detections:
    parts = [p for p in parts if len(p)]
    if not parts:
        return Detections.empty()
    return Detections(
        np.concatenate([p.boxes for p in parts]).astype(np.float32),
        np.concatenate([p.landmarks for p in parts]).astype(np.float32),
        np.concatenate([p.scores for p in parts]).astype(np.float32),
    )


def nms_merge(parts: list[Detections], iou_threshold: float = MERGE_IOU) -> Detections:
    """Union of detections from several passes, greedy NMS keeping the higher score.

    Ties keep the earlier part (pass the scaled pass first), so the result is deterministic.
    """
    dets = concat_detections(parts)
    if not len(dets):
        return dets
    order = np.argsort(-dets.scores, kind="stable")
    keep: list[int] = []
    alive = np.ones(len(dets), bool)
    for i in order:
        if not alive[i]:
            continue
        keep.append(int(i))
        alive &= box_iou(dets.boxes[i], dets.boxes) <= iou_threshold
    return dets.select(np.asarray(keep, np.int64))


# --- detection ----------------------------------------------------------------------------------


def detector_at(detector: Detector, det_size: int) -> Detector:
    """The same detector with another input size; the ONNX session is shared, nothing reloads.

    Works for packs whose detector reads ``self.det_size`` at call time (YuNet, SCRFD); their
    ONNX graphs take a dynamic input size.
    """
    if not hasattr(detector, "det_size"):
        raise TypeError(f"{type(detector).__name__} has no det_size; cannot run it at another size")
    if detector.det_size == det_size:
        return detector
    other = copy.copy(detector)
    other.det_size = det_size
    return other


def detect_faces(
    detector: Detector,
    image_bgr: np.ndarray,
    mode: str,
    det_size: int,
    tile_overlap: float = 0.2,
) -> Detections:
    """Faces in one BGR frame, in frame pixels, found the way ``mode`` says (see module doc).

    ``det_size`` is the scaled pass's longest side and the tile side. Frames no larger than
    ``det_size`` get the scaled pass in every mode: more pixels than the frame has do not exist.
    """
    if mode not in DETECT_MODES:
        raise ValueError(f"unknown detect mode {mode!r}; expected one of {DETECT_MODES}")
    h, w = image_bgr.shape[:2]
    scaled = detector_at(detector, det_size)
    if mode == "scaled" or max(h, w) <= det_size:
        return scaled.detect(image_bgr)
    if mode == "source":
        return detector_at(detector, max(h, w)).detect(image_bgr)
    if mode == "scaled+source":
        return nms_merge([scaled.detect(image_bgr), detector_at(detector, max(h, w)).detect(image_bgr)])
    parts = [scaled.detect(image_bgr)]  # first: wins score ties, and holds the faces too big for a tile
    for tile in plan_tiles(w, h, det_size, tile_overlap):
        x1, y1, x2, y2 = tile
        # A tile's longest side is det_size (the frame's longest side exceeds it), so the
        # scaled detector feeds it 1:1: source resolution.
        found = scaled.detect(image_bgr[y1:y2, x1:x2])
        parts.append(drop_cut_faces(offset_detections(found, x1, y1), tile, w, h))
    return nms_merge(parts)
