"""facereel on a real two-node Ray cluster (issue 13): two raylets of 1 CPU each on this
machine, the local S3 server for every root, ``ray job submit`` for indexing and
``serve deploy`` for the API, as a user of a cluster runs them.

The work must spread: Ray's state API says on which node each decode task, actor and clip
task ran, and both node ids must appear.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import fsspec
import httpx
import pytest
import yaml

from app.store.control import ControlStore
from app.store.events import EventStore
from app.store.keys import KeyStore
from pipelines.media import fsspec_options
from pipelines.synthetic import selfie_of
from tests.conftest import REPO, free_port
from tests.ray_nodes import RayNodes, cluster_env, ray_nodes
from tests.s3_server import moto_server, needs_s3

pytestmark = needs_s3

BUCKET = "facereel-cluster"
ORG, EVENT = 31, 7
VIDEOS = ("cam_a.mp4", "cam_b.mp4")
POLL_S = 0.5


@dataclass
class Cluster:
    nodes: RayNodes
    config: Path  # facereel's YAML: every root on S3
    options: dict[str, str]
    serve_url: str
    api_key: str
    work: Path
    fs: fsspec.AbstractFileSystem


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, synthetic_event) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("cluster")
    with moto_server(work) as server:
        options = server.options()
        fs = fsspec.filesystem("s3", **fsspec_options("s3://", options))
        fs.mkdir(BUCKET)
        for name in VIDEOS:  # the same pan from two cameras: two videos, two clips
            fs.put_file(str(synthetic_event.pan.path), f"{BUCKET}/media/{ORG}/{EVENT}/{name}")
        serve_port = free_port()
        root = f"s3://{BUCKET}"
        config = work / "facereel.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "data_dir": str(work / "data"),
                    "store": {"uri": f"{root}/lancedb", "storage_options": options},
                    "api": {
                        "control_uri": f"{root}/control",
                        "output_root": f"{root}/outputs",
                        "source_root": f"{root}/sources",
                        "public_base_url": f"http://127.0.0.1:{serve_port}",
                        # Not what this test is about, and 50 s of the suite on 1-CPU nodes:
                        # warming is measured by bench/first_search.py, run by the demo's test.
                        "warm_search_workers": 0,
                    },
                }
            )
        )
        control = ControlStore(f"{root}/control", options)
        EventStore(control).create_org("cluster org", ORG)
        EventStore(control).create_event(ORG, "two nodes", EVENT)
        api_key = KeyStore(control).create(ORG, EVENT)[0]
        with ray_nodes([1, 1], work, avoid={serve_port}) as nodes:
            yield Cluster(nodes, config, options, f"http://127.0.0.1:{serve_port}", api_key, work, fs)


def run_job(cluster: Cluster, entrypoint: str, deadline_s: float = 300.0) -> tuple[str, str]:
    """``ray job submit`` through its Python client: (final status, the job's output)."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(cluster.nodes.dashboard)
    job = client.submit_job(entrypoint=entrypoint)
    end = time.monotonic() + deadline_s
    while (status := client.get_job_status(job)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        if time.monotonic() > end:
            client.stop_job(job)
            pytest.fail(f"job {job} still {status} after {deadline_s:g} s:\n{client.get_job_logs(job)[-3000:]}")
        time.sleep(POLL_S)
    return str(status), client.get_job_logs(job)


def deploy_serve(cluster: Cluster) -> None:
    """``serve deploy`` of the repo's serve_config.yaml against the cluster, scaled down to
    fit beside the clip tasks on 1-CPU nodes and with one proxy (one host, one port)."""
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    config["proxy_location"] = "HeadOnly"
    config["http_options"]["port"] = int(cluster.serve_url.rsplit(":", 1)[1])
    (app,) = config["applications"]
    app["args"] = {"config": str(cluster.config)}
    for deployment in app["deployments"]:
        deployment["ray_actor_options"]["num_cpus"] = 0.1
    path = cluster.work / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    subprocess.run(
        [str(Path(sys.executable).parent / "serve"), "deploy", str(path), "--address", cluster.nodes.dashboard],
        check=True,
        env=cluster_env(),
        capture_output=True,
        timeout=120,
    )
    end = time.monotonic() + 240
    while True:
        try:
            if httpx.get(f"{cluster.serve_url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > end:
            status = subprocess.run(
                [str(Path(sys.executable).parent / "serve"), "status", "--address", cluster.nodes.dashboard],
                env=cluster_env(),
                capture_output=True,
                text=True,
            )
            pytest.fail(f"Serve not healthy after 240 s:\n{status.stdout}{status.stderr}")
        time.sleep(POLL_S)


def stored_counts(cluster: Cluster) -> tuple[int, int]:
    """(face rows, indexed media rows) of the event in the store on S3."""
    import lancedb

    db = lancedb.connect(f"s3://{BUCKET}/lancedb", storage_options=cluster.options)
    where = f"org_id = {ORG} AND event_id = {EVENT}"
    faces = db.open_table("faces").count_rows(where)
    media = db.open_table("media").count_rows(f"{where} AND status = 'indexed'")
    return faces, media


def nodes_of(cluster: Cluster, task_names: tuple[str, ...] = (), actor_classes: tuple[str, ...] = ()) -> set[str]:
    """Node ids where tasks (by name) or actors (by class) ran, from Ray's state API."""
    from ray.util.state import list_actors, list_tasks

    address = cluster.nodes.dashboard
    found = set()
    tasks = list_tasks(address=address, limit=10_000, raise_on_missing_output=False)
    found |= {t.node_id for t in tasks if t.node_id and any(n in t.name for n in task_names)}
    actors = list_actors(address=address, limit=10_000, raise_on_missing_output=False)
    found |= {a.node_id for a in actors if a.node_id and any(c in a.class_name for c in actor_classes)}
    return found


def test_two_nodes_index_by_job_search_over_http_and_share_the_work(cluster, synthetic_event):
    nodes = cluster.nodes.node_ids()
    assert len(nodes) == 2

    # Indexing, as `ray job submit -- facereel index ...` runs it.
    status, logs = run_job(
        cluster,
        f"facereel --config {cluster.config} index --quiet --org {ORG} --event {EVENT} "
        f"s3://{BUCKET}/media/{ORG}/{EVENT}",
    )
    assert status == "SUCCEEDED", logs[-3000:]
    report = re.search(r"(\d+) indexed, (\d+) failed; (\d+) frames, (\d+) faces", logs)
    assert report, logs[-3000:]
    indexed, failed, frames, faces = map(int, report.groups())
    assert (indexed, failed) == (2, 0) and frames > 0 and faces > 0
    assert stored_counts(cluster) == (faces, indexed)  # the report is what was stored
    now = re.search(r"now: (\d+) media indexed, (\d+) faces stored", logs)
    assert now and (int(now.group(2)), int(now.group(1))) == (faces, indexed), logs[-3000:]
    index_nodes = nodes_of(cluster, ("decode_batches",), ("DetectAlign", "Embed"))
    assert index_nodes == set(nodes), f"index work ran on {index_nodes}, the cluster has {nodes}"

    # The API, as `serve deploy` starts it; a selfie search over HTTP cuts one clip per video.
    deploy_serve(cluster)
    pan = synthetic_event.pan
    ok, selfie = cv2.imencode(".jpg", selfie_of(pan.face_boxes[2] / pan.scale))
    assert ok
    http = httpx.Client(timeout=60, headers={"X-API-Key": cluster.api_key})
    base = f"{cluster.serve_url}/api/v1/ext/{ORG}/event/{EVENT}/video-clipping"
    posted = http.post(f"{base}/search-by-selfie", files={"file": ("selfie.jpg", selfie.tobytes(), "image/jpeg")})
    assert posted.status_code == 200, posted.text
    request_id = posted.json()["data"]["request_id"]
    end = time.monotonic() + 240
    while (body := http.get(f"{base}/{request_id}").json())["data"]["status"] == "processing":
        assert time.monotonic() < end, body
        time.sleep(POLL_S)
    data = body["data"]
    assert data["status"] == "completed", data
    assert {v["source_video_key"] for v in data["videos"]} == set(VIDEOS)
    for video in data["videos"]:  # served by the ingress on the head, written on either node
        clip = http.get(video["video_url"])
        stored = cluster.fs.find(f"{BUCKET}/outputs")
        assert clip.status_code == 200 and clip.content[4:8] == b"ftyp", (video["video_url"], clip.text, stored)
    clip_nodes = nodes_of(cluster, ("cut_one_clip",))
    assert clip_nodes == set(nodes), f"clip tasks ran on {clip_nodes}, the cluster has {nodes}"


def test_a_gpu_stage_on_a_cluster_without_gpus_fails_at_once_naming_it(cluster):
    env = cluster_env() | {"RAY_ADDRESS": cluster.nodes.gcs_address, "FACEREEL_INDEX__EMBED__NUM_GPUS": "1"}
    started = time.monotonic()
    done = subprocess.run(
        ["facereel", "--config", str(cluster.config), "index", "--quiet", "--org", str(ORG), "--event", "99",
         f"s3://{BUCKET}/media/{ORG}/{EVENT}"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert "index.embed asks 1 GPU per actor, but no node has that many" in done.stderr
    assert time.monotonic() - started < 60


REFUSE = """
import sys
import ray
from app.config import load_app_settings
from app.entry.serve import build_api
from pipelines.cluster import StorageNotShared

ray.init(address=sys.argv[1])
try:
    build_api(load_app_settings(sys.argv[2]))
except StorageNotShared as exc:
    print(exc)
    sys.exit(3)
"""


def test_a_node_local_output_root_is_refused_at_start(cluster, tmp_path):
    local = tmp_path / "outputs"
    env = cluster_env() | {"FACEREEL_API__OUTPUT_ROOT": str(local)}
    done = subprocess.run(
        [sys.executable, "-c", REFUSE, cluster.nodes.gcs_address, str(cluster.config)],
        env=env, capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr[-3000:]
    assert f"api.output_root '{local}' is a local path, but the cluster has 2 nodes" in done.stdout
    assert "ray.shared_paths" in done.stdout
    assert not local.exists()  # refused before anything was written
