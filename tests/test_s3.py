"""facereel on s3:// against a real S3-compatible server (moto) on 127.0.0.1.

The server runs from its own venv, made by scripts/setup-s3-test-server.sh: moto[server]
pins a botocore that the aiobotocore under s3fs in .venv rejects. Options are written
once, in LanceDB's names (``store.storage_options``), and every stage gets that one dict:
LanceDB as is, fsspec/s3fs translated by ``pipelines.media.fsspec_options``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pytest

from pipelines.clip import ClipError, cut_clip, probe_clip
from pipelines.config import ClipSettings, Settings
from pipelines.decode import load_photo, plan_chunks, probe_photo, probe_video, sample_video
from pipelines.index import index_event
from pipelines.media import MediaSource, fsspec_options, list_media
from pipelines.models import pack_info
from pipelines.models.base import PackInfo
from pipelines.selfie import embed_selfie
from pipelines.storage import OutputStorage, StorageError
from pipelines.store import FaceStore, PackMismatch, faces_schema
from pipelines.synthetic import selfie_of
from tests.s3_server import REGION, moto_server, needs_s3

pytestmark = needs_s3

BUCKET = "facereel-test"
ORG, EVENT = 11, 5
# The event's files, as laid out locally and under s3://BUCKET/event/.
PAN_KEY, PHOTO_KEY, OTHER_KEY = "videos/pan.mp4", "group.jpg", "notes.txt"


@dataclass
class S3:
    endpoint: str
    options: dict[str, str]  # LanceDB's names: the one dict facereel takes
    fs: fsspec.AbstractFileSystem
    local: Path  # the event's files on disk, same layout as the prefix

    def uri(self, key: str = "") -> str:
        return f"s3://{BUCKET}/event/{key}"


@pytest.fixture(scope="module")
def s3(tmp_path_factory, synthetic_event):
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        options = server.options()
        fs = fsspec.filesystem("s3", **fsspec_options("s3://", options))
        fs.mkdir(BUCKET)
        local = tmp_path_factory.mktemp("s3-event")
        (local / "videos").mkdir()
        shutil.copyfile(synthetic_event.pan.path, local / PAN_KEY)
        shutil.copyfile(synthetic_event.photo, local / PHOTO_KEY)
        (local / OTHER_KEY).write_text("not media\n")
        for key in (PAN_KEY, PHOTO_KEY, OTHER_KEY):
            fs.put_file(str(local / key), f"{BUCKET}/event/{key}")
        yield S3(server.endpoint, options, fs, local)


def on_store(settings: Settings, uri: str, storage_options: dict[str, str] | None = None) -> Settings:
    store = settings.store.model_copy(update={"uri": uri, "storage_options": storage_options or {}})
    return settings.model_copy(update={"store": store})


# --- option dialects ----------------------------------------------------------------------


def test_lancedb_option_names_become_s3fs_arguments():
    opts = {
        "aws_endpoint": "http://127.0.0.1:9000",
        "allow_http": "true",
        "aws_access_key_id": "k",
        "aws_secret_access_key": "s",
        "aws_session_token": "t",
        "aws_region": "eu-west-1",
    }
    assert fsspec_options("s3://b/p", opts) == {
        "use_listings_cache": False,  # other processes write under listed folders
        "endpoint_url": "http://127.0.0.1:9000",
        "key": "k",
        "secret": "s",
        "token": "t",
        "client_kwargs": {"region_name": "eu-west-1"},
    }
    # s3fs's own names pass through; other protocols and empty options are left alone.
    native = {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": "http://x"}}
    assert fsspec_options("s3://b", native) == {"use_listings_cache": False} | native
    assert fsspec_options("gs://b", {"token": "anon"}) == {"token": "anon"}
    assert fsspec_options("s3://b", None) == {"use_listings_cache": False}


def test_environment_credentials_alone_serve_s3fs_and_lancedb(s3, monkeypatch, tmp_path):
    """No options at all: botocore and LanceDB's object_store both read AWS_* variables."""
    from s3fs import S3FileSystem

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": s3.endpoint,
        "AWS_ALLOW_HTTP": "true",  # LanceDB only; without it reqwest refuses http:// ("BadScheme")
    }.items():
        monkeypatch.setenv(name, value)
    S3FileSystem.clear_instance_cache()
    try:
        keys = {m.media_key for m in list_media([s3.uri()], [".jpg"], [".mp4"])}
        assert keys == {PAN_KEY, PHOTO_KEY}
        info = pack_info("yunet-sface")
        store = FaceStore(f"s3://{BUCKET}/env-store", info)
        assert store.count_faces() == 0
        assert FaceStore(f"s3://{BUCKET}/env-store", info).faces.schema == store.faces.schema
    finally:
        S3FileSystem.clear_instance_cache()


# --- (1) listing --------------------------------------------------------------------------


