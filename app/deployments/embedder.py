"""SelfieEmbedder: holds the model pack; turns uploaded image bytes into one embedding."""

from __future__ import annotations

import asyncio
import logging

from ray import serve

from pipelines.config import Settings

log = logging.getLogger(__name__)


# Defaults match serve_config.yaml, so the Python entry point schedules the same way.
@serve.deployment(
    name="SelfieEmbedder", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=8, max_queued_requests=16
)
class SelfieEmbedder:
    def __init__(self, settings: Settings) -> None:
        from pipelines.models import load_pack

        self.settings = settings  # built by the driver; never re-read from this replica's env
        self.pack = load_pack(self.settings.models)
        warm_up(self.pack)

    def _embed(self, data: bytes) -> dict:
        from pipelines.selfie import NoFaceFound, decode_image_bytes, embed_selfie

        try:
            image = decode_image_bytes(data)
        except Exception as exc:
            return {
                "ok": False,
                "code": "invalid_image",
                "message": f"the file is not a readable JPEG or PNG image ({exc})",
            }
        try:
            models = self.settings.models
            query = embed_selfie(self.pack, image, models.det_score_threshold, models.min_face_px, self.settings.selfie)
        except NoFaceFound:
            return {
                "ok": False,
                "code": "no_face",
                "message": "no face was found in the selfie; upload a clear photo of one face",
            }
        return {
            "ok": True,
            "vector": query.vector,
            "model_pack": self.pack.info.name,
            "selfie": {
                "bbox": [round(v, 1) for v in query.bbox],
                "det_score": round(query.det_score, 4),
                "faces_found": query.faces_found,
                "attempt": query.attempt,  # how the face was found: as-is, padded, tiled, rotated-90, ...
            },
        }

    async def embed(self, data: bytes) -> dict:
        # Inference is synchronous; keep the replica's event loop free for other requests.
        return await asyncio.to_thread(self._embed, data)


def warm_up(pack) -> None:
    """One run of each model before the replica is ready: onnxruntime sizes its buffers on
    the first run, which would otherwise be the first selfie's."""
    import numpy as np

    from pipelines.models.base import ALIGNED_SIZE

    pack.detector.detect(np.zeros((480, 640, 3), np.uint8))
    pack.embedder.embed(np.zeros((1, ALIGNED_SIZE, ALIGNED_SIZE, 3), np.uint8))
