"""The video-clipping API through real HTTP to a real local Ray Serve application."""

from __future__ import annotations

import shutil
import time
import uuid
from datetime import UTC, datetime, timedelta

import av
import cv2
import httpx
import numpy as np
import pytest

from app.core.contract import STARTED_MESSAGE, STATUS_MESSAGES
from app.store.events import EventStore
from app.store.keys import KeyStore
from app.store.records import NEVER_DISPATCHED_ERROR, OVERDUE_ERROR, RequestRecords, SearchRecord
from pipelines.clip import probe_clip
from pipelines.index import index_event
from pipelines.selfie import embed_selfie
from pipelines.synthetic import distractor_faces, make_flash_video, selfie_of
from tests.conftest import EVENT_ID, EVENT_ORG, own_processes

POLL_INTERVAL_S = 0.25
ENVELOPE = {"responseType", "message", "data"}
RESULT_KEYS = {"request_id", "status", "videos", "error", "clip_errors", "segments", "clips", "rules"}
SEGMENT_KEYS = {
    "segment_id", "source_video_key", "start_seconds", "end_seconds", "matched_frames", "best_similarity", "score",
    "confirmed_frames", "clipped",
}  # fmt: skip
CLIP_KEYS = {"uuid", "video_url", "source_video_key", "start_time", "end_time"}
CLIP_ERROR_KEYS = {"video_key", "error", "status_code"}

OTHER_ORG = 8
DISABLED, NOSEG, CLIPFAIL, UNWRITABLE = 50, 51, 52, 53


class Api:
    def __init__(self, base: str, keys: dict[str, str]) -> None:
        self.base = base
        self.keys = keys
        self.http = httpx.Client(timeout=30)

    def url(self, event: int, suffix: str = "", org: int = EVENT_ORG) -> str:
        return f"{self.base}/api/v1/ext/{org}/event/{event}{suffix}"

    def post(
        self,
        event: int,
        key: str = "main",
        org: int = EVENT_ORG,
        image: bytes | None = None,
        request_id: str | None = None,
        **kw,
    ) -> httpx.Response:
        files = {"file": ("selfie.jpg", image, "image/jpeg")} if image is not None else None
        data = {"request_id": request_id} if request_id is not None else None
        headers = {"X-API-Key": self.keys[key]} if key else {}
        return self.http.post(
            self.url(event, "/video-clipping/search-by-selfie", org), headers=headers, files=files, data=data, **kw
        )

    def get(self, event: int, request_id: str, key: str = "main", org: int = EVENT_ORG) -> httpx.Response:
        headers = {"X-API-Key": self.keys[key]} if key else {}
        return self.http.get(self.url(event, f"/video-clipping/{request_id}", org), headers=headers)

    @staticmethod
    def ray_get(ref, timeout: float = 60.0):
        import ray

        return ray.get(ref, timeout=timeout)

    def wait(self, event: int, request_id: str, deadline_s: float = 120.0, org: int = EVENT_ORG) -> dict:
        """Poll until the search leaves ``processing`` (or the deadline passes)."""
        end = time.monotonic() + deadline_s
        while True:
            body = self.get(event, request_id, org=org).json()
            if body["data"]["status"] != "processing" or time.monotonic() > end:
                return body
            time.sleep(POLL_INTERVAL_S)


def jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def api(serve_api, settings, indexed_event, synthetic_event, tmp_path_factory) -> Api:
    events, keys = EventStore(serve_api.control), KeyStore(serve_api.control)
    pan = synthetic_event.pan
    events.create_org("test org", EVENT_ORG)
    events.create_org("another org", OTHER_ORG)
    events.create_event(EVENT_ORG, "main", EVENT_ID)
    events.create_event(EVENT_ORG, "clipping off", DISABLED, video_selfie_search=False)
    events.create_event(EVENT_ORG, "isolated hit", NOSEG, segments={"min_hits": 2})
    events.create_event(EVENT_ORG, "broken source", CLIPFAIL)
    blocker = tmp_path_factory.mktemp("blocked") / "a-file"
    blocker.write_text("outputs cannot go under a regular file")
    events.create_event(EVENT_ORG, "unwritable output", UNWRITABLE, output_uri=str(blocker / "clips"))
    events.create_event(OTHER_ORG, "theirs", 1)

    flash_dir = tmp_path_factory.mktemp("flash")
    person5 = selfie_of(pan.face_boxes[5] / pan.scale, flip=False, scale=1.0)
    make_flash_video(flash_dir / "flash.mp4", person5, flash_at_s=4.0)
    index_event(serve_api.settings, EVENT_ORG, NOSEG, [str(flash_dir)])
    two = tmp_path_factory.mktemp("two-cameras")
    for name in ("cam_a.mp4", "cam_b.mp4"):
        shutil.copy(pan.path, two / name)
    index_event(serve_api.settings, EVENT_ORG, CLIPFAIL, [str(two)])
    (two / "cam_b.mp4").write_bytes(b"\x00" * 4096)  # unreadable after indexing
    index_event(serve_api.settings, EVENT_ORG, UNWRITABLE, [str(pan.path)])

    made = {
        "main": keys.create(EVENT_ORG, name="all events")[0],
        "main_event_only": keys.create(EVENT_ORG, EVENT_ID, name="event 42 only")[0],
        "other_org": keys.create(OTHER_ORG)[0],
        "limited": keys.create(EVENT_ORG, name="rate limit test")[0],
        "bad": "frk_not-a-real-key",
    }
    inactive, inactive_key = keys.create(EVENT_ORG)
    keys.deactivate(inactive_key.key_id)
    made["inactive"] = inactive
    return Api(serve_api.base_url, made)


def person_selfie(synthetic_event, person: int) -> bytes:
    pan = synthetic_event.pan
    return jpeg(selfie_of(pan.face_boxes[person] / pan.scale))


def assert_result_shape(body: dict, status: str) -> dict:
    assert set(body) == ENVELOPE and body["responseType"] == "success"
    assert body["message"] == STATUS_MESSAGES[status]
    data = body["data"]
    assert set(data) == RESULT_KEYS and data["status"] == status
    for item in data["videos"]:
        assert set(item) >= CLIP_KEYS
        for field in ("start_time", "end_time"):
            assert len(item[field]) == 8 and item[field][2] == ":" and item[field][5] == ":"
    for err in data["clip_errors"]:
        assert set(err) == CLIP_ERROR_KEYS
    for seg in data["segments"]:
        assert set(seg) == SEGMENT_KEYS and seg["start_seconds"] < seg["end_seconds"]
    scores = [s["score"] for s in data["segments"]]
    assert scores == sorted(scores, reverse=True)  # ranked
    return data


# ---- Event Details and authentication -------------------------------------------------
def test_event_details(api, serve_api):
    r = api.http.get(api.url(EVENT_ID), headers={"X-API-Key": api.keys["main"]})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == ENVELOPE and body["responseType"] == "success"
    assert body["data"] == {
        "org_id": EVENT_ORG,
        "event_id": EVENT_ID,
        "name": "main",
        "video_search": True,
        "video_selfie_search": True,
        "face_search": True,
        "bib_search": False,
        "match_threshold": 0.4,
        "match_threshold_source": "model_pack",
        "segments": serve_api.settings.segments.model_dump(),
        "retention_days": None,
    }


