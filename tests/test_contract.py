"""The contract's payloads as a client reads them (pure): app/core/contract.py. Shapes, field
names and messages follow ../shared/seeds/video-clipping-search-api.md; a change here is a
change of the public API."""

from __future__ import annotations

from app.core.contract import (
    BIB_SEARCH_MESSAGES,
    CLIP_FAILED,
    COMPLETED,
    FACE_SEARCH_MESSAGES,
    NO_MATCHES,
    PROCESSING,
    STARTED_MESSAGE,
    STATUS_MESSAGES,
    clip_error,
    clip_item,
    clip_started_payload,
    error_body,
    extra_clip_item,
    photo_item,
    photos_payload,
    result_payload,
    segment_item,
    start_payload,
)

RID = "0b5c8a52-0000-4000-8000-000000000001"


def test_an_error_is_the_envelope_with_a_code():
    assert error_body("Unknown request_id.", "request_not_found") == {
        "responseType": "error",
        "message": "Unknown request_id.",
        "data": {"code": "request_not_found"},
    }


def test_a_started_search_points_to_its_poll_and_a_terminal_start_says_its_status():
    assert start_payload(RID, PROCESSING) == {
        "responseType": "success",
        "message": STARTED_MESSAGE,
        "data": {"status": "processing", "request_id": RID},
    }
    assert start_payload(RID, NO_MATCHES)["message"] == STATUS_MESSAGES[NO_MATCHES]
    assert start_payload(RID, NO_MATCHES)["data"] == {"status": "no_matches", "request_id": RID}


def test_clip_items_and_errors():
    item = clip_item("c1", "http://h/c1.mp4", "cam.mp4", 4.2, 16.1, duration_seconds=11.9)
    assert item == {
        "uuid": "c1",
        "video_url": "http://h/c1.mp4",
        "source_video_key": "cam.mp4",
        "start_time": "00:00:04",  # the start floors, the end ceils: the clip is inside
        "end_time": "00:00:17",
        "duration_seconds": 11.9,
    }
    assert clip_error("cam.mp4", "source missing", 404) == {
        "video_key": "cam.mp4",
        "error": "source missing",
        "status_code": 404,
    }
    assert clip_error("cam.mp4", "lost")["status_code"] is None
    assert extra_clip_item("x1", CLIP_FAILED, {"aspect": "9:16"}, "ffmpeg failed") == {
        "clip_id": "x1",
        "status": "clip_failed",
        "aspect": "9:16",
        "error": "ffmpeg failed",
    }
    assert clip_started_payload(RID, "x1") == {
        "responseType": "success",
        "message": "Clip started. Poll the search's GET for its status.",
        "data": {"status": "processing", "request_id": RID, "clip_id": "x1"},
    }


def test_segments_show_the_contract_fields_only_and_old_records_read_zero_confirmed():
    stored = {
        "segment_id": "s1",
        "source_video_key": "cam.mp4",
        "start_seconds": 1.0,
        "end_seconds": 5.0,
        "matched_frames": 3,
        "best_similarity": 0.61,
        "score": 0.7,
        "clipped": True,
        "track_ids": [4],  # kept in the record, not shown
    }
    shown = {k: v for k, v in stored.items() if k != "track_ids"}
    assert segment_item(stored) == shown | {"confirmed_frames": 0}
    assert list(segment_item(stored)) == [
        "segment_id", "source_video_key", "start_seconds", "end_seconds", "matched_frames",
        "best_similarity", "score", "confirmed_frames", "clipped",
    ]  # fmt: skip
    assert segment_item(stored | {"confirmed_frames": 2})["confirmed_frames"] == 2
    data = result_payload(RID, COMPLETED, [], None, [], [stored])["data"]
    assert data["segments"] == [segment_item(stored)] and data["clips"] == [] and data["rules"] == {}


def test_photos_and_their_pages():
    photo = photo_item("p.jpg", "http://h/p.jpg", "http://h/t.jpg", 0.71, [1.0, 2.0, 3.0, 4.0], None, 2)
    assert photo == {
        "photo_key": "p.jpg",
        "photo_url": "http://h/p.jpg",
        "thumbnail_url": "http://h/t.jpg",
        "similarity": 0.71,
        "bbox": [1.0, 2.0, 3.0, 4.0],
        "taken_at": None,
        "match_count": 2,
    }
    page = photos_payload(FACE_SEARCH_MESSAGES, [photo], 21, 2, 10, request_id=RID)
    assert page == {
        "responseType": "success",
        "message": "Face search completed",
        "data": {
            "request_id": RID,
            "status": "completed",
            "photos": [photo],
            "page": 2,
            "page_size": 10,
            "total_photos": 21,
            "total_pages": 3,
        },
    }
    none = photos_payload(BIB_SEARCH_MESSAGES, [], 0, 1, 10, bib="123")
    assert none["message"] == "No photos of the event show this BIB number."
    assert none["data"] == {
        "bib": "123",
        "status": "no_matches",
        "photos": [],
        "page": 1,
        "page_size": 10,
        "total_photos": 0,
        "total_pages": 0,
    }
    assert next(iter(none["data"])) == "bib"  # the ids lead the data
