"""Bring-your-own storage against a real S3-compatible server (moto) on 127.0.0.1: an org
registers its bucket, an event uses it; uploads, the index job, clips and presigned clip
URLs all go through it, and no answer ever carries its secret."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import fsspec
import httpx
import pytest

from app.core.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from app.jobs.notify import org_secret
from app.store.events import EventStore
from app.store.keys import KeyStore
from pipelines.media import fsspec_options
from pipelines.synthetic import selfie_of
from tests.conftest import free_port
from tests.s3_server import moto_server, needs_s3
from tests.test_api import jpeg

pytestmark = needs_s3

ORG, EVENT, SPARE = 71, 1, 2
BUCKET, PREFIX = "org-71-media", "events/2026"
KEY_ID, SECRET = "AKIAFACEREELBYO71", "byo-secret-never-shown-0123456789"
POLL_S = 0.1


@dataclass
class Org:
    http: httpx.Client  # with the org-wide key
    base: str
    endpoint: str
    fs: fsspec.AbstractFileSystem
    event_key: str
    control: object  # app.store.control.ControlStore, the test's view of the control tables

    def org_url(self, suffix: str) -> str:
        return f"{self.base}/api/v1/ext/{ORG}{suffix}"

    def url(self, suffix: str, event: int = EVENT) -> str:
        return f"{self.base}/api/v1/ext/{ORG}/event/{event}{suffix}"

    def location_body(self, **changes) -> dict:
        body = {
            "name": "our bucket",
            "endpoint_url": self.endpoint,
            "bucket": BUCKET,
            "prefix": PREFIX,
            "region": "us-west-2",
            "access_key_id": KEY_ID,
            "secret_access_key": SECRET,
            "url_ttl_s": 600,
        }
        return {**body, **changes}


@pytest.fixture(scope="module")
def org(serve_api, tmp_path_factory) -> Iterator[Org]:
    events = EventStore(serve_api.control)
    events.create_org("bring your own", ORG)
    events.create_event(ORG, "in our bucket", EVENT)
    events.create_event(ORG, "spare", SPARE)
    keys = KeyStore(serve_api.control)
    org_key, _ = keys.create(ORG, name="org-wide")
    event_key, _ = keys.create(ORG, EVENT, name="one event")
    with moto_server(tmp_path_factory.mktemp("moto-byo")) as s3:
        options = {**s3.options(), "aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET}
        fs = fsspec.filesystem("s3", **fsspec_options("s3://", options))
        fs.mkdir(BUCKET)
        with httpx.Client(headers={"X-API-Key": org_key}, timeout=60.0) as client:
            yield Org(client, serve_api.base_url, s3.endpoint, fs, event_key, serve_api.control)


def wait_job(org: Org, job_id: str, deadline_s: float = 240.0) -> list[dict]:
    seen, end = [], time.monotonic() + deadline_s
    while time.monotonic() < end:
        seen.append(org.http.get(org.url(f"/index-jobs/{job_id}")).json()["data"])
        if seen[-1]["status"] in ("completed", "failed", "cancelled"):
            return seen
        time.sleep(POLL_S)
    raise AssertionError(f"job still {seen[-1]['status']}")


def test_registration_is_checked_and_never_shows_a_secret(org):
    refused = [
        (org.location_body(endpoint_url="http://169.254.169.254"), "invalid_storage_location"),
        (org.location_body(endpoint_url=f"http://127.0.0.1:{free_port()}"), "storage_unreachable"),
        (org.location_body(bucket="Not_A_Bucket"), "invalid_storage_location"),
        (org.location_body(prefix="a/../../b"), "invalid_storage_location"),
        (org.location_body(secret_access_key=None), "invalid_storage_location"),
        # No keys: the service's own credentials are not lent (api.storage_server_credentials).
        (org.location_body(access_key_id=None, secret_access_key=None), "invalid_storage_location"),
        (org.location_body(access_key_id=None, secret_access_key=None, profile="default"), "invalid_storage_location"),
        (org.location_body(url_ttl_s=10**9), "invalid_storage_location"),
        ({**org.location_body(), "extra": 1}, "invalid_storage_location"),
    ]
    for body, code in refused:
        response = org.http.post(
            org.org_url("/storage-locations"), json={k: v for k, v in body.items() if v is not None}
        )
        assert (response.status_code, response.json()["data"]["code"]) == (400, code), response.text
        assert SECRET not in response.text
    one_event = httpx.post(
        org.org_url("/storage-locations"), json=org.location_body(), headers={"X-API-Key": org.event_key}
    )
    assert (one_event.status_code, one_event.json()["data"]["code"]) == (403, "org_key_required")
    assert org.http.get(org.org_url("/storage-locations")).json()["data"]["locations"] == []

    response = org.http.post(org.org_url("/storage-locations"), json=org.location_body())
    assert response.status_code == 200, response.text
    location = response.json()["data"]
    assert location["root"] == f"s3://{BUCKET}/{PREFIX}" and location["credentials"] == "keys"
    listed = org.http.get(org.org_url("/storage-locations"))
    assert [loc["location_id"] for loc in listed.json()["data"]["locations"]] == [location["location_id"]]
    for text in (response.text, listed.text, org.http.get(org.url("")).text):
        assert SECRET not in text and KEY_ID not in text


def test_an_event_in_the_orgs_bucket_end_to_end(org, synthetic_event, receiver):
    (location,) = org.http.get(org.org_url("/storage-locations")).json()["data"]["locations"]
    response = org.http.put(org.url("/storage-location"), json={"location_id": location["location_id"]})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["storage"]["root"] == f"s3://{BUCKET}/{PREFIX}"

    files = [
        ("file", ("start.mp4", synthetic_event.pan.path.read_bytes(), "video/mp4")),
        ("file", ("crowd.mp4", synthetic_event.still.read_bytes(), "video/mp4")),
        ("file", ("group.jpg", synthetic_event.photo.read_bytes(), "image/jpeg")),
    ]
    response = org.http.post(org.url("/media"), files=files)
    assert response.status_code == 200, response.text
    uris = {m["media_key"]: m["uri"] for m in response.json()["data"]["media"]}
    assert all(u.startswith(f"s3://{BUCKET}/{PREFIX}/sources/{ORG}/{EVENT}/uploads/") for u in uris.values()), uris
    for uri in uris.values():  # really in the org's bucket
        assert org.fs.exists(uri.removeprefix("s3://"))
    # Another event's uploads and the clip outputs are off limits, even to an event in the same bucket.
    spare = org.http.put(org.url("/storage-location", event=SPARE), json={"location_id": location["location_id"]})
    assert spare.status_code == 200, spare.text
    for uri in (f"s3://{BUCKET}/{PREFIX}/sources/{ORG}/{EVENT}", f"s3://{BUCKET}/{PREFIX}/outputs"):
        refused = org.http.post(org.url("/media", event=SPARE), json={"uris": [uri]})
        assert (refused.status_code, refused.json()["data"]["code"]) == (400, "uri_not_allowed"), refused.text
    # Storage cannot move under media already stored.
    moved = org.http.put(org.url("/storage-location"), json={"location_id": None})
    assert (moved.status_code, moved.json()["data"]["code"]) == (409, "event_has_media")

    job = org.http.post(org.url("/index-jobs"), json={"webhook_url": receiver.url}).json()["data"]
    seen = wait_job(org, job["job_id"])
    assert seen[-1]["status"] == "completed" and seen[-1]["media"]["indexed"] == 3, seen[-1]
    progress = [s["progress_percent"] for s in seen]
    assert progress == sorted(progress) and progress[-1] == 100.0
    order = ("probe", "decode", "detect", "embed", "write")
    stages = [order.index(s["current_stage"]) for s in seen if s["current_stage"]]
    assert stages == sorted(stages)
    ((headers, body),) = receiver.wait_for(1)
    secret = org_secret(org.control, ORG)
    assert verify(secret, body, headers[TIMESTAMP_HEADER.lower()], headers[SIGNATURE_HEADER.lower()])
    assert json.loads(body)["job_id"] == job["job_id"]

    pan = synthetic_event.pan
    selfie = jpeg(selfie_of(pan.face_boxes[0] / pan.scale))
    started = org.http.post(
        org.url("/video-clipping/search-by-selfie"), files=[("file", ("me.jpg", selfie, "image/jpeg"))]
    ).json()["data"]
    deadline = time.monotonic() + 180
    while (result := org.http.get(org.url(f"/video-clipping/{started['request_id']}")).json()["data"])[
        "status"
    ] == "processing":
        assert time.monotonic() < deadline
        time.sleep(POLL_S)
    assert result["status"] == "completed" and result["videos"], result
    clip = result["videos"][0]
    for url in (clip["video_url"], clip["poster_url"]):
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}" == org.endpoint and "Signature" in parts.query, url
        downloaded = httpx.get(url, timeout=30)  # no API key, no credentials: the URL is enough
        assert downloaded.status_code == 200 and len(downloaded.content) > 1000
    assert downloaded.content[:2] == b"\xff\xd8"  # the poster, a JPEG
    video = httpx.get(clip["video_url"], timeout=30).content
    assert video[4:8] == b"ftyp"
    # The clip itself lives in the org's bucket, under the outputs root.
    key = f"{BUCKET}/{PREFIX}/outputs/{ORG}/{EVENT}/clips/{started['request_id']}/{clip['uuid']}.mp4"
    assert org.fs.exists(key)
    # Signed when read, for the location's url_ttl_s (600 s), not when the clip was cut.
    query = parse_qs(urlsplit(clip["video_url"]).query)
    if "X-Amz-Expires" in query:  # SigV4
        assert query["X-Amz-Expires"] == ["600"]
    else:  # SigV2: an absolute expiry time
        assert abs(int(query["Expires"][0]) - (time.time() + 600)) < 120
