"""Face Search through real HTTP to a real local Ray Serve application: photos of one
person, paginated; the shared request_id that lets video clipping start without a file."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
from PIL import Image

from app.store.events import EventStore
from app.store.keys import KeyStore
from app.store.records import RequestRecords
from pipelines.index import index_event
from pipelines.synthetic import selfie_of
from tests.conftest import shared_faces_or_skip
from tests.test_api import jpeg

ORG = 21
EVENT, NO_FACE_SEARCH, NO_VIDEO, REAL = 1, 2, 3, 4
PHOTO_KEYS = {"photo": "group.jpg"}
POLL_S = 0.25


class Client:
    def __init__(self, base: str, key: str) -> None:
        self.base, self.http = base, httpx.Client(timeout=60, headers={"X-API-Key": key})

    def url(self, event: int, suffix: str) -> str:
        return f"{self.base}/api/v1/ext/{ORG}/event/{event}{suffix}"

    def face_search(self, event: int, images: list[bytes] = (), **data) -> httpx.Response:
        files = [("file", (f"selfie{i}.jpg", image, "image/jpeg")) for i, image in enumerate(images)]
        return self.http.post(self.url(event, "/face-search"), files=files or None, data=data or None)

    def clip_search(self, event: int, **data) -> httpx.Response:
        # A multipart form with no file: the request_id alone.
        return self.http.post(self.url(event, "/video-clipping/search-by-selfie"), files={"_": ("", b"")}, data=data)

    def wait_video(self, event: int, request_id: str, deadline_s: float = 120.0) -> dict:
        end = time.monotonic() + deadline_s
        while True:
            body = self.http.get(self.url(event, f"/video-clipping/{request_id}")).json()
            if body["data"]["status"] != "processing" or time.monotonic() > end:
                return body["data"]
            time.sleep(POLL_S)


@pytest.fixture(scope="module")
def client(serve_api, synthetic_event, tmp_path_factory) -> Client:
    events, keys = EventStore(serve_api.control), KeyStore(serve_api.control)
    events.create_org("face search org", ORG)
    events.create_event(ORG, "photos and video", EVENT)
    events.create_event(ORG, "face search off", NO_FACE_SEARCH, face_search=False)
    events.create_event(ORG, "photos only", NO_VIDEO, video_search=False)
    events.create_event(ORG, "real photos", REAL)
    media = tmp_path_factory.mktemp("face-search-media")
    with Image.open(synthetic_event.photo) as img:  # the group photo, with a capture time
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0x9003] = "2026:04:12 09:30:15"
        img.save(media / "group.jpg", "JPEG", quality=95, exif=exif)
    (media / "pan.mp4").write_bytes(synthetic_event.pan.path.read_bytes())
    report = index_event(serve_api.settings, ORG, EVENT, [str(media)])
    assert sorted(report.indexed) == ["group.jpg", "pan.mp4"], report.failed
    index_event(serve_api.settings, ORG, NO_VIDEO, [str(media / "group.jpg")])
    made = Client(serve_api.base_url, keys.create(ORG, name="face search")[0])
    made.media = media
    return made


def person(synthetic_event, i: int) -> bytes:
    pan = synthetic_event.pan
    return jpeg(selfie_of(pan.face_boxes[i] / pan.scale))


def test_face_search_returns_the_persons_photo_with_urls(client, synthetic_event, serve_api):
    r = client.face_search(EVENT, [person(synthetic_event, 2)])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["responseType"] == "success" and body["message"] == "Face search completed"
    data = body["data"]
    assert data["status"] == "completed" and data["total_photos"] == 1 and data["total_pages"] == 1
    (item,) = data["photos"]
    assert set(item) == {"photo_key", "photo_url", "thumbnail_url", "similarity", "bbox", "taken_at", "match_count"}
    assert item["photo_key"] == "group.jpg" and item["match_count"] == 1 and item["similarity"] >= 0.4
    # The face found is the selfie's person: its box is person 2's box in t1.jpg.
    x1, y1, x2, y2 = item["bbox"]
    tx1, ty1, tx2, ty2 = synthetic_event.t1_faces.boxes[
        sorted(range(6), key=lambda i: synthetic_event.t1_faces.boxes[i][0])[2]
    ]
    assert abs((x1 + x2) / 2 - (tx1 + tx2) / 2) < 10 and abs((y1 + y2) / 2 - (ty1 + ty2) / 2) < 10
    assert item["taken_at"] == "2026-04-12T09:30:15Z"
    photo = httpx.get(item["photo_url"])
    assert photo.status_code == 200 and photo.content == (client.media / "group.jpg").read_bytes()
    assert photo.headers["content-type"] == "image/jpeg"
    thumb = httpx.get(item["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(thumb.content)) as img:
        assert max(img.size) == serve_api.settings.api.thumbnail_px
    again = client.http.get(client.url(EVENT, f"/face-search/{data['request_id']}")).json()
    assert again["data"]["photos"] == data["photos"]


def test_a_stranger_finds_no_photos(client):
    from pipelines.synthetic import distractor_faces

    r = client.face_search(EVENT, [jpeg(distractor_faces()[0])])
    data = r.json()["data"]
    assert (
        r.status_code == 200 and data["status"] == "no_matches" and data["photos"] == [] and data["total_photos"] == 0
    )


def test_pages(client, synthetic_event, serve_api):
    rid = client.face_search(EVENT, [person(synthetic_event, 0)], page_size="1").json()["data"]["request_id"]
    get = client.http.get
    one = get(client.url(EVENT, f"/face-search/{rid}"), params={"page": 1, "page_size": 1}).json()["data"]
    assert len(one["photos"]) == 1 and one["page_size"] == 1
    past = get(client.url(EVENT, f"/face-search/{rid}"), params={"page": 2, "page_size": 1}).json()["data"]
    assert past["photos"] == [] and past["page"] == 2 and past["total_photos"] == 1
    before = serve_api.control.table("search_requests").count_rows()
    for bad in ({"page": "0"}, {"page_size": "100000"}, {"page": "x"}):
        r = client.face_search(EVENT, [person(synthetic_event, 0)], **bad)
        assert r.status_code == 400 and r.json()["data"]["code"] == "invalid_page"
    assert serve_api.control.table("search_requests").count_rows() == before


def test_toggles_are_403(client, synthetic_event):
    r = client.face_search(NO_FACE_SEARCH, [person(synthetic_event, 0)])
    assert r.status_code == 403 and r.json()["data"]["code"] == "feature_disabled"
    r = client.http.get(client.url(NO_FACE_SEARCH, f"/face-search/{uuid.uuid4()}"))
    assert r.status_code == 403 and r.json()["data"]["code"] == "feature_disabled"


def test_bad_requests_are_4xx(client):
    assert client.face_search(EVENT).json()["data"]["code"] == "missing_input"
    r = client.face_search(EVENT, request_id=str(uuid.uuid4()))
    assert r.status_code == 404 and r.json()["data"]["code"] == "request_not_found"
    r = client.http.get(client.url(EVENT, f"/face-search/{uuid.uuid4()}"))
    assert r.status_code == 404
    assert client.http.get(f"{client.base}/media/{ORG}/{EVENT}/photos/{'0' * 32}").status_code == 404
    assert client.http.get(f"{client.base}/media/{ORG}/{EVENT}/photos/..%2F..%2Fetc/thumbnail.jpg").status_code == 404


def test_request_id_from_face_search_clips_from_the_stored_matches(client, synthetic_event, serve_api):
    """The file-less clipping POST uses the matches Face Search stored, not a new search:
    the test moves the stored matches to a window where the person is not, and the clip
    follows them there."""
    pan = synthetic_event.pan
    r = client.face_search(EVENT, [person(synthetic_event, 1)])
    rid = r.json()["data"]["request_id"]
    # Before any video search, video-clipping knows no run of this request_id.
    r = client.http.get(client.url(EVENT, f"/video-clipping/{rid}"))
    assert r.status_code == 404
    records = RequestRecords(serve_api.control, 600)
    stored = records.read(rid)
    assert stored.video_matches and list(stored.video_matches) == ["pan.mp4"] and stored.matches_basis
    start, end = pan.visible_interval(1)
    rows = stored.video_matches["pan.mp4"]
    assert all(start - 1 <= row[0] <= end + 1 for row in rows)
    # Elsewhere in the video: the last 3 s, where person 1 is long gone.
    moved = [[pan.duration_s - 3 + 0.5 * i, 0.9, -1, 0, 0, 10, 10] for i in range(6)]
    serve_api.control.table("search_requests").update(
        where=f"request_id = '{rid}'", values={"video_matches_json": json.dumps({"pan.mp4": moved})}
    )
    r = client.clip_search(EVENT, request_id=rid)
    assert r.status_code == 200, r.text
    data = client.wait_video(EVENT, rid)
    assert data["status"] == "completed", data
    (seg,) = data["segments"]
    assert seg["start_seconds"] >= pan.duration_s - 3.5 and seg["matched_frames"] == 6
    # The Face Search result is still there for the same request_id.
    photos = client.http.get(client.url(EVENT, f"/face-search/{rid}")).json()["data"]["photos"]
    assert [p["photo_key"] for p in photos] == ["group.jpg"]


def test_stale_stored_matches_are_not_used(client, synthetic_event, serve_api):
    """Matches stored under other rules (here: another threshold) are matched again."""
    rid = client.face_search(EVENT, [person(synthetic_event, 3)]).json()["data"]["request_id"]
    serve_api.control.table("search_requests").update(
        where=f"request_id = '{rid}'",
        values={
            "video_matches_json": json.dumps({"pan.mp4": [[0.5 * i, 0.9, -1, 0, 0, 10, 10] for i in range(6)]}),
            "matches_basis": "yunet-sface|0.990000|x|neg=0|faces=1",
        },
    )
    assert client.clip_search(EVENT, request_id=rid).status_code == 200
    data = client.wait_video(EVENT, rid)
    start, _ = synthetic_event.pan.visible_interval(3)
    assert data["status"] == "completed" and data["segments"]
    assert all(s["start_seconds"] >= start - 1.5 for s in data["segments"])  # the real matches, not [0, 2.5]


def test_events_without_video_search_store_no_video_matches(client, synthetic_event, serve_api):
    rid = client.face_search(NO_VIDEO, [person(synthetic_event, 4)]).json()["data"]["request_id"]
    record = RequestRecords(serve_api.control, 600).read(rid)
    assert record.photos and record.video_matches is None


# ---- real photos -------------------------------------------------------------------------
def as_png(path: Path) -> bytes:
    """The photo as a PNG upload (some files named .jpg are WebP; the API takes JPEG/PNG)."""
    with Image.open(path) as img:
        out = io.BytesIO()
        img.save(out, "PNG")
        return out.getvalue()


@pytest.mark.realdata
def test_face_search_on_real_photos_per_identity(client, serve_api):
    """Each identity with two or more photos searches with its first photo of them alone
    (a selfie shows one person); precision and recall over the rest of the event's photos
    (the query photo itself is left out)."""
    root = shared_faces_or_skip()
    report = index_event(serve_api.settings, ORG, REAL, [str(root / "images")])
    assert not report.failed, report.failed
    photos: dict[str, set[str]] = defaultdict(set)
    people: dict[str, int] = defaultdict(int)
    with open(root / "labels.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            photos[row["identity"]].add(row["path"].removeprefix("images/"))
            people[row["path"].removeprefix("images/")] += 1
    table, totals = [], {"tp": 0, "fp": 0, "fn": 0}
    for identity, paths in sorted(photos.items()):
        alone = sorted(p for p in paths if people[p] == 1)
        if len(paths) < 2 or not alone:
            continue
        query = alone[0]
        r = client.face_search(REAL, [as_png(root / "images" / query)], page_size="200")
        assert r.status_code == 200, (identity, r.text)
        found = {p["photo_key"] for p in r.json()["data"]["photos"]} - {query}
        truth = paths - {query}
        tp, fp, fn = len(found & truth), len(found - truth), len(truth - found)
        totals = {"tp": totals["tp"] + tp, "fp": totals["fp"] + fp, "fn": totals["fn"] + fn}
        table.append(
            (identity, len(truth), tp / max(1, tp + fp) if found else 1.0, tp / len(truth), sorted(found - truth))
        )
    lines = [f"{'identity':<22} {'photos':>6} {'precision':>9} {'recall':>6}  wrong"]
    lines += [f"{i:<22} {n:>6} {p:>9.2f} {rc:>6.2f}  {w}" for i, n, p, rc, w in table]
    precision = totals["tp"] / max(1, totals["tp"] + totals["fp"])
    recall = totals["tp"] / max(1, totals["tp"] + totals["fn"])
    lines.append(f"{'overall':<22} {totals['tp'] + totals['fn']:>6} {precision:>9.3f} {recall:>6.3f}")
    report_text = "\n".join(lines)
    print("\n" + report_text)
    Path(serve_api.settings.data_dir, "face_search_real.txt").write_text(report_text)
    assert precision >= 0.93 and recall >= 0.95, report_text
