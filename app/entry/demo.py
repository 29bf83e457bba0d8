"""The README's first command: a synthetic event, indexed, served and searched over HTTP.

Builds media from face photos that ship in pip packages, starts a local Ray cluster
and the Serve application, creates a demo org, event and API key, indexes the event,
POSTs a selfie to the video-clipping API, polls with backoff (3, 5, 10, 15 s), prints
the result and saves the clips.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from urllib.parse import urlparse

import cv2
import httpx

from app.config import AppSettings

log = logging.getLogger(__name__)

DEMO_ORG, DEMO_EVENT = 1, 1
BACKOFF_S = (3, 5, 10, 15)


def build_demo_media(out: Path, settings: AppSettings) -> tuple[Path, tuple[float, float]]:
    """Write the demo event's media into ``out``; returns the selfie path and its person's interval."""
    from pipelines.models import load_pack
    from pipelines.synthetic import (
        distractor_faces,
        insightface_image,
        make_pan_video,
        make_still_video,
        read_bgr,
        selfie_of,
    )

    out.mkdir(parents=True, exist_ok=True)
    pack = load_pack(settings.models.model_copy(update={"det_size": 1280}))
    faces = pack.detector.detect(read_bgr(insightface_image("t1.jpg")))
    event = out / "event"
    event.mkdir(exist_ok=True)
    pan = make_pan_video(event / "stage_pan.mp4", faces)
    make_still_video(event / "finish_line.mp4", distractor_faces())
    cv2.imwrite(str(event / "group_photo.jpg"), read_bgr(insightface_image("t1.jpg")))
    person = 4
    selfie = out / "selfie.jpg"
    cv2.imwrite(str(selfie), selfie_of(pan.face_boxes[person] / pan.scale))
    return selfie, pan.visible_interval(person)


def ensure_demo_event(settings: AppSettings) -> str:
    """Demo org and event (created once) and a fresh API key; returns the key."""
    from app.store.control import ControlStore
    from app.store.events import EventStore
    from app.store.keys import KeyStore

    control = ControlStore(settings.control_uri, settings.store.storage_options)
    events = EventStore(control)
    if not events.org_exists(DEMO_ORG):
        events.create_org("Demo org", DEMO_ORG)
    if events.get(DEMO_ORG, DEMO_EVENT) is None:
        events.create_event(DEMO_ORG, "Demo race day", DEMO_EVENT)
    key, _ = KeyStore(control).create(DEMO_ORG, name="demo")
    return key


def poll(client: httpx.Client, url: str, headers: dict[str, str], limit_s: float = 300.0) -> dict:
    """GET until the status is terminal, with the contract's backoff: 3, 5, 10, 15, then 15 s."""
    started = time.monotonic()
    for attempt in range(1000):
        body = client.get(url, headers=headers).json()
        if body["data"]["status"] != "processing" or time.monotonic() - started > limit_s:
            return body
        delay = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
        print(f"    still processing; next poll in {delay} s")
        time.sleep(delay)
    return body


def run_demo(settings: AppSettings, out: Path, keep_serving: bool = False) -> int:
    import ray
    from ray import serve

    from app.entry.serve import build_api
    from app.entry.serving_env import install_in_environment
    from pipelines.index import ensure_ray, index_event

    settings = settings.pinned()
    print(f"1/5 building a synthetic event in {out}/ from face photos shipped in pip packages")
    selfie, (start, end) = build_demo_media(out, settings)
    print("2/5 starting a local Ray cluster and the facereel Serve application")
    install_in_environment()
    ensure_ray(settings)
    port = urlparse(settings.api.public_base_url).port or 8000
    # Serve's INFO lines (replica starts, every request) only with -v: the demo prints its own progress.
    quiet = {"log_level": "DEBUG" if logging.getLogger("facereel").isEnabledFor(logging.DEBUG) else "WARNING"}
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config=quiet)
    serve.run(build_api(settings), name="facereel", route_prefix="/", logging_config=quiet)
    key = ensure_demo_event(settings)
    print(f"3/5 indexing the event (store: {settings.store_uri})")
    report = index_event(settings, DEMO_ORG, DEMO_EVENT, [str(out / "event")])
    print(
        f"    {len(report.indexed)} media indexed, {report.skipped} already indexed, {len(report.failed)} failed; {report.faces} faces in {report.seconds:.1f} s"
    )

    base = f"{settings.api.public_base_url.rstrip('/')}/api/v1/ext/{DEMO_ORG}/event/{DEMO_EVENT}/video-clipping"
    headers = {"X-API-Key": key}
    print(f"4/5 POST {selfie} to {base}/search-by-selfie (this person is on stage from {start:.1f} s to {end:.1f} s)")
    with httpx.Client(timeout=60) as client:
        with open(selfie, "rb") as fh:
            started = client.post(
                f"{base}/search-by-selfie", headers=headers, files={"file": (selfie.name, fh, "image/jpeg")}
            ).json()
        print(f"    {started['data']['status']}: request_id {started['data']['request_id']}")
        result = poll(client, f"{base}/{started['data']['request_id']}", headers)
        data = result["data"]
        print(f"5/5 {data['status']}: {result['message']}")
        clips_dir = out / "clips"
        clips_dir.mkdir(exist_ok=True)
        for video in data["videos"]:
            target = clips_dir / f"{video['uuid']}.mp4"
            target.write_bytes(client.get(video["video_url"]).content)
            print(f"    {video['source_video_key']} {video['start_time']}-{video['end_time']}: {video['video_url']}")
            print(f"      saved to {target}")
        for err in data["clip_errors"]:
            print(f"    {err['video_key']}: {err['error']}")
    if keep_serving:
        print(f"serving on {settings.api.public_base_url} with API key {key}; Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    if settings.ray.address or os.environ.get("RAY_ADDRESS"):
        serve.shutdown()  # a cluster it joined: take the demo's application off it
    else:
        # Its own private cluster goes as a whole, Serve with it. (serve.shutdown() first
        # makes Ray print a "(raylet) Task ServeController.graceful_shutdown failed" line.)
        ray.shutdown()
    return 0 if data["status"] == "completed" else 1
