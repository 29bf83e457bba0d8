"""The notebooks run top to bottom in a real kernel (nbclient, this venv's python) on
../shared/data/faces, with real models, and their recommendation reaches the API.

Figures are saved as PNGs under .notebook-figures/ (ignored by git) and checked to be real
images of the fixed size. The tuning notebook applies its recommended threshold and segment
rules to an event of the running Serve app; Event Details and the next search show them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from app.store.events import EventStore
from app.store.keys import KeyStore
from pipelines.index import index_event
from tests.conftest import REPO, shared_faces_or_skip
from tests.test_api import jpeg

pytestmark = pytest.mark.realdata

NOTEBOOKS = REPO / "notebooks"
FIGURES = REPO / ".notebook-figures"
ORG, EVENT = 23, 1
POLL_S = 0.25


def execute(name: str, env: dict[str, str], timeout_s: int = 600) -> float:
    """Run a notebook in a fresh kernel with ``env`` added; its seconds (raises on any error)."""
    import nbclient
    import nbformat

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = nbclient.NotebookClient(
            nb, timeout=timeout_s, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
        )
        started = time.monotonic()
        client.execute()
        return time.monotonic() - started
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def poll(get, until, deadline_s: float = 30.0):
    end = time.monotonic() + deadline_s
    while True:
        value = get()
        if until(value) or time.monotonic() > end:
            return value
        time.sleep(POLL_S)


@pytest.fixture(scope="module")
def executed(serve_api, synthetic_event, tmp_path_factory):
    import ray

    root = shared_faces_or_skip()
    events, keys = EventStore(serve_api.control), KeyStore(serve_api.control)
    events.create_org("notebook org", ORG)
    events.create_event(ORG, "tuned", EVENT)
    index_event(serve_api.settings, ORG, EVENT, [str(synthetic_event.pan.path)])
    key = keys.create(ORG, name="notebooks")[0]
    for old in FIGURES.glob("*.png") if FIGURES.is_dir() else ():
        old.unlink()
    result = tmp_path_factory.mktemp("notebooks") / "recommendation.json"
    env = {
        "FACEREEL_NB_SET": str(root),
        "FACEREEL_NB_DATA_DIR": serve_api.settings.data_dir,  # the API's stores: its event store
        "FACEREEL_NB_FIGURES": str(FIGURES),
        "FACEREEL_NB_ORG": str(ORG),
        "FACEREEL_NB_EVENT": str(EVENT),
        "FACEREEL_NB_RESULT": str(result),
        "FACEREEL_RAY__ADDRESS": ray.get_runtime_context().gcs_address,  # the suite's cluster
        "FACEREEL_MODELS__CACHE_DIR": serve_api.settings.models.cache_dir,
    }
    seconds = {name: execute(name, env) for name in ("threshold_tuning.ipynb", "explore_event.ipynb")}
    print(f"\nnotebooks executed: {seconds} ({sum(seconds.values()):.0f} s together)")
    return json.loads(result.read_text()), key, seconds


def test_both_notebooks_render_their_figures(executed):
    from pipelines.calibration import FIGURE_DPI, FIGURE_SIZE

    _, _, seconds = executed
    expected = (round(FIGURE_SIZE[0] * FIGURE_DPI), round(FIGURE_SIZE[1] * FIGURE_DPI))
    for notebook in seconds:
        pngs = sorted(FIGURES.glob(f"{Path(notebook).stem}-*.png"))
        assert len(pngs) >= 4, (notebook, pngs)
        for png in pngs:
            with Image.open(png) as img:
                assert img.size == expected, png
                pixels = np.asarray(img.convert("L"))
                assert pixels.std() > 5, f"{png} is blank"  # something was drawn


def test_the_recommendation_reaches_event_details_and_the_next_search(executed, serve_api, synthetic_event):
    rec, key, _ = executed
    assert 0.0 < rec["threshold"] < 1.0 and rec["wrong_segments"] == 0, rec
    http = httpx.Client(timeout=60, headers={"X-API-Key": key})
    base = f"{serve_api.base_url}/api/v1/ext/{ORG}/event/{EVENT}"
    details = poll(lambda: http.get(base).json()["data"], lambda d: d["match_threshold_source"] == "event")
    assert details["match_threshold"] == pytest.approx(rec["threshold"])
    for rule, value in rec["segments"].items():
        assert details["segments"][rule] == pytest.approx(value), rule
    pan = synthetic_event.pan
    from pipelines.synthetic import selfie_of

    selfie = jpeg(selfie_of(pan.face_boxes[2] / pan.scale))
    r = http.post(f"{base}/video-clipping/search-by-selfie", files={"file": ("s.jpg", selfie, "image/jpeg")})
    assert r.status_code == 200, r.text
    rid = r.json()["data"]["request_id"]
    data = poll(
        lambda: http.get(f"{base}/video-clipping/{rid}").json()["data"], lambda d: d["status"] != "processing", 120
    )
    assert data["rules"]["match_threshold"] == pytest.approx(rec["threshold"])  # what the API used
    for rule, value in rec["segments"].items():
        assert data["rules"]["segments"][rule] == pytest.approx(value), rule