@pytest.mark.parametrize(
    ("key", "org", "event", "status", "code"),
    [
        ("", EVENT_ORG, EVENT_ID, 401, "missing_api_key"),
        ("bad", EVENT_ORG, EVENT_ID, 403, "invalid_api_key"),
        ("inactive", EVENT_ORG, EVENT_ID, 403, "invalid_api_key"),
        ("other_org", EVENT_ORG, EVENT_ID, 403, "forbidden_event"),
        ("main_event_only", EVENT_ORG, CLIPFAIL, 403, "forbidden_event"),
        ("main", EVENT_ORG, 999, 404, "event_not_found"),
    ],
)
def test_auth_errors(api, key, org, event, status, code):
    for r in (
        api.http.get(api.url(event, org=org), headers={"X-API-Key": api.keys[key]} if key else {}),
        api.post(event, key=key, org=org, image=b"x"),
    ):
        assert r.status_code == status
        body = r.json()
        assert set(body) == ENVELOPE and body["responseType"] == "error" and body["data"] == {"code": code}
        assert body["message"]


def test_feature_disabled_is_403(api, synthetic_event):
    r = api.post(DISABLED, image=person_selfie(synthetic_event, 2))
    assert r.status_code == 403 and r.json()["data"]["code"] == "feature_disabled"
    assert api.get(DISABLED, str(uuid.uuid4())).status_code == 403


# ---- bad input -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({}, 400, "missing_input"),
        ({"request_id": "not-a-uuid"}, 400, "invalid_request_id"),
        ({"image": b""}, 400, "empty_file"),
        ({"image": b"GIF89a not a jpeg"}, 400, "unsupported_file_type"),
        ({"image": b"\xff\xd8\xff\xe0 truncated jpeg"}, 400, "invalid_image"),
        ({"request_id": str(uuid.uuid4())}, 404, "request_not_found"),
    ],
)
def test_bad_posts_are_4xx_and_store_nothing(api, serve_api, kwargs, status, code):
    records = RequestRecords(serve_api.control, 60)
    before = serve_api.control.table("search_requests").count_rows()
    r = api.post(EVENT_ID, **kwargs)
    assert r.status_code == status and r.json()["data"]["code"] == code
    assert serve_api.control.table("search_requests").count_rows() == before
    if "request_id" in kwargs and code == "request_not_found":
        assert records.get(kwargs["request_id"]) is None


def test_a_selfie_without_a_face_is_400(api):
    r = api.post(EVENT_ID, image=jpeg(np.full((240, 320, 3), 127, np.uint8)))
    assert r.status_code == 400 and r.json()["data"]["code"] == "no_face"


def test_oversized_upload_is_413(api, serve_api):
    big = b"\xff\xd8\xff" + b"0" * (serve_api.settings.api.max_upload_bytes + 10)
    r = api.post(EVENT_ID, image=big)
    assert r.status_code == 413 and r.json()["data"]["code"] == "file_too_large"


def test_get_errors(api):
    assert api.get(EVENT_ID, "not-a-uuid").json()["data"]["code"] == "invalid_request_id"
    r = api.get(EVENT_ID, str(uuid.uuid4()))
    assert r.status_code == 404 and r.json()["data"]["code"] == "request_not_found"


def test_request_id_without_stored_selfie_is_400(api, serve_api):
    rid = str(uuid.uuid4())  # e.g. a record made by a BIB search: no selfie embedding
    RequestRecords(serve_api.control, 60).start(
        SearchRecord(rid, EVENT_ORG, EVENT_ID, "processing", "", "yunet-sface", None)
    )
    r = api.post(EVENT_ID, request_id=rid)
    assert r.status_code == 400 and r.json()["data"]["code"] == "no_stored_selfie"


def test_rate_limit_is_429_with_retry_after(api, serve_api):
    burst = serve_api.settings.api.post_burst
    answers = [api.post(EVENT_ID, key="limited") for _ in range(burst + 20)]
    codes = [r.status_code for r in answers]
    assert codes[0] == 400 and 429 in codes
    # Tokens refill at the key's rate while the loop runs, so a later POST may pass again:
    # what is checked is the answer that was refused.
    limited = answers[codes.index(429)]
    assert int(limited.headers["Retry-After"]) >= 1 and limited.json()["data"]["code"] == "rate_limited"
    assert api.post(EVENT_ID, key="main").status_code == 400  # other keys are unaffected


