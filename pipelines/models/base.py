"""The model-pack contract: what every detector and embedder provides."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
from insightface.utils import face_align

ALIGNED_SIZE = 112

# norm_crop calls a scikit-image API deprecated in 0.26; harmless, and noisy per face.
warnings.filterwarnings("ignore", message=".*`estimate` is deprecated.*", category=FutureWarning)


class Detections(NamedTuple):
    """Faces found in one image, in source-pixel coordinates (BGR input)."""

    boxes: np.ndarray  # (N, 4) float32 x1, y1, x2, y2
    landmarks: np.ndarray  # (N, 5, 2) float32: eyes, nose, mouth corners
    scores: np.ndarray  # (N,) float32

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), np.zeros((0,), np.float32))

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.scores.shape[0])

    def select(self, keep: np.ndarray) -> Detections:
        return Detections(self.boxes[keep], self.landmarks[keep], self.scores[keep])


class Detector(Protocol):
    def detect(self, image_bgr: np.ndarray) -> Detections: ...


class Embedder(Protocol):
    dim: int

    def embed(self, crops_bgr: np.ndarray) -> np.ndarray:
        """(N, 112, 112, 3) uint8 BGR aligned crops -> (N, dim) unit-norm float32."""
        ...


@dataclass(frozen=True)
class PackInfo:
    """What is stored with every embedding; searching requires the same name and version."""

    name: str
    version: str
    dim: int
    threshold: float  # default cosine similarity threshold for 1:N search
    licence: str


@dataclass
class ModelPack:
    info: PackInfo
    detector: Detector
    embedder: Embedder

    def align(self, image_bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """112x112 crop aligned to the ArcFace reference points from 5 landmarks."""
        return face_align.norm_crop(image_bgr, landmarks.astype(np.float32), image_size=ALIGNED_SIZE)

    def align_all(self, image_bgr: np.ndarray, dets: Detections) -> np.ndarray:
        if not len(dets):
            return np.zeros((0, ALIGNED_SIZE, ALIGNED_SIZE, 3), np.uint8)
        return np.stack([self.align(image_bgr, lm) for lm in dets.landmarks])


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def filter_detections(dets: Detections, min_score: float, min_face_px: float) -> Detections:
    """Drop low-confidence detections and faces too small to embed reliably."""
    if not len(dets):
        return dets
    sides = np.minimum(dets.boxes[:, 2] - dets.boxes[:, 0], dets.boxes[:, 3] - dets.boxes[:, 1])
    return dets.select((dets.scores >= min_score) & (sides >= min_face_px))
