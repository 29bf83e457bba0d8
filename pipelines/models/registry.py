"""Pick a model pack by name."""

from __future__ import annotations

from pipelines.models import insightface_pack, yunet_sface
from pipelines.models.base import ModelPack, PackInfo


def pack_info(name: str) -> PackInfo:
    """Name, version, dimension and default threshold, without loading any model."""
    if name == yunet_sface.INFO.name:
        return yunet_sface.INFO
    if name in insightface_pack.KNOWN_PACKS:
        return insightface_pack.info(name)
    raise ValueError(f"unknown model pack {name!r}; known: {available_packs()}")


def available_packs() -> list[str]:
    return [yunet_sface.INFO.name, *sorted(insightface_pack.KNOWN_PACKS)]


def load_pack(models_cfg) -> ModelPack:  # models_cfg: pipelines.config.ModelSettings
    name = models_cfg.pack
    pack_info(name)  # validates the name first
    if name == yunet_sface.INFO.name:
        return yunet_sface.load(models_cfg)
    return insightface_pack.load(name, models_cfg)


def match_threshold(models_cfg) -> float:
    """The configured threshold, or the pack's own default."""
    if models_cfg.match_threshold is not None:
        return float(models_cfg.match_threshold)
    return pack_info(models_cfg.pack).threshold