# ---- the six statuses by real scenarios -----------------------------------------------
def test_completed_clip_is_a_real_mp4_of_the_person(api, synthetic_event, pack, tmp_path):
    person = 4
    selfie = person_selfie(synthetic_event, person)
    r = api.post(EVENT_ID, image=selfie)
    assert r.status_code == 200
    start = r.json()
    assert start["message"] == STARTED_MESSAGE and set(start["data"]) == {"status", "request_id"}
    assert start["data"]["status"] == "processing"
    rid = start["data"]["request_id"]
    data = assert_result_shape(api.wait(EVENT_ID, rid), "completed")
    assert data["error"] is None and data["clip_errors"] == []
    (clip,) = data["videos"]  # the distractor video and the photo give no clip
    assert clip["source_video_key"] == synthetic_event.pan.path.name
    # The window covers the person's visible interval (from the pan geometry), within max_clip_s.
    vis_start, vis_end = synthetic_event.pan.visible_interval(person)
    assert clip["start_seconds"] < vis_end and clip["end_seconds"] > vis_start
    assert clip["start_time"] == f"00:00:{int(clip['start_seconds']):02d}"

    download = api.http.get(clip["video_url"])
    assert download.status_code == 200 and download.headers["content-type"] == "video/mp4"
    local = tmp_path / "clip.mp4"
    local.write_bytes(download.content)
    info = probe_clip(local)
    assert abs(info.duration_s - (clip["end_seconds"] - clip["start_seconds"])) < 0.5
    assert (info.width, info.height) == (640, 360) and info.has_audio
    assert api.http.get(clip["poster_url"]).headers["content-type"] == "image/jpeg"

    query = embed_selfie(pack, cv2.imdecode(np.frombuffer(selfie, np.uint8), cv2.IMREAD_COLOR), 0.7, 20).vector
    found = []
    with av.open(str(local)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % 5:
                continue
            image = frame.to_ndarray(format="bgr24")
            dets = pack.detector.detect(image)
            sims = pack.embedder.embed(pack.align_all(image, dets)) @ query if len(dets) else np.array([0.0])
            found.append(float(sims.max()) >= pack.info.threshold)
    assert len(found) >= 10 and np.mean(found) >= 0.8


def test_request_id_alone_reuses_the_stored_selfie(api, synthetic_event):
    rid = str(uuid.uuid4())
    first = api.post(EVENT_ID, image=person_selfie(synthetic_event, 1), request_id=rid)
    assert first.status_code == 200 and first.json()["data"]["request_id"] == rid  # client-given id
    one = assert_result_shape(api.wait(EVENT_ID, rid), "completed")
    again = api.post(EVENT_ID, request_id=rid)  # no file: the stored embedding is reused
    assert again.status_code == 200 and again.json()["data"]["request_id"] == rid
    two = assert_result_shape(api.wait(EVENT_ID, rid), "completed")
    assert [v["source_video_key"] for v in two["videos"]] == [v["source_video_key"] for v in one["videos"]]
    assert two["videos"][0]["uuid"] != one["videos"][0]["uuid"]  # a new run, new clips
    assert two["videos"][0]["start_time"] == one["videos"][0]["start_time"]


def test_a_stranger_ends_no_matches(api):
    """Matching is the job's first step: the POST answers ``processing`` at once and the
    search ends ``no_matches``, with the contract's message."""
    stranger = jpeg(distractor_faces()[0])  # Tom Hanks: not in the two-camera event
    r = api.post(CLIPFAIL, image=stranger)
    body = r.json()
    assert r.status_code == 200 and body["data"]["status"] == "processing"
    finished = api.wait(CLIPFAIL, body["data"]["request_id"])
    assert finished["message"] == STATUS_MESSAGES["no_matches"]
    data = assert_result_shape(finished, "no_matches")
    assert data["videos"] == [] and data["clip_errors"] == [] and data["error"] is None


def test_one_isolated_hit_gives_no_segments(api, synthetic_event):
    r = api.post(NOSEG, image=person_selfie(synthetic_event, 5))
    assert r.json()["data"]["status"] == "processing"
    data = assert_result_shape(api.wait(NOSEG, r.json()["data"]["request_id"]), "no_segments")
    assert data["clip_errors"] == [{"video_key": "flash.mp4", "error": "no usable segment", "status_code": None}]
    assert data["videos"] == []


def test_unreadable_source_gives_clip_failed_with_the_good_clip(api, synthetic_event):
    r = api.post(CLIPFAIL, image=person_selfie(synthetic_event, 3))
    data = assert_result_shape(api.wait(CLIPFAIL, r.json()["data"]["request_id"]), "clip_failed")
    assert [v["source_video_key"] for v in data["videos"]] == ["cam_a.mp4"]
    assert api.http.get(data["videos"][0]["video_url"]).status_code == 200
    (err,) = data["clip_errors"]
    assert err["video_key"] == "cam_b.mp4" and err["error"]
    assert data["error"] is None


def test_unwritable_output_storage_gives_failed(api, synthetic_event):
    r = api.post(UNWRITABLE, image=person_selfie(synthetic_event, 2))
    data = assert_result_shape(api.wait(UNWRITABLE, r.json()["data"]["request_id"]), "failed")
    assert "not writable" in data["error"]
    assert data["videos"] == [] and data["clip_errors"] == []


def test_overdue_processing_record_turns_failed(api, serve_api):
    """The state a worker that died leaves behind: processing, deadline passed."""
    rid = str(uuid.uuid4())
    records = RequestRecords(serve_api.control, 60)
    record = records.start(
        SearchRecord(rid, EVENT_ORG, EVENT_ID, "processing", "", "yunet-sface", np.zeros(128, np.float32))
    )
    from app.store.control import REQUESTS

    # Its job reached Ray (a task id is stored) and then ran past its deadline.
    overdue = {**record.to_row(), "task_id": "ab" * 12, "deadline_at": datetime.now(UTC) - timedelta(seconds=1)}
    serve_api.control.upsert(REQUESTS, [overdue])
    data = assert_result_shape(api.get(EVENT_ID, rid).json(), "failed")
    assert data["error"] == OVERDUE_ERROR


def test_sweeper_fails_overdue_records_nobody_polls(api, serve_api):
    rid = str(uuid.uuid4())
    records = RequestRecords(serve_api.control, 60)
    record = records.start(SearchRecord(rid, EVENT_ORG, EVENT_ID, "processing", "", "yunet-sface", None))
    from app.store.control import REQUESTS

    serve_api.control.upsert(REQUESTS, [{**record.to_row(), "deadline_at": datetime.now(UTC) - timedelta(seconds=1)}])
    end = time.monotonic() + 30  # the sweep runs every second in the test config
    while (
        serve_api.control.rows(REQUESTS, f"request_id = '{rid}'")[0]["status"] == "processing"
        and time.monotonic() < end
    ):
        time.sleep(POLL_INTERVAL_S)
    assert serve_api.control.rows(REQUESTS, f"request_id = '{rid}'")[0]["status"] == "failed"


def test_media_route_refuses_paths_outside_clips(api):
    for path in (
        "/media/7/42/clips/../../../etc/passwd",
        f"/media/7/42/clips/{uuid.uuid4()}/..%2F..%2Fx.mp4",
        f"/media/7/42/clips/{uuid.uuid4()}/{uuid.uuid4()}.mp4",
    ):
        r = api.http.get(api.base + path)
        assert (r.status_code, r.json()["data"]["code"]) == (404, "not_found"), path


def test_records_survive_a_serve_restart(api, serve_api, synthetic_event):
    r = api.post(EVENT_ID, image=person_selfie(synthetic_event, 0))
    rid = r.json()["data"]["request_id"]
    before = api.wait(EVENT_ID, rid)
    assert before["data"]["status"] == "completed"
    serve_api.restart()
    after = api.get(EVENT_ID, rid)
    assert after.status_code == 200 and after.json() == before
    assert api.http.get(before["data"]["videos"][0]["video_url"]).status_code == 200


# ---- settings cross process boundaries as the driver built them ------------------------
def test_a_replica_with_other_env_still_uses_the_drivers_settings(api, serve_api, synthetic_event):
    """A replica whose FACEREEL_* environment says "ignore every face" keeps the driver's values."""
    import ray
    from ray import serve

    from app.config import load_app_settings
    from app.deployments.embedder import SelfieEmbedder

    env = {"env_vars": {"FACEREEL_MODELS__MIN_FACE_PX": "100000"}}

    @ray.remote(num_cpus=0, runtime_env=env)
    def settings_read_there() -> int:
        return load_app_settings(None).models.min_face_px

    assert ray.get(settings_read_there.remote()) == 100000  # the env is there, and would win if re-read
    deployment = SelfieEmbedder.options(name="EnvCheckEmbedder", ray_actor_options={"num_cpus": 0, "runtime_env": env})
    handle = serve.run(deployment.bind(serve_api.settings), name="envcheck", route_prefix=None)
    try:
        result = handle.embed.remote(person_selfie(synthetic_event, 2)).result(timeout_s=60)
    finally:
        serve.delete("envcheck")
    assert serve_api.settings.models.min_face_px == 20
    assert result["ok"] and result["model_pack"] == "yunet-sface"  # with 100000 px, no face would pass


# ---- several selfies, "not me", extra clips ----------------------------------------------
def post_files(api: Api, event: int, images: list[bytes], key: str = "main") -> httpx.Response:
    files = [("file", (f"selfie{i}.jpg", image, "image/jpeg")) for i, image in enumerate(images)]
    return api.http.post(
        api.url(event, "/video-clipping/search-by-selfie"), headers={"X-API-Key": api.keys[key]}, files=files
    )


def post_json(api: Api, request_id: str, suffix: str, body: object, key: str = "main", org: int = EVENT_ORG,
              event: int = EVENT_ID) -> httpx.Response:  # fmt: skip
    return api.http.post(
        api.url(event, f"/video-clipping/{request_id}/{suffix}", org), headers={"X-API-Key": api.keys[key]}, json=body
    )


def segment_seconds(data: dict) -> float:
    return sum(s["end_seconds"] - s["start_seconds"] for s in data["segments"])


def completed_search(api: Api, images: list[bytes]) -> dict:
    r = post_files(api, EVENT_ID, images)
    assert r.status_code == 200, r.text
    return assert_result_shape(api.wait(EVENT_ID, r.json()["data"]["request_id"]), "completed")


def test_two_selfies_find_at_least_as_much_as_either_alone(api, synthetic_event):
    pan = synthetic_event.pan
    one = person_selfie(synthetic_event, 1)
    other = jpeg(selfie_of(pan.face_boxes[1] / pan.scale, margin=0.4, scale=0.9, flip=False))
    alone = [segment_seconds(completed_search(api, [image])) for image in (one, other)]
    both = completed_search(api, [one, other])
    assert min(alone) > 0 and segment_seconds(both) >= max(alone) - 1e-6
    assert {s["source_video_key"] for s in both["segments"]} == {pan.path.name}


def test_every_selfie_must_show_a_face(api, synthetic_event):
    blank = jpeg(np.full((240, 320, 3), 127, np.uint8))
    r = post_files(api, EVENT_ID, [person_selfie(synthetic_event, 1), blank])
    assert r.status_code == 400 and r.json()["data"]["code"] == "no_face" and "file 2 of 2" in r.json()["message"]


def test_not_me_segment_disappears_on_rerun(api, synthetic_event):
    data = completed_search(api, [person_selfie(synthetic_event, 4)])
    rid = data["request_id"]
    (seg, *_) = data["segments"]
    r = post_json(api, rid, "feedback", {"not_me": [seg["segment_id"]]})
    assert r.status_code == 200 and r.json()["data"]["request_id"] == rid
    after = api.wait(EVENT_ID, rid)["data"]
    assert after["status"] == "no_matches"  # person 4 is seen in one segment only
    overlapping = [
        s
        for s in after["segments"]
        if s["source_video_key"] == seg["source_video_key"]
        and s["start_seconds"] < seg["end_seconds"]
        and s["end_seconds"] > seg["start_seconds"]
    ]
    assert overlapping == []
    again = post_json(api, rid, "feedback", {"not_me": ["no-such-segment"]})
    assert again.status_code == 400 and again.json()["data"]["code"] == "unknown_segment"


def wait_for_clip(api: Api, request_id: str, clip_id: str, deadline_s: float = 120.0) -> dict:
    end = time.monotonic() + deadline_s
    while True:
        data = api.get(EVENT_ID, request_id).json()["data"]
        clip = next(c for c in data["clips"] if c["clip_id"] == clip_id)
        if clip["status"] != "processing" or time.monotonic() > end:
            return clip
        time.sleep(POLL_INTERVAL_S)


@pytest.fixture(scope="module")
def finished_search(api, synthetic_event) -> dict:
    return completed_search(api, [person_selfie(synthetic_event, 0)])


def test_extra_clip_in_9_16_follows_a_segment(api, synthetic_event, tmp_path):
    data = completed_search(api, [person_selfie(synthetic_event, 2)])
    rid, seg = data["request_id"], data["segments"][0]
    r = post_json(api, rid, "clips", {"segment_id": seg["segment_id"], "aspect": "9:16", "max_duration_s": 6})
    assert r.status_code == 200 and r.json()["data"]["status"] == "processing"
    clip = wait_for_clip(api, rid, r.json()["data"]["clip_id"])
    assert clip["status"] == "completed" and clip["aspect"] == "9:16" and clip["error"] is None
    assert clip["end_seconds"] - clip["start_seconds"] <= 6.0 + 1e-6
    local = tmp_path / "vertical.mp4"
    local.write_bytes(api.http.get(clip["video_url"]).content)
    info = probe_clip(local)
    assert abs(info.width / info.height - 9 / 16) < 0.01 and info.height == synthetic_event.pan.height
    assert abs(info.duration_s - (clip["end_seconds"] - clip["start_seconds"])) < 0.2
    # The search itself is untouched: its contract fields still hold the best clip per video.
    assert api.get(EVENT_ID, rid).json()["data"]["videos"] == data["videos"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"segment_id": "nope"}, 400, "unknown_segment"),
        ({"source_video_key": "pan.mp4", "start_seconds": 10.0, "end_seconds": 99.0}, 400, "invalid_times"),
        ({"source_video_key": "pan.mp4", "start_seconds": 5.0, "end_seconds": 4.0}, 400, "invalid_times"),
        ({"source_video_key": "nowhere.mp4", "start_seconds": 1.0, "end_seconds": 2.0}, 400, "unknown_video"),
        ({"segment_id": "x", "aspect": "4:3"}, 400, "invalid_aspect"),
        ({"aspect": "1:1"}, 400, "invalid_body"),
    ],
)
def test_bad_clip_requests_are_400(api, finished_search, serve_api, body, status, code):
    rid = finished_search["request_id"]
    before = serve_api.control.table("extra_clips").count_rows()
    r = post_json(api, rid, "clips", body)
    assert (r.status_code, r.json()["data"]["code"]) == (status, code)
    assert serve_api.control.table("extra_clips").count_rows() == before


