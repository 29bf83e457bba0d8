"""Media and index jobs over HTTP, through the real Serve app and Ray: uploads and URIs,
progress, webhooks signed and retried, cancel that leaves no media half-indexed, bad input."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.core.webhooks import EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from app.jobs.notify import org_secret
from app.store.control import EVENT_MEDIA, INDEX_JOBS, WEBHOOK_DELIVERIES
from app.store.events import EventStore
from app.store.keys import KeyStore
from pipelines.models import pack_info
from pipelines.store import FaceStore
from pipelines.synthetic import make_pan_video, selfie_of
from tests.conftest import own_processes
from tests.test_api import jpeg

log = logging.getLogger(__name__)
ORG, UPLOADS, CANCEL, DRIVER, OTHER_ORG, PROGRESS = 61, 1, 2, 3, 62, 4
POLL_S = 0.1
STAGE_ORDER = ("probe", "decode", "detect", "embed", "write")


@dataclass
class Api:
    http: httpx.Client
    base: str
    serve_api: object

    def url(self, event: int, suffix: str, org: int = ORG) -> str:
        return f"{self.base}/api/v1/ext/{org}/event/{event}{suffix}"

    def job(self, event: int, job_id: str) -> dict:
        response = self.http.get(self.url(event, f"/index-jobs/{job_id}"))
        assert response.status_code == 200, response.text
        return response.json()["data"]

    def follow(self, event: int, job_id: str, deadline_s: float = 240.0) -> list[dict]:
        """Every state seen while polling, until the job ends."""
        seen, end = [], time.monotonic() + deadline_s
        while time.monotonic() < end:
            seen.append(self.job(event, job_id))
            if seen[-1]["status"] in ("completed", "failed", "cancelled"):
                return seen
            time.sleep(POLL_S)
        raise AssertionError(f"job {job_id} still {seen[-1]['status']} after {deadline_s} s")

    def media(self, event: int) -> dict[str, dict]:
        response = self.http.get(self.url(event, "/media"), params={"page_size": 200})
        assert response.status_code == 200, response.text
        return {m["media_key"]: m for m in response.json()["data"]["media"]}


@pytest.fixture(scope="module")
def api(serve_api) -> Iterator[Api]:
    events = EventStore(serve_api.control)
    events.create_org("index jobs org", ORG)
    events.create_org("another org", OTHER_ORG)
    for event in (UPLOADS, CANCEL, DRIVER, PROGRESS):
        events.create_event(ORG, f"event {event}", event)
    events.create_event(OTHER_ORG, "theirs", UPLOADS)
    key, _ = KeyStore(serve_api.control).create(ORG, name="index jobs")
    with httpx.Client(headers={"X-API-Key": key}, timeout=60.0) as client:
        yield Api(client, serve_api.base_url, serve_api)


@pytest.fixture(scope="module")
def two_videos(api, synthetic_event) -> Path:
    """A folder under the allowed media roots: the 16 s pan, and a 40 s one that is still
    being indexed when the short one is done."""
    library = Path(api.serve_api.settings.api.media_roots[0]) / "two-videos"
    library.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(synthetic_event.pan.path, library / "a-pan.mp4")
    make_pan_video(library / "b-long.mp4", synthetic_event.t1_faces, duration_s=40.0, audio=False)
    return library


def stored_state(serve_api, org: int, event: int) -> dict:
    """Everything stored for the event: registrations, index rows, jobs, deliveries, files."""
    control = serve_api.control
    where = f"org_id = {org} AND event_id = {event}"
    store = FaceStore.from_settings(serve_api.settings, pack_info(serve_api.settings.models.pack))
    files = sorted(str(p) for p in Path(serve_api.settings.source_root).rglob("*") if p.is_file())
    return {
        "registered": control.table(EVENT_MEDIA).count_rows(where),
        "jobs": control.table(INDEX_JOBS).count_rows(where),
        "deliveries": control.table(WEBHOOK_DELIVERIES).count_rows(where),
        "faces": store.count_faces(org, event),
        "media": len(store.media_rows(org, event)),
        "files": files,
    }


def assert_whole(store: FaceStore, org: int, event: int, key: str) -> str:
    """A media item is fully indexed (its face rows are all there) or not at all."""
    counts = store.count_media_rows(org, event, key)
    row = store.media_row(org, event, key)
    if row is None:
        assert counts == {"faces": 0, "tracks": 0, "bibs": 0, "media": 0}, (key, counts)
        return "absent"
    assert row["status"] == "indexed", row
    assert counts["faces"] == row["face_count"] > 0, (key, counts, row["face_count"])
    return "indexed"


def test_upload_index_with_progress_and_a_signed_webhook(api, synthetic_event, receiver):
    files = [
        ("file", ("pan.mp4", synthetic_event.pan.path.read_bytes(), "video/mp4")),
        ("file", ("crowd shot.mp4", synthetic_event.still.read_bytes(), "application/octet-stream")),
        ("file", ("../../group.jpg", synthetic_event.photo.read_bytes(), "image/jpeg")),
    ]
    response = api.http.post(api.url(UPLOADS, "/media"), files=files)
    assert response.status_code == 200, response.text
    added = {m["media_key"]: m for m in response.json()["data"]["media"]}
    # Keys are sanitised file names: no path survives.
    assert set(added) == {"pan.mp4", "crowd_shot.mp4", "group.jpg"}
    assert added["pan.mp4"]["media_type"] == "video" and added["group.jpg"]["media_type"] == "photo"
    assert added["pan.mp4"]["metadata"]["duration_s"] == pytest.approx(16.0, abs=0.2)
    assert added["pan.mp4"]["metadata"]["width"] == 640 and added["pan.mp4"]["index_status"] == "pending"
    source_root = Path(api.serve_api.settings.source_root).resolve()
    for item in added.values():
        assert source_root in Path(item["uri"]).parents  # stored in the event's source location

    response = api.http.post(api.url(UPLOADS, "/index-jobs"), json={"webhook_url": receiver.url})
    assert response.status_code == 200, response.text
    started = response.json()["data"]
    assert started["status"] == "queued" and sorted(started["media_keys"]) == sorted(added)
    seen = api.follow(UPLOADS, started["job_id"])
    final = seen[-1]
    assert final["status"] == "completed", final
    progress = [s["progress_percent"] for s in seen]
    assert progress == sorted(progress) and progress[-1] == 100.0, progress
    stages = [s["current_stage"] for s in seen if s["current_stage"]]
    assert [STAGE_ORDER.index(s) for s in stages] == sorted(STAGE_ORDER.index(s) for s in stages), stages
    assert len(set(stages)) >= 2, stages
    assert final["media"] == {"total": 3, "done": 3, "indexed": 3, "failed": 0}
    assert final["frames"]["done"] == final["frames"]["planned"] > 0
    listed = api.media(UPLOADS)
    assert {k: m["index_status"] for k, m in listed.items()} == dict.fromkeys(added, "indexed")
    assert sum(m["faces"] for m in listed.values()) == final["faces"] > 0

    # One delivery, signed with the org's secret over the exact bytes, of the GET's data.
    ((headers, body),) = receiver.wait_for(1)
    secret = org_secret(api.serve_api.control, ORG)
    assert verify(secret, body, headers[TIMESTAMP_HEADER.lower()], headers[SIGNATURE_HEADER.lower()])
    assert not verify(secret + "x", body, headers[TIMESTAMP_HEADER.lower()], headers[SIGNATURE_HEADER.lower()])
    assert headers[EVENT_HEADER.lower()] == "index_job.completed"
    delivered = json.loads(body)
    assert delivered["job_id"] == started["job_id"] and delivered["status"] == "completed"
    assert delivered["faces"] == final["faces"]
    deadline = time.monotonic() + 30
    while (hook := api.job(UPLOADS, started["job_id"])["webhook"])["deliveries"][0]["status"] != "delivered":
        assert time.monotonic() < deadline, hook
        time.sleep(POLL_S)
    assert [a["status_code"] for a in hook["deliveries"][0]["attempts"]] == [200]

    # Nothing left to index: a job of nothing completes; its webhook fails twice, then is heard.
    receiver.codes[:] = [500, 503]
    again = api.http.post(api.url(UPLOADS, "/index-jobs"), json={"webhook_url": receiver.url}).json()["data"]
    assert again["media_keys"] == []
    assert api.follow(UPLOADS, again["job_id"])[-1]["status"] == "completed"
    receiver.wait_for(4)
    deadline = time.monotonic() + 30
    while (hook := api.job(UPLOADS, again["job_id"])["webhook"])["deliveries"][0]["status"] != "delivered":
        assert time.monotonic() < deadline, hook
        time.sleep(POLL_S)
    assert [a["status_code"] for a in hook["deliveries"][0]["attempts"]] == [500, 503, 200]

    # A search of the uploaded media tells its webhook the data its GET answers.
    pan = synthetic_event.pan
    selfie = jpeg(selfie_of(pan.face_boxes[0] / pan.scale))
    response = api.http.post(
        api.url(UPLOADS, "/video-clipping/search-by-selfie"),
        files=[("file", ("me.jpg", selfie, "image/jpeg"))],
        data={"webhook_url": receiver.url},
    )
    assert response.status_code == 200, response.text
    request_id = response.json()["data"]["request_id"]
    headers, body = receiver.wait_for(5, deadline_s=120)[-1]
    assert verify(secret, body, headers[TIMESTAMP_HEADER.lower()], headers[SIGNATURE_HEADER.lower()])
    result = json.loads(body)
    assert headers[EVENT_HEADER.lower()] == f"search.{result['status']}"
    got = api.http.get(api.url(UPLOADS, f"/video-clipping/{request_id}")).json()["data"]
    assert result == got and got["status"] == "completed" and got["videos"], got
    assert {v["source_video_key"] for v in got["videos"]} <= {"pan.mp4", "crowd_shot.mp4"}


def test_progress_moves_while_one_short_video_is_indexed(api, synthetic_event):
    """Issue 21 item 6: one 16 s video is one chunk; its progress still moves while its
    frames come out of the pipeline, not only 0 then 100."""
    files = [("file", ("short.mp4", synthetic_event.pan.path.read_bytes(), "video/mp4"))]
    assert api.http.post(api.url(PROGRESS, "/media"), files=files).status_code == 200
    job = api.http.post(api.url(PROGRESS, "/index-jobs"), json={}).json()["data"]
    started = time.monotonic()
    seen: list[tuple[float, str, str | None, float]] = []
    while not seen or seen[-1][1] in ("queued", "processing"):
        assert time.monotonic() - started < 240, seen
        if seen:
            time.sleep(POLL_S)  # the polling interval
        state = api.job(PROGRESS, job["job_id"])
        seen.append(
            (round(time.monotonic() - started, 2), state["status"], state["current_stage"], state["progress_percent"])
        )
    log.info("index job readings (s, status, stage, percent): %s", seen)
    assert seen[-1][1] == "completed" and seen[-1][3] == 100.0, seen
    progress = [p for *_, p in seen]
    assert progress == sorted(progress), seen
    # Strictly between, and well short of the end (not the 99.9 a finished chunk shows
    # while the index is written), while the models work on the frames.
    moving = sorted({p for _, _, stage, p in seen if stage in ("detect", "embed") and 0.0 < p < 90.0})
    assert moving, seen
    stages = [stage for _, _, stage, _ in seen if stage]
    assert [STAGE_ORDER.index(s) for s in stages] == sorted(STAGE_ORDER.index(s) for s in stages), stages


def test_cancel_leaves_no_media_half_indexed_and_a_rerun_indexes_the_rest(api, two_videos):
    library = two_videos
    response = api.http.post(api.url(CANCEL, "/media"), json={"uris": [str(library)]})
    assert response.status_code == 200, response.text
    assert sorted(m["media_key"] for m in response.json()["data"]["media"]) == ["a-pan.mp4", "b-long.mp4"]

    job = api.http.post(api.url(CANCEL, "/index-jobs"), json={}).json()["data"]
    # Cancel while the long video is under way (the short one may or may not be done).
    deadline = time.monotonic() + 180
    while (state := api.job(CANCEL, job["job_id"]))["current_stage"] not in ("embed",):
        assert state["status"] in ("queued", "processing") and time.monotonic() < deadline, state
        time.sleep(POLL_S)
    asked = time.monotonic()
    response = api.http.post(api.url(CANCEL, f"/index-jobs/{job['job_id']}/cancel"))
    assert response.status_code == 200, response.text
    assert response.json()["data"]["cancel_requested"] is True
    final = api.follow(CANCEL, job["job_id"], deadline_s=30)[-1]
    took = time.monotonic() - asked
    assert final["status"] == "cancelled" and took < 10, (final, took)
    # A second cancel is a 409: the job has ended.
    assert api.http.post(api.url(CANCEL, f"/index-jobs/{job['job_id']}/cancel")).status_code == 409

    store = FaceStore.from_settings(api.serve_api.settings, pack_info(api.serve_api.settings.models.pack))
    outcome = {key: assert_whole(store, ORG, CANCEL, key) for key in ("a-pan.mp4", "b-long.mp4")}
    assert outcome["b-long.mp4"] == "absent", outcome

    rerun = api.http.post(api.url(CANCEL, "/index-jobs"), json={}).json()["data"]
    assert "b-long.mp4" in rerun["media_keys"]
    assert api.follow(CANCEL, rerun["job_id"])[-1]["status"] == "completed"
    assert {key: assert_whole(store, ORG, CANCEL, key) for key in outcome} == dict.fromkeys(outcome, "indexed")

    # DELETE removes a source's rows and registration, and says what it removed.
    faces = store.count_media_rows(ORG, CANCEL, "a-pan.mp4")["faces"]
    response = api.http.delete(api.url(CANCEL, "/media/a-pan.mp4"))
    assert response.status_code == 200, response.text
    removed = response.json()["data"]["removed"]
    assert removed["faces"] == faces > 0 and removed["media"] == 1 and removed["registration"] == 1
    assert removed["files"] == []  # a registered URI is the client's file: left in place
    assert (library / "a-pan.mp4").exists()
    assert store.count_media_rows(ORG, CANCEL, "a-pan.mp4") == {"faces": 0, "tracks": 0, "bibs": 0, "media": 0}
    assert "a-pan.mp4" not in api.media(CANCEL)
    assert api.http.delete(api.url(CANCEL, "/media/a-pan.mp4")).status_code == 404


def test_a_job_whose_driver_dies_fails_within_seconds_leaving_nothing_half_indexed(api, two_videos):
    response = api.http.post(api.url(DRIVER, "/media"), json={"uris": [str(two_videos)]})
    assert response.status_code == 200, response.text
    job = api.http.post(api.url(DRIVER, "/index-jobs"), json={}).json()["data"]
    deadline = time.monotonic() + 180
    while api.job(DRIVER, job["job_id"])["current_stage"] not in ("decode", "embed"):
        assert time.monotonic() < deadline
        time.sleep(POLL_S)
    drivers = own_processes("ray::run_index_job")
    assert len(drivers) == 1, drivers
    killed = time.monotonic()
    os.kill(drivers[0], signal.SIGKILL)
    final = api.follow(DRIVER, job["job_id"], deadline_s=60)[-1]
    assert final["status"] == "failed" and "driver was lost" in final["error"], final
    assert time.monotonic() - killed < 30
    store = FaceStore.from_settings(api.serve_api.settings, pack_info(api.serve_api.settings.models.pack))
    for key in ("a-pan.mp4", "b-long.mp4"):
        assert_whole(store, ORG, DRIVER, key)
    # The lock went with it: a new job started at once (its ender may still be cleaning up,
    # which the start waits for) runs and indexes what is left.
    response = api.http.post(api.url(DRIVER, "/index-jobs"), json={})
    assert response.status_code == 200, response.text
    rerun = response.json()["data"]
    assert api.follow(DRIVER, rerun["job_id"])[-1]["status"] == "completed"
    assert {k: assert_whole(store, ORG, DRIVER, k) for k in ("a-pan.mp4", "b-long.mp4")} == dict.fromkeys(
        ("a-pan.mp4", "b-long.mp4"), "indexed"
    )


def test_bad_input_gets_its_4xx_and_changes_nothing(api, serve_api, tmp_path):
    before = stored_state(serve_api, ORG, UPLOADS)
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(b"\x00" * 1000)
    library = Path(serve_api.settings.api.media_roots[0])
    library.mkdir(parents=True, exist_ok=True)
    cases = [
        (api.url(UPLOADS, "/media"), {"files": [("file", ("notes.mp4", b"just text, not a video" * 50, "video/mp4"))]}, 400, "unsupported_media"),
        (api.url(UPLOADS, "/media"), {"files": [("file", ("big.mp4", b"\x00" * (8 * 1024 * 1024 + 1), "video/mp4"))]}, 413, "file_too_large"),
        (api.url(UPLOADS, "/media"), {"files": [("other", ("x.mp4", b"abc", "video/mp4"))]}, 400, "invalid_form"),
        (api.url(UPLOADS, "/media"), {"json": {"uris": [str(outside)]}}, 400, "uri_not_allowed"),
        (api.url(UPLOADS, "/media"), {"json": {"uris": [f"{library}/../../etc/passwd"]}}, 400, "uri_not_allowed"),
        (api.url(UPLOADS, "/media"), {"json": {"uris": ["s3://somebody-elses-bucket/video.mp4"]}}, 400, "uri_not_allowed"),
        (api.url(UPLOADS, "/media"), {"json": {"uris": "not a list"}}, 400, "invalid_body"),
        (api.url(UPLOADS, "/index-jobs"), {"json": {"webhook_url": "http://169.254.169.254/latest/meta-data"}}, 400, "invalid_webhook_url"),
        (api.url(UPLOADS, "/index-jobs"), {"json": {"webhook_url": "http://10.0.0.8/hook"}}, 400, "invalid_webhook_url"),
        (api.url(UPLOADS, "/index-jobs"), {"json": {"webhook_url": "file:///etc/passwd"}}, 400, "invalid_webhook_url"),
        (api.url(UPLOADS, "/index-jobs"), {"json": {"media_keys": ["never-uploaded.mp4"]}}, 400, "unknown_media"),
        (api.url(UPLOADS, "/index-jobs"), {"json": {"media_keys": "pan.mp4"}}, 400, "invalid_body"),
        (api.url(UPLOADS, "/index-jobs"), {"json": {"surprise": 1}}, 400, "invalid_body"),
        (api.url(UPLOADS, "/video-clipping/search-by-selfie"), {"data": {"request_id": "00000000-0000-4000-8000-000000000001", "webhook_url": "http://169.254.169.254/"}}, 400, "invalid_webhook_url"),
    ]  # fmt: skip
    for url, kwargs, status, code in cases:
        response = api.http.post(url, **kwargs)
        assert (response.status_code, response.json()["data"]["code"]) == (status, code), (kwargs.keys(), response.text)
    gets = [
        (api.url(UPLOADS, "/index-jobs/00000000-0000-4000-8000-000000000000"), 404, "index_job_not_found"),
        (api.url(UPLOADS, "/index-jobs/not-a-job"), 404, "index_job_not_found"),
        (api.url(UPLOADS, "/media/no-such-file.mp4"), 405, "method_not_allowed"),
    ]
    for url, status, code in gets:
        response = api.http.get(url)
        assert (response.status_code, response.json()["data"]["code"]) == (status, code), (url, response.text)
    assert api.http.delete(api.url(UPLOADS, "/media/no-such-file.mp4")).status_code == 404
    assert stored_state(serve_api, ORG, UPLOADS) == before


def test_another_orgs_job_is_not_found(api, serve_api):
    job = api.http.post(api.url(UPLOADS, "/index-jobs"), json={}).json()["data"]
    api.follow(UPLOADS, job["job_id"])
    theirs_key, _ = KeyStore(serve_api.control).create(OTHER_ORG, name="other org")
    theirs = httpx.get(
        api.url(UPLOADS, f"/index-jobs/{job['job_id']}", org=OTHER_ORG), headers={"X-API-Key": theirs_key}
    )
    assert theirs.status_code == 404 and theirs.json()["data"]["code"] == "index_job_not_found"
    cancel = httpx.post(
        api.url(UPLOADS, f"/index-jobs/{job['job_id']}/cancel", org=OTHER_ORG), headers={"X-API-Key": theirs_key}
    )
    assert cancel.status_code == 404
    # And our key cannot reach their event at all.
    assert api.http.get(api.url(UPLOADS, "/media", org=OTHER_ORG)).status_code == 403
