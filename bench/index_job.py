"""Index jobs over HTTP against `facereel index`'s own call, and how fast a cancel lands.

    python bench/index_job.py --duration 30 --reps 2 --out bench-out/index-job

One private Ray cluster (2 CPUs) with the Serve app as in the tests. Generated videos (a pan
across real faces, ``--duration`` seconds each, two per run) are indexed into fresh events:

  direct     pipelines.index.index_event from this process (what `facereel index` runs)
  http job   POST .../media (register the folder) + POST .../index-jobs, polled until completed
  cancel     a job over a ``--duration``x3 video, cancelled once faces stream in; the time
             from the cancel POST to the job reading ``cancelled``

Reported: wall seconds per variant (median over ``--reps``), the HTTP job's time over the
direct call's from the same run, and the cancel latencies.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model, loadavg

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ORG = 901


def wait(client, url: str, until, deadline_s: float = 900.0) -> dict:
    end = time.monotonic() + deadline_s
    while True:
        data = client.get(url).json()["data"]
        if until(data) or time.monotonic() > end:
            return data
        time.sleep(0.05)  # poll interval, bounded by the deadline


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--out", default="bench-out/index-job")
    args = parser.parse_args()

    import httpx
    import ray
    from ray import serve

    from app.config import load_app_settings
    from app.entry.serve import build_api
    from app.store.control import ControlStore
    from app.store.events import EventStore
    from app.store.keys import KeyStore
    from pipelines.index import ensure_ray, index_event
    from pipelines.models import load_pack
    from pipelines.synthetic import insightface_image, make_pan_video, read_bgr

    work = Path(tempfile.mkdtemp(prefix="facereel-bench-jobs-"))
    library = work / "library"
    settings = load_app_settings(
        None,
        data_dir=str(work / "data"),
        ray={"num_cpus": 2},
        api={"media_roots": [str(library)], "public_base_url": "http://127.0.0.1:8765", "post_burst": 100},
    ).pinned()
    full = load_pack(settings.models.model_copy(update={"det_size": 1280}))
    faces = full.detector.detect(read_bgr(insightface_image("t1.jpg")))
    for name, seconds in (("short", args.duration), ("long", args.duration * 3)):
        folder = library / name
        folder.mkdir(parents=True)
        for i in range(2 if name == "short" else 1):
            make_pan_video(folder / f"{name}-{i}.mp4", faces, duration_s=seconds, audio=False)
    ensure_ray(settings)
    serve.start(http_options={"host": "127.0.0.1", "port": 8765}, logging_config={"log_level": "WARNING"})
    serve.run(build_api(settings), name="facereel", route_prefix="/", logging_config={"log_level": "WARNING"})
    control = ControlStore(settings.control_uri)
    events = EventStore(control)
    events.create_org("bench", ORG)
    key, _ = KeyStore(control).create(ORG, name="bench")
    base = f"http://127.0.0.1:8765/api/v1/ext/{ORG}/event"
    direct, http_job, cancel = [], [], []
    event_id = 0
    with httpx.Client(headers={"X-API-Key": key}, timeout=120) as client:
        for _ in range(args.reps):
            event_id += 1
            events.create_event(ORG, "direct", event_id)
            t = time.perf_counter()
            report = index_event(settings, ORG, event_id, [str(library / "short")])
            direct.append(time.perf_counter() - t)
            assert len(report.indexed) == 2, report.failed

            event_id += 1
            events.create_event(ORG, "http", event_id)
            t = time.perf_counter()
            client.post(f"{base}/{event_id}/media", json={"uris": [str(library / "short")]}).raise_for_status()
            job = client.post(f"{base}/{event_id}/index-jobs", json={}).json()["data"]
            done = wait(
                client,
                f"{base}/{event_id}/index-jobs/{job['job_id']}",
                lambda d: d["status"] != "processing" and d["status"] != "queued",
            )
            http_job.append(time.perf_counter() - t)
            assert done["status"] == "completed", done

            event_id += 1
            events.create_event(ORG, "cancel", event_id)
            client.post(f"{base}/{event_id}/media", json={"uris": [str(library / "long")]}).raise_for_status()
            job = client.post(f"{base}/{event_id}/index-jobs", json={}).json()["data"]
            url = f"{base}/{event_id}/index-jobs/{job['job_id']}"
            wait(client, url, lambda d: d["current_stage"] == "embed" or d["status"] not in ("queued", "processing"))
            t = time.perf_counter()
            client.post(f"{url}/cancel").raise_for_status()
            done = wait(client, url, lambda d: d["status"] not in ("queued", "processing"))
            cancel.append(time.perf_counter() - t)
            assert done["status"] == "cancelled", done
    serve.shutdown()
    ray.shutdown()
    result = {
        "machine": f"{platform.node()} {cpu_model()} ({loadavg()})",
        "command": " ".join(["python", *sys.argv]),
        "direct_s": statistics.median(direct),
        "http_job_s": statistics.median(http_job),
        "http_over_direct": statistics.median(http_job) / statistics.median(direct),
        "cancel_s": cancel,
        "runs": {"direct": direct, "http_job": http_job},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