def test_another_orgs_request_is_404_for_clips_and_feedback(api, finished_search):
    rid = finished_search["request_id"]
    for suffix, body in (("clips", {"segment_id": "x"}), ("feedback", {"not_me": ["x"]})):
        r = post_json(api, rid, suffix, body, key="other_org", org=OTHER_ORG, event=1)
        assert (r.status_code, r.json()["data"]["code"]) == (404, "request_not_found")


def test_a_finished_result_is_revalidated_with_its_etag(api, finished_search):
    """Polling a finished search: the same ETag every time, 304 without a body when the
    client names it, the whole answer again for any other validator."""
    rid, headers = finished_search["request_id"], {"X-API-Key": api.keys["main"]}
    url = api.url(EVENT_ID, f"/video-clipping/{rid}")
    first, second = api.http.get(url, headers=headers), api.http.get(url, headers=headers)
    etag = first.headers["etag"]
    assert first.status_code == 200 and second.headers["etag"] == etag and etag.startswith('"')
    assert first.json()["data"] == finished_search and "no-cache" in first.headers["cache-control"]
    unchanged = api.http.get(url, headers={**headers, "If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b"" and unchanged.headers["etag"] == etag
    weak = api.http.get(url, headers={**headers, "If-None-Match": f'"other", W/{etag}'})
    assert weak.status_code == 304
    stale = api.http.get(url, headers={**headers, "If-None-Match": '"not-this-one"'})
    assert stale.status_code == 200 and stale.json()["data"] == finished_search
    # The key still decides: a validator does not let another org's key read the record.
    theirs = api.http.get(
        api.url(1, f"/video-clipping/{rid}", org=OTHER_ORG),
        headers={"X-API-Key": api.keys["other_org"], "If-None-Match": etag},
    )
    assert theirs.status_code == 404


def test_a_long_file_name_is_no_reason_to_refuse(api, synthetic_event):
    """Phones name photos freely; python-multipart's default 4 KiB header line refused these."""
    for name in ("x" * 5000 + ".jpg", "写真" * 1500 + ".jpg"):
        r = api.http.post(
            api.url(EVENT_ID, "/video-clipping/search-by-selfie"),
            headers={"X-API-Key": api.keys["main"]},
            files={"file": (name, person_selfie(synthetic_event, 3), "image/jpeg")},
        )
        assert r.status_code == 200 and r.json()["data"]["status"] == "processing", r.text[:200]


def test_too_many_selfies_is_400(api, serve_api, synthetic_event):
    n = serve_api.settings.api.max_selfies + 1
    r = post_files(api, EVENT_ID, [person_selfie(synthetic_event, 3)] * n)
    assert (r.status_code, r.json()["data"]["code"]) == (400, "too_many_files")


# ---- input bounds and consent ----------------------------------------------------------
@pytest.mark.parametrize("big", [2**63, 2**70])
def test_ids_beyond_int64_are_404_on_every_route(api, big):
    key = {"X-API-Key": api.keys["main"]}
    rid, name = str(uuid.uuid4()), f"{uuid.uuid4()}.mp4"
    gets = [
        api.url(big),
        api.url(EVENT_ID, org=big),
        api.url(big, f"/video-clipping/{rid}"),
        api.url(big, f"/face-search/{rid}"),
        api.url(big, "/bib-search?bib=1234"),
        f"{api.base}/media/{big}/{EVENT_ID}/clips/{rid}/{name}",
        f"{api.base}/media/{EVENT_ORG}/{big}/clips/{rid}/{name}",
        f"{api.base}/media/{EVENT_ORG}/{big}/photos/{'0' * 32}",
        f"{api.base}/media/{big}/{EVENT_ID}/photos/{'0' * 32}/thumbnail.jpg",
    ]
    for url in gets:
        r = api.http.get(url, headers=key)
        assert r.status_code == 404 and r.json()["responseType"] == "error", url
    for suffix in ("/video-clipping/search-by-selfie", "/face-search", "/video-clipping/search-by-bib"):
        r = api.http.post(api.url(big, suffix), headers=key, files={"file": ("s.jpg", b"\xff\xd8\xff", "image/jpeg")})
        assert r.status_code == 404 and r.json()["data"]["code"] == "event_not_found", suffix
    assert api.http.delete(api.url(big, f"/video-clipping/{rid}"), headers=key).status_code == 404


def test_a_body_shorter_than_its_content_length_times_out(api, serve_api):
    import socket
    from urllib.parse import urlparse

    limit = serve_api.settings.api.body_timeout_s
    url = urlparse(api.url(EVENT_ID, "/video-clipping/search-by-selfie"))
    head = (
        f"POST {url.path} HTTP/1.1\r\nHost: {url.hostname}\r\nX-API-Key: {api.keys['main']}\r\n"
        "Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: 100000\r\n\r\n--xyz\r\n"
    )
    started = time.monotonic()
    with socket.create_connection((url.hostname, url.port), timeout=limit + 20) as sock:
        sock.sendall(head.encode())  # ...and nothing more
        reply = b""
        while b"\r\n\r\n" not in reply or b'"code"' not in reply:  # headers, then the JSON body
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    reply = reply.decode(errors="replace")
    elapsed = time.monotonic() - started
    assert reply.startswith("HTTP/1.1 408"), reply[:200]
    assert '"body_timeout"' in reply and elapsed < limit + 10, elapsed


def test_delete_removes_every_stored_trace_of_a_request(api, serve_api, synthetic_event):
    from pathlib import Path

    data = completed_search(api, [person_selfie(synthetic_event, 4)])
    rid = data["request_id"]
    folder = Path(serve_api.settings.output_root) / str(EVENT_ORG) / str(EVENT_ID) / "clips" / rid
    files = sorted(p.relative_to(Path(serve_api.settings.output_root)).as_posix() for p in folder.rglob("*"))
    assert files and any(f.endswith(".mp4") for f in files) and any(f.endswith(".jpg") for f in files)
    requests = serve_api.control.table("search_requests")
    assert requests.count_rows(f"request_id = '{rid}'") == 1
    key = {"X-API-Key": api.keys["main"]}
    other = api.http.delete(
        api.url(1, f"/video-clipping/{rid}", org=OTHER_ORG), headers={"X-API-Key": api.keys["other_org"]}
    )
    assert other.status_code == 404 and folder.is_dir()  # another org cannot delete it
    r = api.http.delete(api.url(EVENT_ID, f"/video-clipping/{rid}"), headers=key)
    assert r.status_code == 200, r.text
    removed = r.json()["data"]["removed"]
    assert removed["files"] == files and removed["record"] == 1 and removed["selfie_embeddings"] == 1
    assert not folder.exists() or not any(folder.rglob("*"))
    assert requests.count_rows(f"request_id = '{rid}'") == 0
    assert serve_api.control.table("extra_clips").count_rows(f"request_id = '{rid}'") == 0
    assert api.get(EVENT_ID, rid).status_code == 404
    assert api.http.get(api.url(EVENT_ID, f"/face-search/{rid}"), headers=key).status_code == 404
    assert api.http.get(data["videos"][0]["video_url"]).status_code == 404
    assert api.http.delete(api.url(EVENT_ID, f"/face-search/{rid}"), headers=key).status_code == 404


def test_a_killed_search_worker_fails_the_request_within_seconds(api, synthetic_event):
    """run_search dies mid-job (SIGKILL): the ingress notices its ObjectRef ended without an
    outcome and fails the request, long before the 600 s deadline."""
    import os
    import signal

    import ray

    def search_workers() -> list[int]:  # Ray titles a worker process by the task it runs
        return own_processes("ray::run_search")

    @ray.remote(num_cpus=0)
    class Gate:
        def __init__(self) -> None:
            import asyncio

            self.opened = asyncio.Event()

        async def wait(self) -> None:
            await self.opened.wait()

        async def open(self) -> None:
            self.opened.set()

    @ray.remote(num_cpus=0)
    def hold_cpus(gate) -> None:  # keeps clipping tasks queued, so the job waits on them
        ray.get(gate.wait.remote(), timeout=120)

    # Earlier tests' searches end first (a superseded run may still be removing its clips):
    # the one worker found below must be this search's.
    end = time.monotonic() + 120
    while (earlier := search_workers()) and time.monotonic() < end:
        time.sleep(POLL_INTERVAL_S)
    assert not earlier, f"earlier run_search workers still running: {earlier}"
    gate = Gate.remote()
    free = ray.available_resources().get("CPU", 0.0)
    hog = hold_cpus.options(num_cpus=free).remote(gate) if free > 0 else None
    try:
        r = api.post(EVENT_ID, image=person_selfie(synthetic_event, 3))
        assert r.status_code == 200 and r.json()["data"]["status"] == "processing"
        rid = r.json()["data"]["request_id"]
        end = time.monotonic() + 60
        running = []
        while not running and time.monotonic() < end:
            running = search_workers()
            time.sleep(POLL_INTERVAL_S)
        assert len(running) == 1, f"run_search workers: {running}"
        killed_at = time.monotonic()
        os.kill(running[0], signal.SIGKILL)
        body = api.wait(EVENT_ID, rid, deadline_s=60)
        took = time.monotonic() - killed_at
    finally:
        ray.get(gate.open.remote())
        if hog is not None:
            ray.get(hog)
    data = body["data"]
    assert data["status"] == "failed" and "worker was lost" in data["error"], data
    assert took < 30, took


def test_a_record_whose_job_was_never_dispatched_fails_at_the_dispatch_deadline(api, serve_api):
    """A replica that dies between writing the record and dispatching its job: the record
    fails at api.dispatch_deadline_s, not the 600 s request deadline."""
    limit = serve_api.settings.api.dispatch_deadline_s
    records = RequestRecords(serve_api.control, 600, limit)
    rid = str(uuid.uuid4())
    written = time.monotonic()
    records.start(SearchRecord(rid, EVENT_ORG, EVENT_ID, "processing", "", "yunet-sface", None))
    body = api.wait(EVENT_ID, rid, deadline_s=limit + 30)
    assert body["data"]["status"] == "failed" and time.monotonic() - written < limit + 30
    assert body["data"]["error"] == NEVER_DISPATCHED_ERROR


def test_a_started_search_gets_the_full_deadline(api, serve_api, synthetic_event):
    """The job's first write moves the record from the dispatch deadline to the request's."""
    r = api.post(EVENT_ID, image=person_selfie(synthetic_event, 0))
    rid = r.json()["data"]["request_id"]
    records, short = RequestRecords(serve_api.control, 600), serve_api.settings.api.dispatch_deadline_s
    end = time.monotonic() + short
    while True:
        record = records.read(rid)
        left = (record.deadline_at - datetime.now(UTC)).total_seconds()
        if record.status != "processing" or left > short + 60 or time.monotonic() > end:
            break
        time.sleep(POLL_INTERVAL_S)
    assert record.status != "processing" or left > short + 60, left
    assert_result_shape(api.wait(EVENT_ID, rid), "completed")


def test_a_rerun_removes_the_clip_files_of_the_run_it_supersedes(api, serve_api, synthetic_event):
    from pathlib import Path

    rid = str(uuid.uuid4())
    assert api.post(EVENT_ID, image=person_selfie(synthetic_event, 1), request_id=rid).status_code == 200
    first = assert_result_shape(api.wait(EVENT_ID, rid), "completed")
    assert api.post(EVENT_ID, request_id=rid).status_code == 200  # the same request again
    second = assert_result_shape(api.wait(EVENT_ID, rid), "completed")
    folder = Path(serve_api.settings.output_root) / str(EVENT_ORG) / str(EVENT_ID) / "clips" / rid
    expected = {f"{v['uuid']}.{ext}" for v in second["videos"] for ext in ("mp4", "jpg")}
    # The recorded run removes the earlier run's files right after writing its outcome.
    end = time.monotonic() + 60
    while (found := {p.name for p in folder.glob("*") if p.is_file()}) != expected and time.monotonic() < end:
        time.sleep(POLL_INTERVAL_S)
    assert found == expected
    assert api.http.get(first["videos"][0]["video_url"]).status_code == 404


def test_twenty_concurrent_posts_of_one_request_leave_one_jobs_clip_files(api, serve_api, synthetic_event):
    """One request_id posted 20 times at once: each answer is JSON (accepted, or shed with 503
    and Retry-After); the record ends completed, and once every run has ended the request's
    folder holds exactly the clips the record names (superseded runs are cancelled and leave
    nothing behind)."""
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    key = KeyStore(serve_api.control).create(EVENT_ORG, name="burst")[0]
    rid, image = str(uuid.uuid4()), person_selfie(synthetic_event, 2)

    def post(_: int) -> httpx.Response:
        return httpx.post(
            api.url(EVENT_ID, "/video-clipping/search-by-selfie"),
            headers={"X-API-Key": key},
            files={"file": ("selfie.jpg", image, "image/jpeg")},
            data={"request_id": rid},
            timeout=60,
        )

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(post, range(20)))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503} and 200 in codes, codes
    for r in responses:
        assert r.headers["content-type"].startswith("application/json")
        if r.status_code == 503:
            assert r.json()["data"]["code"] == "overloaded" and int(r.headers["retry-after"]) >= 1
    # Up to eight accepted runs share two cores until each is superseded: allow for that.
    final = assert_result_shape(api.wait(EVENT_ID, rid, deadline_s=300), "completed")
    expected = {f"{v['uuid']}.{ext}" for v in final["videos"] for ext in ("mp4", "jpg")}
    folder = Path(serve_api.settings.output_root) / str(EVENT_ORG) / str(EVENT_ID) / "clips" / rid
    end = time.monotonic() + 90
    while (found := {p.name for p in folder.glob("*") if p.is_file()}) != expected and time.monotonic() < end:
        time.sleep(POLL_INTERVAL_S)  # superseded runs still ending: each removes what it cut
    assert found == expected
    assert api.wait(EVENT_ID, rid)["data"]["videos"] == final["videos"]  # the record moved no further


