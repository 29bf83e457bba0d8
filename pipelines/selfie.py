"""Turn a query photo (a selfie) into one embedding."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from pipelines.models.base import Detections, ModelPack, filter_detections


class NoFaceFound(ValueError):
    pass


@dataclass(frozen=True)
class SelfieEmbedding:
    vector: np.ndarray  # (dim,) unit norm
    bbox: tuple[float, float, float, float]
    det_score: float
    faces_found: int


def pick_main_face(dets: Detections) -> int:
    """Index of the face to search with: the largest, weighted by detector confidence."""
    areas = (dets.boxes[:, 2] - dets.boxes[:, 0]) * (dets.boxes[:, 3] - dets.boxes[:, 1])
    return int(np.argmax(areas * dets.scores))


def decode_image_bytes(data: bytes) -> np.ndarray:
    """JPEG/PNG bytes -> BGR uint8 with EXIF orientation applied (raises on anything else)."""
    with Image.open(io.BytesIO(data)) as img:
        if img.format not in ("JPEG", "PNG", "MPO"):
            raise ValueError(f"unsupported image format {img.format!r}; send a JPEG or PNG")
        img = ImageOps.exif_transpose(img).convert("RGB")
        return np.ascontiguousarray(np.asarray(img)[:, :, ::-1])


def embed_selfie(pack: ModelPack, image_bgr: np.ndarray, min_score: float, min_face_px: float) -> SelfieEmbedding:
    dets = filter_detections(pack.detector.detect(image_bgr), min_score, min_face_px)
    if not len(dets):
        raise NoFaceFound("no face found in the image")
    best = pick_main_face(dets)
    crop = pack.align(image_bgr, dets.landmarks[best])
    vector = pack.embedder.embed(crop[None])[0]
    return SelfieEmbedding(vector, tuple(float(v) for v in dets.boxes[best]), float(dets.scores[best]), len(dets))