def test_list_media_walks_a_prefix_with_keys_relative_to_it(s3, settings):
    idx = settings.index
    size = {k: (s3.local / k).stat().st_size for k in (PAN_KEY, PHOTO_KEY, OTHER_KEY)}
    expected = [
        MediaSource(s3.uri(PHOTO_KEY), PHOTO_KEY, "photo", size[PHOTO_KEY]),
        MediaSource(s3.uri(PAN_KEY), PAN_KEY, "video", size[PAN_KEY]),
    ]
    for prefix in (s3.uri(), s3.uri().rstrip("/")):
        got = list_media([prefix], idx.photo_extensions, idx.video_extensions, s3.options)
        assert sorted(got, key=lambda m: m.media_key) == expected
    # Same keys as the same files listed locally.
    local = list_media([str(s3.local)], idx.photo_extensions, idx.video_extensions)
    assert sorted((m.media_key, m.media_type, m.size_bytes) for m in local) == [
        (m.media_key, m.media_type, m.size_bytes) for m in expected
    ]


def test_list_media_takes_a_single_object_by_name(s3, settings):
    idx = settings.index
    (pan,) = list_media([s3.uri(PAN_KEY)], idx.photo_extensions, idx.video_extensions, s3.options)
    assert pan == MediaSource(s3.uri(PAN_KEY), "pan.mp4", "video", (s3.local / PAN_KEY).stat().st_size)
    # Named explicitly, a file is taken whatever its extension (walks skip it).
    (other,) = list_media([s3.uri(OTHER_KEY)], idx.photo_extensions, idx.video_extensions, s3.options)
    assert (other.media_key, other.media_type) == (OTHER_KEY, "video")
    with pytest.raises(FileNotFoundError):
        list_media([s3.uri("missing/")], idx.photo_extensions, idx.video_extensions, s3.options)


# --- (2) decoding -------------------------------------------------------------------------


def test_decode_reads_s3_objects_like_local_files(s3):
    remote, local = s3.uri(PAN_KEY), str(s3.local / PAN_KEY)
    probe = probe_video(remote, s3.options)
    assert probe == probe_video(local)
    assert (probe.width, probe.height, probe.codec) == (640, 360, "h264")

    def frames(uri, opts=None):
        chunks = plan_chunks(probe.start_s, probe.duration_s, 2.0, 5.0, probe.fps)
        assert len(chunks) > 1  # later chunks seek inside the S3 object
        return [f for c in chunks for f in sample_video(uri, probe, c, 2.0, storage_options=opts)]

    got, want = frames(remote, s3.options), frames(local)
    assert [(f.timestamp_s, f.frame_index) for f in got] == [(f.timestamp_s, f.frame_index) for f in want]
    assert len(got) == 32
    assert all(np.array_equal(a.image, b.image) for a, b in zip(got, want, strict=True))

    photo_remote, photo_local = s3.uri(PHOTO_KEY), str(s3.local / PHOTO_KEY)
    assert np.array_equal(load_photo(photo_remote, s3.options), load_photo(photo_local))
    assert probe_photo(photo_remote, s3.options) == probe_photo(photo_local)


# --- (3) + (6) indexing into a LanceDB store on S3 -----------------------------------------


def test_index_event_from_s3_into_an_s3_store_matches_local(s3, settings, ray_cluster, pack, synthetic_event, tmp_path):
    s3_settings = on_store(settings, f"s3://{BUCKET}/lancedb", s3.options)
    local_settings = on_store(settings, str(tmp_path / "lancedb"))
    remote = index_event(s3_settings, ORG, EVENT, [s3.uri()])
    local = index_event(local_settings, ORG, EVENT, [str(s3.local)])
    assert sorted(remote.indexed) == sorted(local.indexed) == sorted([PAN_KEY, PHOTO_KEY])
    assert not remote.failed and remote.frames == local.frames == 32 + 1
    assert remote.faces == local.faces > 0
    # The store really lives in the bucket.
    assert s3.fs.isdir(f"{BUCKET}/lancedb/faces.lance")

    info = pack_info(settings.models.pack)
    s3_store = FaceStore.from_settings(s3_settings, info)
    local_store = FaceStore.from_settings(local_settings, info)
    rows = {r["media_key"]: r for r in s3_store.media_rows(ORG, EVENT)}
    assert rows[PAN_KEY]["uri"] == s3.uri(PAN_KEY) and rows[PAN_KEY]["status"] == "indexed"
    assert rows[PHOTO_KEY]["face_count"] == 6
    assert {k: r["face_count"] for k, r in rows.items()} == {
        r["media_key"]: r["face_count"] for r in local_store.media_rows(ORG, EVENT)
    }

    # One person's selfie finds the same rows in both stores, inside their visible interval.
    pan = synthetic_event.pan
    vector = embed_selfie(pack, selfie_of(pan.face_boxes[2] / pan.scale), 0.7, 20).vector
    hits = s3_store.search(ORG, EVENT, vector, min_similarity=pack.info.threshold, limit=None)
    local_hits = local_store.search(ORG, EVENT, vector, min_similarity=pack.info.threshold, limit=None)
    assert sorted(h.face_id for h in hits) == sorted(h.face_id for h in local_hits)
    times = sorted(h.timestamp_s for h in hits if h.media_key == PAN_KEY)
    start, end = pan.visible_interval(2)
    assert times and start - 0.5 <= times[0] and times[-1] <= end + 0.5
    assert [h.media_key for h in hits if h.media_type == "photo"] == [PHOTO_KEY]

    # Incremental: the same s3 URIs are recognised as already indexed.
    again = index_event(s3_settings, ORG, EVENT, [s3.uri()])
    assert again.skipped == 2 and not again.indexed
    assert s3_store.count_faces(ORG, EVENT) == remote.faces


