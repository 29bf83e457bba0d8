"""`facereel index` on two 1-CPU Ray nodes against one 2-CPU node (issue 13's repro).

    python bench/cluster.py --reps 2 --out bench-out/cluster

Real raylets started with `ray start` on this machine (tests/ray_nodes.py), the CLI run as a
user runs it (`FACEREEL_RAY__ADDRESS=...`) on the two short real videos of the shared set
(obama.mp4, biden.mp4; a generated pan when the set is absent). Both raylets share this
machine's disk, which the storage check accepts once the folder is listed in
`ray.shared_paths`:

  one node   ray start --head --num-cpus=2             (the baseline)
  two nodes  ray start --head --num-cpus=1 + a 1-CPU worker
  no GPU     two nodes, index.embed.num_gpus=1: the time until the CLI fails naming the GPU

Reported: wall seconds of the whole CLI run (Ray connect included; median over --reps), the
two-node time over the one-node time, faces reported against faces stored.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model, loadavg

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared" / "data" / "faces" / "videos" / "hieubkvn123_face_recognition" / "videos"
REPORT = re.compile(r"(\d+) indexed, (\d+) failed; (\d+) frames, (\d+) faces")


def media(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    if SHARED.is_dir():
        for name in ("obama.mp4", "biden.mp4"):
            shutil.copy(SHARED / name, folder / name)
        return "shared: obama.mp4, biden.mp4"
    from pipelines.config import Settings
    from pipelines.models import load_pack
    from pipelines.synthetic import insightface_image, make_pan_video, read_bgr

    pack = load_pack(Settings().models.model_copy(update={"det_size": 1280}))
    make_pan_video(folder / "pan.mp4", pack.detector.detect(read_bgr(insightface_image("t1.jpg"))), duration_s=8.0)
    return "generated: one 8 s pan"


def index_once(gcs: str, root: Path, inputs: Path, env_extra: dict[str, str], run: int) -> dict:
    from tests.ray_nodes import cluster_env

    data = root / f"data-{run}"
    env = (
        cluster_env()
        | {
            "FACEREEL_RAY__ADDRESS": gcs,
            "FACEREEL_DATA_DIR": str(data),
            "FACEREEL_RAY__SHARED_PATHS": json.dumps([str(root)]),
        }
        | env_extra
    )
    started = time.monotonic()
    done = subprocess.run(
        ["facereel", "index", "--quiet", "--org", "1", "--event", "1", str(inputs)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    seconds = time.monotonic() - started
    out = {"seconds": round(seconds, 2), "rc": done.returncode}
    found = REPORT.search(done.stdout)
    if found and int(found.group(1)) == 0:
        raise RuntimeError(f"nothing indexed (a reused data dir?): {done.stdout}")
    if found:
        out["faces_reported"] = int(found.group(4))
        import lancedb

        out["faces_stored"] = lancedb.connect(str(data / "lancedb")).open_table("faces").count_rows()
    else:
        out["error"] = (done.stderr.strip().splitlines() or ["?"])[-1][:400]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--out", default="bench-out/cluster")
    args = parser.parse_args()
    from tests.ray_nodes import ray_nodes

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="facereel-cluster-bench-"))
    what = media(root / "media")
    results: dict[str, list[dict]] = {}
    for name, cpus in (("one node (2 CPUs)", [2]), ("two nodes (1+1 CPUs)", [1, 1])):
        logs = root / f"logs-{len(cpus)}"
        logs.mkdir()
        with ray_nodes(cpus, logs) as nodes:
            results[name] = [
                index_once(nodes.gcs_address, root, root / "media", {}, len(cpus) * 100 + i) for i in range(args.reps)
            ]
            print(name, results[name], flush=True)
            if len(cpus) == 2:
                gpu = index_once(nodes.gcs_address, root, root / "media", {"FACEREEL_INDEX__EMBED__NUM_GPUS": "1"}, 99)
                results["two nodes, embed asks a GPU"] = [gpu]
                print("no GPU", gpu, flush=True)
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in results.items()}
    summary = {
        "machine": {"cpu": cpu_model(), "python": platform.python_version(), "loadavg": loadavg()},
        "media": what,
        "runs": results,
        "median_s": med,
        "two_nodes_over_one": round(med["two nodes (1+1 CPUs)"] / med["one node (2 CPUs)"], 2),
    }
    (out / "cluster.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("median_s", "two_nodes_over_one")}, indent=2))
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
