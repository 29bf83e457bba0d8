"""Shared fixtures: one local Ray cluster, the default model pack, a synthetic event.

Everything expensive is built once per test session. Test media come from face photos
that ship in pip packages (see pipelines/synthetic.py); nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.config import AppSettings, load_app_settings
from pipelines.models import ModelPack, load_pack
from pipelines.models.base import Detections
from pipelines.synthetic import (
    PanVideo,
    distractor_faces,
    insightface_image,
    make_pan_video,
    make_still_video,
    read_bgr,
)

REPO = Path(__file__).resolve().parents[1]
SHARED_FACES = REPO.parent / "shared" / "data" / "faces"

EVENT_ORG, EVENT_ID = 7, 42
# What the schema fuzz (tests/test_openapi.py) ran, printed at the end of the session.
SCHEMA_FUZZ = pytest.StashKey[list]()


def pytest_terminal_summary(terminalreporter, config) -> None:
    for line in config.stash.get(SCHEMA_FUZZ, []):
        terminalreporter.write_line(f"schema fuzz: {line}")
    # Seconds per test file (setup, call and teardown together): where the suite's time goes.
    by_file: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if isinstance(report, pytest.TestReport):
                name = report.nodeid.split("::", 1)[0]
                by_file[name] = by_file.get(name, 0.0) + report.duration
    if by_file:
        terminalreporter.write_sep("=", "seconds per test file")
        for name, seconds in sorted(by_file.items(), key=lambda item: -item[1])[:20]:
            terminalreporter.write_line(f"{seconds:8.1f}s  {name}")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def settings(tmp_path_factory, cache_dir) -> AppSettings:
    data_dir = tmp_path_factory.mktemp("facereel-data")
    return load_app_settings(None, data_dir=str(data_dir), models={"cache_dir": str(cache_dir)}, ray={"num_cpus": 2})


@pytest.fixture(scope="session")
def pack(settings) -> ModelPack:
    return load_pack(settings.models)


@pytest.fixture(scope="session")
def t1_faces(settings) -> Detections:
    """The six faces of t1.jpg, detected at full resolution."""
    full = load_pack(settings.models.model_copy(update={"det_size": 1280}))
    dets = full.detector.detect(read_bgr(insightface_image("t1.jpg")))
    assert len(dets) == 6
    return dets


@pytest.fixture(scope="session")
def ray_cluster(settings):
    import ray

    from pipelines.index import ensure_ray

    ensure_ray(settings)
    yield
    ray.shutdown()


@dataclass
class SyntheticEvent:
    root: Path
    pan: PanVideo
    still: Path
    photo: Path
    corrupt: Path
    t1_faces: Detections


@pytest.fixture(scope="session")
def synthetic_event(tmp_path_factory, t1_faces) -> SyntheticEvent:
    root = tmp_path_factory.mktemp("event-media")
    pan = make_pan_video(root / "pan.mp4", t1_faces)
    still = make_still_video(root / "distractors.mp4", distractor_faces())
    photo = root / "group.jpg"
    cv2.imwrite(str(photo), read_bgr(insightface_image("t1.jpg")))
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8).tobytes())
    return SyntheticEvent(root, pan, still, photo, corrupt, t1_faces)


@pytest.fixture(scope="session")
def indexed_event(ray_cluster, settings, synthetic_event):
    """The synthetic event indexed once; tests must not modify it."""
    from pipelines.index import index_event

    report = index_event(settings, EVENT_ORG, EVENT_ID, [str(synthetic_event.root)])
    return report


def shared_faces_or_skip() -> Path:
    if not SHARED_FACES.is_dir():
        pytest.skip(f"real-footage evaluation needs {SHARED_FACES} (absent here)")
    return SHARED_FACES.resolve()  # media keys are resolved paths; ../shared may be a symlink


@pytest.fixture(autouse=True, scope="session")
def _quiet_env():
    from app.entry.serving_env import install_in_environment

    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    install_in_environment()  # before the local cluster starts: Serve's proxy answers in the envelope


@dataclass
class ServeApi:
    base_url: str
    settings: AppSettings
    control: object  # app.store.control.ControlStore

    def restart(self) -> None:
        """Shut Serve down completely and start it again (records must survive)."""
        from ray import serve

        serve.shutdown()
        start_serve(self.settings)


def own_processes(title: str) -> list[int]:
    """This test process's descendants whose command line holds ``title`` (Ray titles a worker
    by the task or replica it runs). Never another process's: a second test run or a
    benchmark on the same machine has processes of the same titles."""
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if title in " ".join(proc.cmdline()):
                found.append(proc.pid)
        except psutil.Error:  # ended meanwhile
            continue
    return found


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int, avoid: Collection[int] = ()) -> list[int]:
    """n distinct free ports, none of them in ``avoid`` (ports chosen earlier and not bound
    yet). The sockets stay bound until all are chosen: closing each before the next lets
    the kernel hand one port out twice (seen in CI: Ray refused to start when two of its
    agents were given the same port)."""
    import socket
    from contextlib import ExitStack

    ports: list[int] = []
    with ExitStack() as stack:
        while len(ports) < n:
            s = stack.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            if (port := s.getsockname()[1]) not in avoid:
                ports.append(port)
    return ports


def start_serve(settings: AppSettings) -> None:
    from urllib.parse import urlparse

    from ray import serve

    from app.entry.serve import build_api

    port = urlparse(settings.api.public_base_url).port
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_api(settings), name="facereel", route_prefix="/")


@pytest.fixture(scope="session")
def serve_api(ray_cluster, settings):
    """The real Serve application on 127.0.0.1, rate limits high enough for the suite."""
    from ray import serve

    from app.store.control import ControlStore

    port = free_port()
    changes = {
        "public_base_url": f"http://127.0.0.1:{port}",
        # Enough for the suite's searches per key; the rate-limit test exceeds the burst.
        "post_per_minute": 60.0,
        "post_burst": 40,
        "get_per_minute": 60000.0,
        "get_burst": 500,
        "sweep_interval_s": 1.0,
        "body_timeout_s": 2.0,
        "dispatch_deadline_s": 15.0,
        # Index jobs and webhooks (tests/test_index_jobs.py): its receiver is on 127.0.0.1,
        # its media library a folder of the data dir, its uploads at most 8 MiB.
        "webhook_allow_addresses": ["loopback"],
        "storage_allow_addresses": ["loopback"],  # the local S3 server of tests/test_byo_storage.py
        "webhook_first_backoff_s": 0.2,
        "media_roots": [str(Path(settings.data_dir) / "library")],
        "max_media_upload_bytes": 8 * 1024 * 1024,
        # Jobs outlive this deadline only by their driver's heartbeat: a job test that a
        # broken heartbeat would let the 1 s sweep end as lost.
        "index_job_deadline_s": 30.0,
        "index_job_heartbeat_s": 2.0,
    }
    # Checked and validated, not model_copy(update=...): that takes a misspelt or removed
    # setting silently, and the tests would run on a setting the product does not have.
    unknown = set(changes) - set(type(settings.api).model_fields)
    assert not unknown, f"no such api settings: {sorted(unknown)}"
    api = type(settings.api).model_validate(settings.api.model_dump() | changes)
    api_settings = settings.model_copy(update={"api": api})
    start_serve(api_settings)
    yield ServeApi(f"http://127.0.0.1:{port}", api_settings, ControlStore(api_settings.control_uri))
    serve.shutdown()


from tests.webhook_receiver import receiver  # noqa: E402, F401 - the fixture, for every test module