def test_the_supervisor_never_cancels_a_searchs_current_attempt(api, serve_api, synthetic_event):
    """A cancel that reaches the supervisor for the record's current attempt (a pass that
    judged from an older read of the record) is refused: the attempt runs to its end, where a
    cancelled one would have left the record ``processing`` until the request deadline."""
    from app.features.search.video_clipping import with_rules
    from app.jobs.dispatch import SearchJob
    from app.jobs.supervisor import supervisor

    settings = serve_api.settings
    records = RequestRecords(serve_api.control, 600)
    rid = api.post(EVENT_ID, image=person_selfie(synthetic_event, 2)).json()["data"]["request_id"]
    assert api.wait(EVENT_ID, rid)["data"]["status"] == "completed"
    event = EventStore(serve_api.control).get(EVENT_ORG, EVENT_ID)
    handle = supervisor(settings)

    def rerun() -> str:
        attempt = records.start(with_rules(records.read(rid), event, settings))
        job = SearchJob(
            rid, attempt.job_id, EVENT_ORG, EVENT_ID, event.search_rules(settings), event=event, record=attempt
        )
        api.ray_get(handle.submit_search.remote(settings, job))
        return attempt.job_id

    older = rerun()
    current = rerun()
    assert api.ray_get(handle.cancel.remote([older, current])) <= 1  # the older one, unless it already ended
    body = api.wait(EVENT_ID, rid)
    assert body["data"]["status"] == "completed", body
    assert records.read(rid).job_id == current


