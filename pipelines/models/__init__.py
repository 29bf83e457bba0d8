"""Model packs: a face detector plus an embedder, with the pack's own match threshold."""

from pipelines.models.base import Detections, ModelPack, PackInfo
from pipelines.models.registry import load_pack, pack_info

__all__ = ["Detections", "ModelPack", "PackInfo", "load_pack", "pack_info"]
