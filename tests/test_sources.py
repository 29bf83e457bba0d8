"""The pure rules behind media over HTTP and bring-your-own storage: safe media keys,
allowed roots, location parsing (no secret out, no borrowed credentials), fresh URLs."""

from __future__ import annotations

import os

import pytest

from app.core.errors import DomainError
from app.features.sources import Roots, media_key_for_upload, permitted, within_roots
from app.http.errors import status_of
from app.store.storage_locations import StorageLocation, fresh_urls, parse_location


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("pan.mp4", "pan.mp4"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\Finish Line.MOV", "Finish_Line.MOV"),
        (".hidden", "upload.hidden"),
        ("noext", "noext"),
        ("", "upload"),
        (None, "upload"),
        ("ゴール.mp4", "upload.mp4"),
        ("a" * 300 + ".mp4", "a" * 196 + ".mp4"),
    ],
)
def test_upload_names_become_safe_keys(name, key):
    assert media_key_for_upload(name) == key


def test_uris_must_lie_under_an_allowed_root(tmp_path):
    root = tmp_path / "library"
    (root / "event").mkdir(parents=True)
    (root / "event" / "a.mp4").write_bytes(b"x")
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(b"x")
    os.symlink(outside, root / "event" / "link.mp4")
    roots = [str(root), "s3://bucket/org-1"]
    assert within_roots(str(root / "event" / "a.mp4"), roots) == str(root / "event" / "a.mp4")
    assert within_roots(f"file://{root}/event", roots) == str(root / "event")
    assert within_roots(str(root / "event" / ".." / ".." / "outside.mp4"), roots) is None
    assert within_roots(str(root / "event" / "link.mp4"), roots) is None  # a symlink pointing out
    assert within_roots(str(outside), roots) is None
    assert within_roots("s3://bucket/org-1/videos/a.mp4", roots) == "s3://bucket/org-1/videos/a.mp4"
    assert within_roots("s3://bucket/org-1x/a.mp4", roots) is None  # a prefix of the name is not the folder
    assert within_roots("s3://bucket/org-1/../org-2/a.mp4", roots) is None
    assert within_roots("s3://other/org-1/a.mp4", roots) is None


BODY = {
    "name": "ours",
    "bucket": "org-media",
    "prefix": "/events/2026/",
    "endpoint_url": "http://127.0.0.1:9000",
    "region": "eu-west-1",
    "access_key_id": "AKIAEXAMPLE",
    "secret_access_key": "very-secret",
}


def test_a_location_is_parsed_and_never_shows_its_secret():
    location = parse_location(1, BODY, {"loopback"})
    assert location.root == "s3://org-media/events/2026"
    assert location.outputs_root == "s3://org-media/events/2026/outputs"
    shown = f"{location.public()} {location!r}"
    assert "very-secret" not in shown and "AKIAEXAMPLE" not in shown
    assert location.storage_options()["aws_secret_access_key"] == "very-secret"
    assert location.holds("s3://org-media/events/2026/sources/a.mp4")
    assert not location.holds("s3://org-media/events/20260/a.mp4")


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"endpoint_url": "http://169.254.169.254"}, "link-local"),
        ({"endpoint_url": "ftp://127.0.0.1"}, "scheme"),
        ({"bucket": "../etc"}, "bucket"),
        ({"prefix": "a/../b"}, "dot segments"),
        ({"secret_access_key": None}, "half a key pair"),
        ({"access_key_id": None, "secret_access_key": None}, "no keys: the server's own would be lent"),
        ({"access_key_id": None, "secret_access_key": None, "profile": "default"}, "a server profile"),
        ({"url_ttl_s": 8 * 24 * 3600}, "longer than SigV4 allows"),
        ({"extra": "x"}, "unknown field"),
        ({"name": None}, "no name"),
    ],
)
def test_bad_locations_are_400(change, why):
    body = {k: v for k, v in {**BODY, **change}.items() if v is not None}
    with pytest.raises(DomainError) as err:
        parse_location(1, body, {"loopback"})
    assert status_of(err.value.code) == 400, why


def test_server_credentials_only_when_the_server_lends_them():
    body = {k: v for k, v in BODY.items() if k not in ("access_key_id", "secret_access_key")}
    location = parse_location(1, {**body, "profile": "media"}, {"loopback"}, server_credentials=True)
    assert location.public()["credentials"] == "profile" and "aws_access_key_id" not in location.storage_options()


def test_fresh_urls_sign_every_clip_item_and_nothing_else():
    location = StorageLocation(1, "loc", "ours", "org-media", public_base_url="https://cdn.example.com/media")
    items = [
        {"uuid": "c1", "video_url": "old", "poster_url": "old", "source_video_key": "a.mp4"},
        {"clip_id": "x", "status": "completed", "video": {"uuid": "c2", "video_url": "old"}, "error": None},
        {"video_key": "b.mp4", "error": "clipping failed"},
    ]
    signed = fresh_urls(items, location, "1/2/clips/r")
    assert signed[0]["video_url"] == "https://cdn.example.com/media/1/2/clips/r/c1.mp4"
    assert signed[0]["poster_url"] == "https://cdn.example.com/media/1/2/clips/r/c1.jpg"
    assert signed[1]["video"]["video_url"] == "https://cdn.example.com/media/1/2/clips/r/c2.mp4"
    assert signed[2] == items[2] and items[0]["video_url"] == "old"  # the input is left as it was


def test_in_the_orgs_bucket_an_event_may_not_register_clips_or_other_events_uploads():
    root = "s3://org-media/p"
    roots = Roots([root], [f"{root}/outputs", f"{root}/sources"], [f"{root}/sources/1/2"])
    assert permitted(f"{root}/raw/finish.mp4", roots) == f"{root}/raw/finish.mp4"
    assert permitted(f"{root}/sources/1/2/uploads/x/a.mp4", roots) is not None  # its own uploads
    assert permitted(f"{root}/sources/1/3/uploads/x/a.mp4", roots) is None  # another event's
    assert permitted(f"{root}/sources", roots) is None
    assert permitted(f"{root}/outputs/1/3/clips/r/c.mp4", roots) is None
    assert permitted(f"{root}/sources/1/2/../3/a.mp4", roots) is None