def metric_total(text: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus family's samples whose labels include ``labels``."""
    import re

    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        sample_labels = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.rindex("}")]))
        if all(sample_labels.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_expose_requests_latency_and_search_outcomes_and_move(api, serve_api, synthetic_event):
    details = "/api/v1/ext/{org_id:int}/event/{event_id:int}"
    route = {"route": details, "method": "GET", "status": "200"}

    def scrape() -> str:
        r = api.http.get(f"{api.base}/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        return r.text

    before = metric_total(scrape(), "ray_facereel_http_requests_total", **route)
    completed_before = metric_total(scrape(), "ray_facereel_search_outcomes_total", status="completed")
    for _ in range(5):
        assert api.http.get(api.url(EVENT_ID), headers={"X-API-Key": api.keys["main"]}).status_code == 200
    completed_search(api, [person_selfie(synthetic_event, 0)])
    end = time.monotonic() + 60  # Ray's agent exports every few seconds
    while True:
        text = scrape()
        moved = metric_total(text, "ray_facereel_http_requests_total", **route) >= before + 5
        outcome = metric_total(text, "ray_facereel_search_outcomes_total", status="completed") > completed_before
        clipped = metric_total(text, "ray_facereel_clip_seconds_count") >= 1
        if (moved and outcome and clipped) or time.monotonic() > end:
            break
        time.sleep(1.0)
    assert moved and outcome
    assert metric_total(text, "ray_facereel_http_request_seconds_count", route=details, method="GET") >= 5
    for family in ("ray_facereel_http_in_flight", "ray_facereel_search_jobs_running"):
        assert f"# TYPE {family} gauge" in text, family
    assert "# TYPE ray_facereel_http_request_seconds histogram" in text
    # The clip workers record from their own processes; this node exports theirs too.
    assert metric_total(text, "ray_facereel_clip_seconds_count") >= 1


def replica_pids(deployment: str) -> list[int]:
    """The processes of a deployment's replicas (Ray titles a replica's process by it)."""
    return own_processes(f"ServeReplica:facereel:{deployment}")


def json_or_none(response: httpx.Response) -> dict | None:
    try:
        return response.json()
    except ValueError:
        return None


def test_killing_the_embedder_under_load_gives_json_answers_and_no_500(api, serve_api, synthetic_event):
    """SIGKILL of the SelfieEmbedder replica while GETs and POSTs run: every answer is an
    enveloped JSON body; GETs never 500; a POST that met the dead replica is 503 with
    Retry-After (nothing stored), and POSTs work again once Serve has replaced it."""
    import os
    import signal
    import threading

    stop = threading.Event()
    answers: list[tuple[str, int, str, dict | None]] = []
    image = person_selfie(synthetic_event, 4)

    def load(kind: str) -> None:
        key = KeyStore(serve_api.control).create(EVENT_ORG, name=f"embedder kill {kind}")[0]
        with httpx.Client(timeout=60, headers={"X-API-Key": key}) as http:
            while not stop.is_set():
                if kind == "get":
                    r = http.get(api.url(EVENT_ID))
                else:  # one POST a second per key: the key's sustained rate, never a 429
                    stop.wait(1.0)
                    r = http.post(api.url(EVENT_ID, "/face-search"), files={"file": ("s.jpg", image, "image/jpeg")})
                answers.append((kind, r.status_code, r.headers.get("content-type", ""), json_or_none(r)))

    replicas = replica_pids("SelfieEmbedder")
    assert replicas, "no SelfieEmbedder replica process"
    threads = [threading.Thread(target=load, args=(k,)) for k in ("get", "get", "post", "post")]
    for t in threads:
        t.start()
    try:
        end = time.monotonic() + 30
        while sum(1 for a in answers if a[0] == "post") < 2 and time.monotonic() < end:
            time.sleep(0.1)  # load is running before the kill
        for pid in replicas:
            os.kill(pid, signal.SIGKILL)
        killed_at = len(answers)
        recovered = False
        end = time.monotonic() + 90
        while not recovered and time.monotonic() < end:
            time.sleep(0.25)
            recovered = any(a[0] == "post" and a[1] == 200 for a in answers[killed_at:])
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=90)
    assert recovered, "POSTs did not succeed again after the embedder was replaced"
    for kind, status, content_type, body in answers:
        assert content_type.startswith("application/json") and body is not None, (kind, status)
        assert set(body) == ENVELOPE, body
        assert status != 500, (kind, body)
        if kind == "get":
            assert status in (200, 503), (status, body)
    shed = [b for k, s, _, b in answers if s == 503]
    assert all(b["data"]["code"] == "overloaded" for b in shed)


def test_killing_the_ingress_under_load_gives_gets_json_answers_and_no_500(api, serve_api):
    """SIGKILL of the ApiIngress replica while GETs run: requests it held are answered by
    Serve's proxy, through app/http/proxy_envelope.py, with an enveloped 503 and Retry-After
    (never uvicorn's plain-text 500); GETs succeed again once Serve has replaced it."""
    import os
    import signal
    import threading

    stop = threading.Event()
    answers: list[tuple[int, str, dict | None, str | None]] = []

    def load(url: str) -> None:
        key = KeyStore(serve_api.control).create(EVENT_ORG, name="ingress kill")[0]
        with httpx.Client(timeout=60, headers={"X-API-Key": key}) as http:
            while not stop.is_set():
                r = http.get(url)
                content_type, retry_after = r.headers.get("content-type", ""), r.headers.get("retry-after")
                answers.append((r.status_code, content_type, json_or_none(r), retry_after))

    replicas = replica_pids("ApiIngress")
    assert replicas, "no ApiIngress replica process"
    urls = [api.url(EVENT_ID)] * 4
    threads = [threading.Thread(target=load, args=(u,)) for u in urls]
    for t in threads:
        t.start()
    try:
        end = time.monotonic() + 30
        while len(answers) < 20 and time.monotonic() < end:
            time.sleep(0.05)  # load is running before the kill
        for pid in replicas:
            os.kill(pid, signal.SIGKILL)
        killed_at = len(answers)
        recovered = False
        end = time.monotonic() + 120
        while not recovered and time.monotonic() < end:
            time.sleep(0.25)
            recovered = sum(1 for a in answers[killed_at:] if a[0] == 200) >= 8
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=90)
    assert recovered, "GETs did not succeed again after the ingress was replaced"
    assert set(replica_pids("ApiIngress")).isdisjoint(replicas)
    for status, content_type, body, retry_after in answers:
        assert content_type.startswith("application/json") and body is not None, status
        assert set(body) == ENVELOPE, body
        assert status in (200, 503), (status, body)
        if status == 503:
            assert retry_after is not None and body["data"]["code"] == "overloaded", body


