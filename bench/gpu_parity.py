"""The model pack on CUDA against the same pack on CPU: same faces, same embeddings, and
how fast each runs. Part of scripts/gpu-check.sh (run it there, on a machine with a GPU).

    python bench/gpu_parity.py --pack yunet-sface --frames 200 --out bench-out/gpu

Inputs are the real photos that ship with InsightFace (t1.jpg: six people, and the other
sample images), resized to 1280x720 frames. For each provider (``cpu``, ``cuda``) the pack
is loaded through pipelines.models.load_pack with ``models.providers`` set, warmed up, then
timed over ``--frames`` frames: detection, then the embedding of every face found.

Checks (exit status 1 when one fails): CUDA is really the first provider of the CUDA run;
both runs find the same number of faces per image; boxes agree within 2 px; embeddings of
matched faces have cosine similarity >= 0.999.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def sample_frames(size: tuple[int, int] = (1280, 720)) -> list[np.ndarray]:
    import cv2

    from pipelines.synthetic import insightface_image, read_bgr

    frames = []
    for name in ("t1.jpg", "mask_white.jpg", "Tom_Hanks_54745.png"):
        try:
            frames.append(cv2.resize(read_bgr(insightface_image(name)), size))
        except (FileNotFoundError, OSError, ValueError):
            continue
    if not frames:
        raise SystemExit("no InsightFace sample images found")
    return frames


def run(provider: str, pack: str, frames: list[np.ndarray], n: int) -> dict:
    from pipelines.config import load_settings
    from pipelines.models import load_pack
    from pipelines.runtime import resolve_providers

    settings = load_settings()
    models = settings.models.model_copy(update={"pack": pack, "providers": provider})
    loaded = load_pack(models)
    faces = []
    for frame in frames:  # warm-up, and the outputs compared
        det = loaded.detector.detect(frame)
        faces.append({"boxes": det.boxes, "vectors": loaded.embedder.embed(loaded.align_all(frame, det))})
    t = time.perf_counter()
    found = 0
    for i in range(n):
        frame = frames[i % len(frames)]
        det = loaded.detector.detect(frame)
        loaded.embedder.embed(loaded.align_all(frame, det))
        found += len(det.boxes)
    seconds = time.perf_counter() - t
    return {
        "provider": provider,
        "providers": resolve_providers(provider),
        "frames_per_s": round(n / seconds, 1),
        "faces_per_s": round(found / seconds, 1),
        "faces": faces,
    }


def compare(cpu: list[dict], gpu: list[dict]) -> list[str]:
    problems = []
    for i, (a, b) in enumerate(zip(cpu, gpu, strict=True)):
        if len(a["boxes"]) != len(b["boxes"]):
            problems.append(f"image {i}: {len(a['boxes'])} faces on CPU, {len(b['boxes'])} on CUDA")
            continue
        if not len(a["boxes"]):
            continue
        order = [int(np.argmin(np.abs(b["boxes"] - box).sum(axis=1))) for box in a["boxes"]]
        shift = float(np.abs(b["boxes"][order] - a["boxes"]).max())
        if shift > 2.0:
            problems.append(f"image {i}: boxes differ by up to {shift:.1f} px")
        cos = (a["vectors"] * b["vectors"][order]).sum(axis=1)
        if float(cos.min()) < 0.999:
            problems.append(f"image {i}: embedding cosine down to {float(cos.min()):.4f}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pack", default="yunet-sface")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("bench-out/gpu"))
    args = parser.parse_args(argv)
    frames = sample_frames()
    cpu = run("cpu", args.pack, frames, args.frames)
    gpu = run("cuda", args.pack, frames, args.frames)
    problems = compare(cpu.pop("faces"), gpu.pop("faces"))
    if gpu["providers"][0] != "CUDAExecutionProvider":
        problems.append(f"the CUDA run used {gpu['providers']}")
    result = {
        "pack": args.pack,
        "cpu": cpu,
        "cuda": gpu,
        "cuda_vs_cpu_faces_per_s": round(gpu["faces_per_s"] / max(cpu["faces_per_s"], 1e-9), 2),
        "problems": problems,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "parity.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
