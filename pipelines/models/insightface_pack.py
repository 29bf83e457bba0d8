"""InsightFace packs (SCRFD detector + ArcFace embedder) read from a models directory.

InsightFace's pretrained weights are licensed for non-commercial research only; check
that licence before using these packs in a product. Nothing is ever downloaded: the
files must already be in ``<insightface_root>/<pack>/``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.models.base import Detections, ModelPack, PackInfo, l2_normalize
from pipelines.runtime import resolve_providers

# pack -> (detector file, recognition file). Thresholds are ArcFace-typical, unmeasured here.
KNOWN_PACKS: dict[str, tuple[str, str]] = {
    "buffalo_l": ("det_10g.onnx", "w600k_r50.onnx"),
    "buffalo_m": ("det_2.5g.onnx", "w600k_r50.onnx"),
    "buffalo_s": ("det_500m.onnx", "w600k_mbf.onnx"),
    "antelopev2": ("scrfd_10g_bnkps.onnx", "glintr100.onnx"),
}
ARCFACE_THRESHOLD = 0.35
LICENCE = "InsightFace pretrained weights: non-commercial research only"


class PackFilesMissing(FileNotFoundError):
    pass


def pack_files(root: str | Path, pack: str) -> tuple[Path, Path]:
    """The detector and recognition ONNX files of ``pack``, or a clear error saying what is missing."""
    if pack not in KNOWN_PACKS:
        raise ValueError(f"unknown InsightFace pack {pack!r}; known: {sorted(KNOWN_PACKS)}")
    pack_dir = Path(root).expanduser() / pack
    det, rec = (pack_dir / name for name in KNOWN_PACKS[pack])
    missing = [str(p) for p in (det, rec) if not p.is_file()]
    if missing:
        raise PackFilesMissing(
            f"model pack {pack!r} needs {', '.join(missing)}. facereel never downloads weights: "
            f"place the pack's ONNX files in {pack_dir} (or set models.insightface_root). "
            f"Note: {LICENCE}."
        )
    return det, rec


def info(pack: str) -> PackInfo:
    dim = 512
    return PackInfo(
        name=pack,
        version=f"insightface/{'+'.join(KNOWN_PACKS[pack])}",
        dim=dim,
        threshold=ARCFACE_THRESHOLD,
        licence=LICENCE,
    )


class SCRFDDetector:
    def __init__(self, model, det_size: int) -> None:
        self.model = model
        self.det_size = det_size

    def detect(self, image_bgr: np.ndarray) -> Detections:
        boxes, kps = self.model.detect(image_bgr, input_size=(self.det_size, self.det_size), max_num=0)
        if boxes is None or len(boxes) == 0:
            return Detections.empty()
        return Detections(boxes[:, :4].astype(np.float32), kps.astype(np.float32), boxes[:, 4].astype(np.float32))


class ArcFaceEmbedder:
    def __init__(self, model) -> None:
        self.model = model
        self.dim = int(model.session.get_outputs()[0].shape[-1])

    def embed(self, crops_bgr: np.ndarray) -> np.ndarray:
        if len(crops_bgr) == 0:
            return np.zeros((0, self.dim), np.float32)
        return l2_normalize(self.model.get_feat(list(crops_bgr)))


def load(pack: str, models_cfg) -> ModelPack:  # models_cfg: pipelines.config.ModelSettings
    from insightface.model_zoo import model_zoo

    det_file, rec_file = pack_files(models_cfg.insightface_root, pack)
    providers = resolve_providers(models_cfg.providers)
    ctx_id = 0 if providers[0] == "CUDAExecutionProvider" else -1
    det = model_zoo.get_model(str(det_file), providers=providers, download=False)
    det.prepare(
        ctx_id,
        input_size=(models_cfg.det_size, models_cfg.det_size),
        det_thresh=models_cfg.det_score_threshold,
        nms_thresh=models_cfg.det_nms_threshold,
    )
    rec = model_zoo.get_model(str(rec_file), providers=providers, download=False)
    rec.prepare(ctx_id)
    return ModelPack(info(pack), SCRFDDetector(det, models_cfg.det_size), ArcFaceEmbedder(rec))