# ---- terminal means terminal (issue 26) -----------------------------------------------
def search_workers() -> list[int]:
    """Processes running a run_search task (Ray titles a worker by the task it runs)."""
    return own_processes("ray::run_search")


class CpuHog:
    """Every free CPU held until released: clipping tasks (and a job that reserves CPUs) wait
    in Ray's queue meanwhile. Held by actors, which keep their CPUs for their lifetime (a
    task blocked in ``ray.get`` would hand its CPUs back to the scheduler)."""

    def __init__(self) -> None:
        import ray

        @ray.remote
        class Holder:
            def ready(self) -> bool:
                return True

        self.ray = ray
        self.hogs: list = []
        # Serve's replicas keep their fractions of a CPU: what is free is held, and held
        # again as earlier tests' tasks end, until nothing is left for another task.
        end = time.monotonic() + 60
        while (free := ray.available_resources().get("CPU", 0.0)) > 0.01:
            assert time.monotonic() < end, f"{free} CPUs stayed free"
            holder = Holder.options(num_cpus=free).remote()
            ray.get(holder.ready.remote(), timeout=60)  # placed: its CPUs are taken
            self.hogs.append(holder)
            seen = time.monotonic() + 10
            while ray.available_resources().get("CPU", 0.0) > free - 0.01 and time.monotonic() < seen:
                time.sleep(POLL_INTERVAL_S)  # until the driver's view of resources shows it

    def release(self) -> None:
        for holder in self.hogs:
            self.ray.kill(holder)
        self.hogs = []


def poll_record(records: RequestRecords, rid: str, until, deadline_s: float, seen: list | None = None):
    """Read the record until ``until(record)`` or the deadline; every status read goes to ``seen``."""
    end = time.monotonic() + deadline_s
    while True:
        record = records.read(rid)
        if seen is not None and record is not None:
            seen.append(record.status)
        if (record is not None and until(record)) or time.monotonic() > end:
            return record
        time.sleep(POLL_INTERVAL_S)


