"""onnxruntime session creation: providers, threads, CUDA fallback, in one place."""

from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger(__name__)


def resolve_providers(choice: str) -> list[str]:
    """Execution providers for ``choice`` ("auto", "cpu" or "cuda"), CPU always last."""
    available = ort.get_available_providers()
    if choice == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if choice == "cuda":
        raise RuntimeError(
            "providers=cuda but onnxruntime has no CUDAExecutionProvider "
            f"(available: {available}); install the 'gpu' extra (onnxruntime-gpu)"
        )
    return ["CPUExecutionProvider"]


def create_session(model_path: str | Path, providers: str = "auto", threads: int = 1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), sess_options=opts, providers=resolve_providers(providers))
    log.debug("loaded %s with %s", model_path, session.get_providers())
    return session