def test_face_store_on_s3_creates_adds_and_searches(s3):
    info = PackInfo("yunet-sface", "test", 8, 0.4, "n/a")
    uri = f"s3://{BUCKET}/unit-store"
    store = FaceStore(uri, info, s3.options)
    vectors = np.eye(8, dtype=np.float32)[:3]
    common = {"org_id": 1, "event_id": 2, "media_type": "video", "media_key": "a.mp4", "bbox": [0, 0, 10, 10]}
    common |= {
        "landmarks": [0.0] * 10,
        "det_score": 0.9,
        "face_px": 10.0,
        "model_pack": info.name,
        "model_version": "test",
    }
    rows = [
        common | {"face_id": f"f{i}", "timestamp_s": 0.5 * i, "frame_index": 5 * i, "vector": v.tolist()}
        for i, v in enumerate(vectors)
    ]
    store.add_faces(pa.Table.from_pylist(rows, schema=faces_schema(info)))
    store.ensure_indices()
    # A fresh connection (another process, in practice) sees the same rows.
    again = FaceStore(uri, info, s3.options)
    assert again.count_faces(1, 2) == 3
    hits = again.search(1, 2, vectors[1], min_similarity=0.9, limit=None)
    assert [(h.face_id, h.timestamp_s) for h in hits] == [("f1", 0.5)]
    assert hits[0].similarity == pytest.approx(1.0)
    assert again.search(1, 3, vectors[1], limit=5) == []
    with pytest.raises(PackMismatch):
        FaceStore(uri, PackInfo("other", "x", 8, 0.4, "n/a"), s3.options)


# --- (4) clips ----------------------------------------------------------------------------


def test_cut_clip_from_an_s3_source(s3, tmp_path):
    cfg = ClipSettings()
    remote = cut_clip(s3.uri(PAN_KEY), 2.0, 5.0, tmp_path / "s3.mp4", tmp_path / "s3.jpg", 3.0, cfg, s3.options)
    local = cut_clip(str(s3.local / PAN_KEY), 2.0, 5.0, tmp_path / "l.mp4", tmp_path / "l.jpg", 3.0, cfg)
    assert remote.duration_s == pytest.approx(3.0, abs=0.1)
    assert (remote.duration_s, remote.width, remote.height, remote.has_audio) == (
        local.duration_s,
        local.width,
        local.height,
        local.has_audio,
    )
    assert remote.encoding == local.encoding == "smart_cut"  # the copy of an S3 source is cut like a local file
    probed = replace(probe_clip(tmp_path / "s3.mp4"), encoding="smart_cut", start_s=remote.start_s, end_s=remote.end_s)
    assert replace(probed, duration_s=remote.duration_s) == remote
    assert (tmp_path / "s3.jpg").stat().st_size > 0
    with pytest.raises(ClipError) as err:
        cut_clip(s3.uri("nope.mp4"), 0.0, 1.0, tmp_path / "x.mp4", tmp_path / "x.jpg", 0.0, cfg, s3.options)
    assert err.value.status_code == 404


# --- (5) output storage -------------------------------------------------------------------


def test_output_storage_on_s3(s3, tmp_path):
    storage = OutputStorage(f"s3://{BUCKET}/outputs/", s3.options)
    storage.check_writable()
    assert not s3.fs.exists(f"{BUCKET}/outputs") or s3.fs.ls(f"{BUCKET}/outputs", refresh=True) == []
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00clip bytes" * 100)
    key = "org-1/event-2/clip.mp4"
    storage.put(clip, key)
    assert not clip.exists()
    assert storage.exists(key) and not storage.exists("org-1/event-2/other.mp4")
    with storage.open(key) as fh:
        assert fh.read() == b"\x00clip bytes" * 100
    assert s3.fs.cat_file(f"{BUCKET}/outputs/{key}") == b"\x00clip bytes" * 100
    with pytest.raises(StorageError):
        storage.exists("../event/group.jpg")
    with pytest.raises(StorageError):
        storage.local_path(key)
    with pytest.raises(StorageError, match="not writable"):
        OutputStorage("s3://no-such-bucket/outputs", s3.options).check_writable()