def wait_through_restarts(api: Api, rid: str, deadline_s: float = 180.0) -> dict:
    """``Api.wait`` that rides over an ingress being replaced (503s, refused connections)."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            r = api.get(EVENT_ID, rid)
            body = json_or_none(r)
            if r.status_code == 200 and body["data"]["status"] != "processing":
                return body
        except httpx.HTTPError:
            pass
        assert time.monotonic() < end, "the search did not end"
        time.sleep(POLL_INTERVAL_S)


def no_search_workers_left() -> None:
    end = time.monotonic() + 120
    while (earlier := search_workers()) and time.monotonic() < end:
        time.sleep(POLL_INTERVAL_S)
    assert not earlier, f"earlier run_search workers still running: {earlier}"


def test_a_job_finishing_after_its_attempt_was_failed_does_not_change_it(api, serve_api, synthetic_event):
    from app.jobs.supervisor import supervisor

    records = RequestRecords(serve_api.control, 600)
    hog = CpuHog()
    try:
        r = api.post(EVENT_ID, image=person_selfie(synthetic_event, 1))
        rid = r.json()["data"]["request_id"]
        running = poll_record(records, rid, lambda rec: rec.started_at is not None, 60)
        assert running.status == "processing" and running.started_at is not None, running
        # A sweep (or a watcher) ends the attempt while its job still runs.
        assert records.finish(rid, running.job_id, "failed", error="ended while running (test)")
    finally:
        hog.release()
    handle = supervisor(serve_api.settings)
    end = time.monotonic() + 120
    while running.job_id in api.ray_get(handle.running.remote()) and time.monotonic() < end:
        time.sleep(POLL_INTERVAL_S)
    assert running.job_id not in api.ray_get(handle.running.remote()), "the job did not finish"
    after = records.read(rid)
    assert (after.status, after.error, after.job_id) == ("failed", "ended while running (test)", running.job_id)
    assert after.videos == [] and api.get(EVENT_ID, rid).json()["data"]["status"] == "failed"


def test_a_job_queued_past_the_dispatch_deadline_completes_and_is_never_failed(api, serve_api, synthetic_event):
    """The job reserves a CPU here, and every CPU is held for longer than the dispatch
    deadline: it waits in Ray's queue (known to Ray: not lost), then completes."""
    from app.features.search.video_clipping import with_rules
    from app.jobs.dispatch import SearchJob
    from app.jobs.supervisor import supervisor

    settings = serve_api.settings
    limit = settings.api.dispatch_deadline_s
    records = RequestRecords(serve_api.control, 600)
    r = api.post(EVENT_ID, image=person_selfie(synthetic_event, 2))
    rid = r.json()["data"]["request_id"]
    assert api.wait(EVENT_ID, rid)["data"]["status"] == "completed"
    event = EventStore(serve_api.control).get(EVENT_ORG, EVENT_ID)
    reserving = settings.model_copy(update={"api": settings.api.model_copy(update={"search_job_cpus": 1.0})})
    seen: list[str] = []
    hog = CpuHog()
    try:
        attempt = records.start(with_rules(records.read(rid), event, settings))
        job = SearchJob(
            rid, attempt.job_id, EVENT_ORG, EVENT_ID, event.search_rules(settings), event=event, record=attempt
        )
        handed = api.ray_get(supervisor(settings).submit_search.remote(reserving, job))
        assert handed["task_id"] and handed["owner"]
        waited = poll_record(records, rid, lambda rec: rec.status != "processing", limit + 5, seen)
        assert waited.status == "processing" and waited.started_at is None, waited  # queued, not failed
        assert waited.task_id == handed["task_id"] and waited.dispatched_at is not None
    finally:
        hog.release()
    done = poll_record(records, rid, lambda rec: rec.status != "processing", 120, seen)
    assert done.status == "completed" and "failed" not in seen, (done.status, set(seen))
    assert done.queued_s >= limit and done.running_s is not None and done.running_s < done.queued_s


def test_killing_the_ingress_that_dispatched_a_search_still_ends_it_completed(api, serve_api, synthetic_event):
    import os
    import signal

    records = RequestRecords(serve_api.control, 600)
    no_search_workers_left()
    hog = CpuHog()
    try:
        r = api.post(EVENT_ID, image=person_selfie(synthetic_event, 0))
        rid = r.json()["data"]["request_id"]
        running = poll_record(records, rid, lambda rec: rec.started_at is not None, 60)
        assert running.status == "processing", running
        for pid in replica_pids("ApiIngress"):
            os.kill(pid, signal.SIGKILL)
    finally:
        hog.release()
    body = wait_through_restarts(api, rid)  # through the replica Serve starts in its place
    assert body["data"]["status"] == "completed", body
    assert records.read(rid).job_id == running.job_id


def test_a_search_whose_worker_and_ingress_both_die_ends_failed_within_30_s(api, serve_api, synthetic_event):
    import os
    import signal

    no_search_workers_left()
    hog = CpuHog()
    try:
        r = api.post(EVENT_ID, image=person_selfie(synthetic_event, 4))
        rid = r.json()["data"]["request_id"]
        end = time.monotonic() + 60
        while not (workers := search_workers()) and time.monotonic() < end:
            time.sleep(POLL_INTERVAL_S)
        assert len(workers) == 1, workers
        killed_at = time.monotonic()
        for pid in [*workers, *replica_pids("ApiIngress")]:
            os.kill(pid, signal.SIGKILL)
        # The stored status is what the guarantee is about: with the only ingress replica
        # dead, a client reads it once Serve has replaced the replica (seconds more on 2 cores).
        ended = poll_record(RequestRecords(serve_api.control, 600), rid, lambda rec: rec.status != "processing", 60)
        took = time.monotonic() - killed_at
    finally:
        hog.release()  # the ingress's next replica needs its share of a CPU to start
    body = wait_through_restarts(api, rid, deadline_s=120)
    assert ended.status == "failed" and took < 30, (ended.status, took)
    assert body["data"]["status"] == "failed" and "worker was lost" in body["data"]["error"], body


def test_a_search_whose_supervisor_dies_ends_failed_within_30_s(api, serve_api, synthetic_event):
    """The supervisor owns the job's task: killed, the task dies with it; its next
    incarnation (and every replica's sweep) ends the attempt it owned."""
    import ray

    from app.jobs.supervisor import supervisor

    records = RequestRecords(serve_api.control, 600)
    no_search_workers_left()
    hog = CpuHog()
    try:
        r = api.post(EVENT_ID, image=person_selfie(synthetic_event, 5))
        rid = r.json()["data"]["request_id"]
        running = poll_record(records, rid, lambda rec: rec.owner is not None, 60)
        assert running.status == "processing" and running.owner, running
        killed_at = time.monotonic()
        ray.kill(supervisor(serve_api.settings), no_restart=False)
        body = wait_through_restarts(api, rid, deadline_s=60)
        took = time.monotonic() - killed_at
    finally:
        hog.release()
    assert body["data"]["status"] == "failed", body
    assert took < 30, took
    end = time.monotonic() + 60
    while True:  # its next incarnation answers once Ray has restarted it
        try:
            owner = api.ray_get(supervisor(serve_api.settings).owner.remote())
            break
        except ray.exceptions.ActorUnavailableError:
            assert time.monotonic() < end, "the supervisor was not restarted"
            time.sleep(POLL_INTERVAL_S)
    assert owner != running.owner
