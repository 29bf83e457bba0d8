"""Retention, orphaned clip files and event purge, on real LanceDB tables and local files.

No Ray: the sweeps and the purge run on the control tables, the face index and the output
storage directly. File ages are set with os.utime, record ages by writing their times.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pytest

from app.config import load_app_settings
from app.core.contract import COMPLETED, FAILED, PROCESSING
from app.features.retention import (
    ClipRefs,
    EventBusy,
    expired_requests,
    item_uuids,
    orphan_keys,
    purge_event,
    request_refs,
    sweep_event_orphans,
    sweep_orphans,
    sweep_retention,
)
from app.features.services import Services
from app.store.control import EVENTS, EXTRA_CLIPS, REQUESTS, SCHEMAS, ControlStore
from app.store.events import EventStore
from app.store.records import ExtraClip, SearchRecord
from pipelines.media import fsspec_options
from pipelines.storage import OutputStorage, modified_time
from pipelines.store import BIBS_SCHEMA, MEDIA_INDEXED, faces_schema, tracks_schema
from tests.s3_server import moto_server, needs_s3

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
GRACE = 3600.0


def row(status: str | None, created: datetime | None, updated: datetime | None = None, **extra) -> dict:
    return {
        "request_id": extra.pop("request_id", str(uuid.uuid4())),
        "status": status,
        "created_at": created,
        "updated_at": updated,
        **extra,
    }


# ---- pure: which searches are past retention ---------------------------------------------
def test_expired_requests_follow_the_last_change_and_skip_processing():
    old, fresh = NOW - 8 * DAY, NOW - 6 * DAY
    rows = {
        "old": row(COMPLETED, old, old),
        "old_failed": row(FAILED, old, old),
        "old_face_search_only": row(None, old, old),  # a Face Search record has no status
        "updated_recently": row(COMPLETED, old, fresh),
        "face_searched_recently": row(COMPLETED, old, old, face_searched_at=fresh),
        "old_processing": row(PROCESSING, old, old),
        "age_unknown": row(COMPLETED, None, None),
        "naive_old_time": row(COMPLETED, old.replace(tzinfo=None), None),
        "recent_extra_clip": row(COMPLETED, old, old),
    }
    for rid, r in rows.items():
        r["request_id"] = rid
    activity = {"recent_extra_clip": NOW - DAY}
    got = expired_requests(rows.values(), 7, NOW, activity)
    assert sorted(got) == ["naive_old_time", "old", "old_face_search_only", "old_failed"]
    assert expired_requests(rows.values(), None, NOW) == []  # no retention: kept forever
    assert "updated_recently" in expired_requests(rows.values(), 5, NOW)  # 6 days > 5
    edge = row(COMPLETED, NOW - 7 * DAY, request_id="edge")
    assert expired_requests([edge], 7, NOW) == []  # exactly at the limit: not yet
    assert expired_requests([edge], 7, NOW + timedelta(seconds=1)) == ["edge"]


# ---- pure: which clip files are orphans ---------------------------------------------------
def test_orphan_keys_remove_unreferenced_old_files_only():
    prefix = "1/2/clips"
    now = 1_000_000.0
    old, young = now - GRACE - 1, now - GRACE + 60
    done, busy, gone = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    files = {
        f"{prefix}/{gone}/a.mp4": old,  # no record: removed
        f"{prefix}/{gone}/a.jpg": young,  # no record but young: may be about to be recorded
        f"{prefix}/{done}/kept.mp4": old,  # referenced
        f"{prefix}/{done}/kept.jpg": old,
        f"{prefix}/{done}/extra.mp4": old,  # an extra clip's
        f"{prefix}/{done}/stale.mp4": old,  # an earlier run's, not referenced: removed
        f"{prefix}/{done}/.stale.mp4.abc.tmp": old,  # a half-copied file: removed
        f"{prefix}/{done}/new.mp4": young,
        f"{prefix}/{busy}/x.mp4": old,  # its search is processing: untouched
        f"{prefix}/loose.mp4": old,  # not in a request folder: not ours to judge
        f"{prefix}/{gone}/deeper/x.mp4": old,
        "1/2/thumbnails/t.jpg": old,
    }
    refs = {done: ClipRefs(False, frozenset({"kept", "extra"})), busy: ClipRefs(True)}
    got = orphan_keys(files, prefix, refs, now, GRACE)
    assert got == sorted(
        [f"{prefix}/{gone}/a.mp4", f"{prefix}/{done}/stale.mp4", f"{prefix}/{done}/.stale.mp4.abc.tmp"]
    )
    assert orphan_keys(files, prefix, refs, now, grace_s=10 * GRACE) == []
    # With no grace the young files of unrecorded or settled requests go too.
    assert f"{prefix}/{gone}/a.jpg" in orphan_keys(files, prefix, refs, now, 0.0)
    assert f"{prefix}/{done}/new.mp4" in orphan_keys(files, prefix, refs, now, 0.0)


def test_references_come_from_videos_urls_and_extra_clips():
    assert item_uuids(
        [
            {"uuid": "u1", "video_url": "http://x/media/1/2/clips/r/u1.mp4"},
            {"video_url": "http://x/media/1/2/clips/r/u2.mp4?sig=1", "poster_url": "http://x/r/u3.jpg"},
            {},
        ]
    ) == {"u1", "u2", "u3"}
    record = {"status": COMPLETED, "videos_json": json.dumps([{"uuid": "a"}])}
    clips = [{"status": COMPLETED, "item_json": json.dumps({"uuid": "b", "poster_url": "http://x/c.jpg"})}]
    assert request_refs(record, clips) == ClipRefs(False, frozenset({"a", "b", "c"}))
    assert request_refs(record, [{"status": PROCESSING, "item_json": "{}"}]).busy
    assert request_refs({**record, "status": PROCESSING}, []).busy
    assert request_refs(None, clips) is None


# ---- storage: files with their modification times -----------------------------------------
def test_modified_time_reads_local_and_s3_infos():
    assert modified_time({"mtime": 12.5}) == 12.5
    when = datetime(2030, 1, 1, tzinfo=UTC)
    assert modified_time({"LastModified": when, "size": 3}) == when.timestamp()
    assert modified_time({"last_modified": "2030-01-01T00:00:00Z"}) == when.timestamp()
    assert modified_time({"size": 3}) is None


def test_list_modified_local_and_through_fsspec(tmp_path):
    storage = OutputStorage(str(tmp_path / "out"))
    for name in ("a.mp4", "b.jpg"):
        path = tmp_path / "out" / "1" / "2" / "clips" / "r" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    os.utime(tmp_path / "out/1/2/clips/r/a.mp4", (1000.0, 1000.0))
    got = storage.list_modified("1/2/clips")
    assert set(got) == {"1/2/clips/r/a.mp4", "1/2/clips/r/b.jpg"}
    assert got["1/2/clips/r/a.mp4"] == 1000.0 and got["1/2/clips/r/b.jpg"] > 1000.0
    assert storage.list_modified("1/3/clips") == {}

    # The remote branch (fsspec find with details), on fsspec's in-memory filesystem.
    root = f"memory://facereel-{uuid.uuid4().hex}/out"
    remote = OutputStorage(root)
    fs, base = fsspec.core.url_to_fs(root)
    fs.pipe_file(f"{base}/1/2/clips/r/u.mp4", b"x")
    fs.store[f"{base}/1/2/clips/r/u.mp4"].created = datetime(2030, 1, 1, tzinfo=UTC)
    assert remote.list_modified("1/2/clips") == {"1/2/clips/r/u.mp4": datetime(2030, 1, 1, tzinfo=UTC).timestamp()}


# ---- events: the retention column ------------------------------------------------------
def test_event_retention_is_stored_shown_and_defaults_to_the_api_setting(tmp_path):
    settings = load_app_settings(None, data_dir=str(tmp_path), api={"retention_days": 30})
    events = EventStore(ControlStore(settings.control_uri))
    events.create_org("o", 1)
    own = events.create_event(1, "own", 1, retention_days=7)
    default = events.create_event(1, "default", 2)
    assert events.get(1, 1).retention_days == 7 and own.details(settings)["retention_days"] == 7
    assert events.get(1, 2).retention_days is None and default.details(settings)["retention_days"] == 30
    assert events.get(1, 2).details(load_app_settings(None, data_dir=str(tmp_path)))["retention_days"] is None
    with pytest.raises(ValueError):
        events.create_event(1, "bad", 3, retention_days=0)
    assert [(e.org_id, e.event_id) for e in events.all()] == [(1, 1), (1, 2)]
    events.set_search_rules(1, 1, 0.5, {})  # rewriting the row keeps the retention
    assert events.get(1, 1).retention_days == 7
    with pytest.raises(ValueError):
        load_app_settings(None, api={"retention_days": 0})


def test_an_old_events_table_gains_the_retention_column(tmp_path):
    import lancedb

    uri = str(tmp_path / "control")
    old_schema = pa.schema([f for f in SCHEMAS[EVENTS] if f.name != "retention_days"])
    old_row = {
        "org_id": 1,
        "event_id": 1,
        "name": "old",
        "video_search": True,
        "video_selfie_search": True,
        "face_search": True,
        "bib_search": False,
        "created_at": datetime.now(UTC),
    }
    lancedb.connect(uri).create_table(EVENTS, pa.Table.from_pylist([old_row], schema=old_schema))
    events = EventStore(ControlStore(uri))
    assert "retention_days" in events.control.table(EVENTS).schema.names
    assert events.get(1, 1).retention_days is None


# ---- the sweeps and the purge on a real control store ------------------------------------
@pytest.fixture
def services(tmp_path) -> Services:
    settings = load_app_settings(None, data_dir=str(tmp_path / "data"), api={"orphan_grace_s": GRACE})
    services = Services.create(settings, embedder=None, limiter=None)
    services.events.create_org("o", 1)
    services.events.create_event(1, "kept a week", 1, retention_days=7)
    services.events.create_event(1, "kept forever", 2)
    return services


def add_search(
    services: Services, event_id: int, status: str | None = COMPLETED, age: timedelta = timedelta(0), clips: int = 1
) -> SearchRecord:
    """A stored search of event (1, event_id) whose last change was ``age`` ago, with its clip
    files (and posters) under the output storage."""
    rid = str(uuid.uuid4())
    record = services.records.start(SearchRecord(rid, 1, event_id, PROCESSING, "", "p", np.ones((2, 4), np.float32)))
    folder = Path(services.settings.output_root) / "1" / str(event_id) / "clips" / rid
    folder.mkdir(parents=True)
    record.videos = []
    for _ in range(clips):
        clip_id = str(uuid.uuid4())
        for ext in ("mp4", "jpg"):
            (folder / f"{clip_id}.{ext}").write_bytes(b"clip")
        record.videos.append({"uuid": clip_id, "video_url": f"http://x/media/1/{event_id}/clips/{rid}/{clip_id}.mp4"})
    when = datetime.now(UTC) - age
    record.status, record.created_at, record.updated_at = status, when, when
    services.control.upsert(REQUESTS, [record.to_row()])
    return record


def clip_folder(services: Services, event_id: int, request_id: str) -> Path:
    return Path(services.settings.output_root) / "1" / str(event_id) / "clips" / request_id


def test_retention_sweep_deletes_expired_searches_like_a_consent_delete(services):
    expired = add_search(services, 1, age=8 * DAY)
    expired_failed = add_search(services, 1, FAILED, age=8 * DAY, clips=0)
    fresh = add_search(services, 1, age=6 * DAY)
    processing = add_search(services, 1, PROCESSING, age=8 * DAY)
    busy_clip = add_search(services, 1, age=8 * DAY)  # an old extra clip is still being cut
    recent_clip = add_search(services, 1, age=8 * DAY)  # asked for another clip yesterday
    forever = add_search(services, 2, age=400 * DAY)  # its event keeps everything
    # An expired search's finished extra clip goes with it.
    for rid, status, clip_age in (
        (busy_clip.request_id, PROCESSING, 8 * DAY),
        (recent_clip.request_id, COMPLETED, DAY),
        (expired.request_id, COMPLETED, 8 * DAY),
    ):
        clip = services.extra_clips.start(ExtraClip(str(uuid.uuid4()), rid, 1, 1, "j", PROCESSING, {}))
        if status != PROCESSING:
            services.extra_clips.finish(clip.clip_id, status, {"uuid": "x"})
        when = datetime.now(UTC) - clip_age
        clip_row = services.control.rows(EXTRA_CLIPS, f"clip_id = '{clip.clip_id}'")[0]
        services.control.upsert(EXTRA_CLIPS, [{**clip_row, "created_at": when, "updated_at": when}])

    assert sweep_retention(services) == 2
    for gone in (expired, expired_failed):
        assert services.records.read(gone.request_id) is None
        assert not clip_folder(services, 1, gone.request_id).exists()
    assert services.extra_clips.of_request(expired.request_id) == []
    for kept in (fresh, processing, busy_clip, recent_clip):
        assert services.records.read(kept.request_id) is not None
        assert any(clip_folder(services, 1, kept.request_id).iterdir())
    assert services.records.read(forever.request_id) is not None
    assert sweep_retention(services) == 0

    # The global default applies to the event without its own retention.
    services.settings = services.settings.model_copy(
        update={"api": services.settings.api.model_copy(update={"retention_days": 365})}
    )
    assert sweep_retention(services) == 1
    assert services.records.read(forever.request_id) is None


def test_consent_delete_keeps_its_answer_and_refuses_busy_searches(services):
    from app.core.errors import DomainError
    from app.features.search.requests import delete_request
    from app.http.errors import status_of

    event = services.events.get(1, 1)
    record = add_search(services, 1)
    answer = asyncio.run(delete_request(services, event, record.request_id))
    assert answer["request_id"] == record.request_id and answer["deleted"] is True
    assert answer["removed"]["record"] == 1 and answer["removed"]["selfie_embeddings"] == 2
    assert answer["removed"]["extra_clips"] == 0 and len(answer["removed"]["files"]) == 2
    assert services.records.read(record.request_id) is None
    busy = add_search(services, 1, PROCESSING)
    with pytest.raises(DomainError) as err:
        asyncio.run(delete_request(services, event, busy.request_id))
    assert status_of(err.value.code) == 409
    assert services.records.read(busy.request_id) is not None


def age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_orphan_sweep_removes_unreferenced_old_clip_files(services):
    out = Path(services.settings.output_root)
    done = add_search(services, 1, clips=1)
    busy = add_search(services, 1, PROCESSING)
    clip_id = done.videos[0]["uuid"]
    extra_id = str(uuid.uuid4())
    clip = ExtraClip(str(uuid.uuid4()), done.request_id, 1, 1, "j", PROCESSING, {})
    services.extra_clips.start(clip)
    services.extra_clips.finish(clip.clip_id, COMPLETED, {"uuid": extra_id})
    lost = str(uuid.uuid4())
    files = {
        "lost": out / f"1/1/clips/{lost}/{uuid.uuid4()}.mp4",
        "lost_young": out / f"1/2/clips/{uuid.uuid4()}/{uuid.uuid4()}.mp4",
        "stale": out / f"1/1/clips/{done.request_id}/{uuid.uuid4()}.mp4",
        "extra": out / f"1/1/clips/{done.request_id}/{extra_id}.mp4",
        "thumbnail": out / "1/1/thumbnails/m.jpg",
    }
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    for path in (*files.values(), *clip_folder(services, 1, done.request_id).iterdir()):
        if path != files["lost_young"]:
            age(path, 2 * GRACE)
    for path in clip_folder(services, 1, busy.request_id).iterdir():
        age(path, 2 * GRACE)

    removed = sweep_event_orphans(services, services.events.get(1, 1))
    assert sorted(removed) == sorted(str(files[k].relative_to(out)) for k in ("lost", "stale"))
    assert not files["lost"].exists() and not files["lost"].parent.exists()  # its empty folder too
    assert not files["stale"].exists()
    for kept in ("lost_young", "extra", "thumbnail"):
        assert files[kept].exists(), kept
    assert {p.stem for p in clip_folder(services, 1, done.request_id).iterdir()} == {clip_id, extra_id}
    assert len(list(clip_folder(services, 1, busy.request_id).iterdir())) == 2
    assert sweep_orphans(services) == 0  # every event, nothing left to remove
    age(files["lost_young"], 2 * GRACE)
    assert sweep_orphans(services) == 1 and not files["lost_young"].exists()


def test_sweep_forever_runs_retention_and_the_orphan_sweep(services, monkeypatch):
    import app.features.upkeep

    expired = add_search(services, 1, age=8 * DAY)
    orphan = Path(services.settings.output_root) / f"1/1/clips/{uuid.uuid4()}/x.mp4"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"x")
    age(orphan, 2 * GRACE)
    passes = []

    async def one_pass(_seconds: float) -> None:
        passes.append(1)
        if len(passes) > 1:
            raise asyncio.CancelledError

    monkeypatch.setattr(app.features.upkeep.asyncio, "sleep", one_pass)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(app.features.upkeep.sweep_forever(services))
    assert services.records.read(expired.request_id) is None
    assert not orphan.exists()


# ---- purge ---------------------------------------------------------------------------------
def fill_index(store, event_id: int, media: int = 2) -> None:
    dim = store.pack.dim
    keys = [f"/media/{event_id}/v{i}.mp4" for i in range(media)]
    store.record_media(
        [
            {
                "org_id": 1,
                "event_id": event_id,
                "media_key": k,
                "uri": k,
                "media_type": "video",
                "status": MEDIA_INDEXED,
            }
            for k in keys
        ]
    )
    vec = [1.0] + [0.0] * (dim - 1)
    store.add_faces(
        pa.Table.from_pylist(
            [
                {
                    "face_id": uuid.uuid4().hex,
                    "org_id": 1,
                    "event_id": event_id,
                    "media_type": "video",
                    "media_key": k,
                    "timestamp_s": float(t),
                    "frame_index": t,
                    "track_id": 0,
                    "quality": 0.5,
                    "vector": vec,
                }
                for k in keys
                for t in range(3)
            ],
            schema=faces_schema(store.pack),
        )
    )
    store.add_tracks(
        pa.Table.from_pylist(
            [{"org_id": 1, "event_id": event_id, "media_key": k, "track_id": 0, "vector": vec} for k in keys],
            schema=tracks_schema(store.pack),
        )
    )
    store.add_bibs(
        pa.Table.from_pylist(
            [{"org_id": 1, "event_id": event_id, "media_key": keys[0], "number": "123", "track_id": 0}],
            schema=BIBS_SCHEMA,
        )
    )


def test_purge_removes_everything_of_one_event_only(services):
    store = services.face_store()
    fill_index(store, 1)
    fill_index(store, 2, media=1)
    searches = [add_search(services, 1, clips=2), add_search(services, 1, FAILED, clips=0)]
    clip = ExtraClip(str(uuid.uuid4()), searches[0].request_id, 1, 1, "j", PROCESSING, {})
    services.extra_clips.start(clip)
    services.extra_clips.finish(clip.clip_id, COMPLETED, {"uuid": "e"})
    other = add_search(services, 2)
    thumb = Path(services.settings.output_root) / "1/1/thumbnails/m.jpg"
    thumb.parent.mkdir(parents=True)
    thumb.write_bytes(b"t")

    report = purge_event(services, 1, 1)
    assert (report.records, report.selfie_embeddings, report.extra_clips) == (2, 4, 1)
    assert report.files == {"clips": 4, "thumbnails": 1}
    assert report.index_rows == {"faces": 6, "tracks": 2, "bibs": 1, "media": 2}
    assert not report.event_deleted and services.events.get(1, 1) is not None
    assert not (Path(services.settings.output_root) / "1" / "1").exists()
    assert services.control.table(REQUESTS).count_rows("event_id = 1") == 0
    assert services.control.table(EXTRA_CLIPS).count_rows("event_id = 1") == 0
    assert store.count_faces(1, 1) == 0 and store.media_rows(1, 1) == [] and store.count_bibs(1, 1) == 0
    # The other event is untouched.
    assert store.count_faces(1, 2) == 3 and len(store.media_rows(1, 2)) == 1 and store.count_bibs(1, 2) == 1
    assert services.records.read(other.request_id) is not None
    assert any(clip_folder(services, 2, other.request_id).iterdir())
    assert "search records: 2 (4 selfie embeddings), extra clips: 1" in "\n".join(report.lines())

    again = purge_event(services, 1, 1, delete_event=True)
    assert (again.records, sum(again.files.values()), sum(again.index_rows.values())) == (0, 0, 0)
    assert again.event_deleted and services.events.get(1, 1) is None
    assert services.events.get(1, 2) is not None


def test_purge_refuses_while_a_search_is_processing(services):
    busy = add_search(services, 1, PROCESSING)
    with pytest.raises(EventBusy):
        purge_event(services, 1, 1)
    assert services.records.read(busy.request_id) is not None
    assert any(clip_folder(services, 1, busy.request_id).iterdir())


def test_purge_cli_asks_first_and_prints_what_it_removed(tmp_path, monkeypatch, capsys):
    from app.entry.cli import main

    monkeypatch.delenv("FACEREEL_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./facereel.yaml
    base = ["--data-dir", str(tmp_path / "data")]
    assert main([*base, "org", "create", "--name", "o", "--id", "1"]) == 0
    assert main([*base, "event", "create", "--org", "1", "--name", "e", "--id", "1", "--retention-days", "30"]) == 0
    assert '"retention_days": 30' in capsys.readouterr().out
    settings = load_app_settings(None, data_dir=str(tmp_path / "data"))
    clips = Path(settings.output_root) / "1/1/clips" / str(uuid.uuid4())
    clips.mkdir(parents=True)
    (clips / "c.mp4").write_bytes(b"x")

    monkeypatch.setattr("builtins.input", lambda _prompt: "no")
    assert main([*base, "event", "purge", "--org", "1", "--event", "1"]) == 1
    assert (clips / "c.mp4").exists() and "nothing removed" in capsys.readouterr().out

    monkeypatch.setattr("builtins.input", lambda _prompt: "yes")
    assert main([*base, "event", "purge", "--org", "1", "--event", "1", "--delete-event"]) == 0
    out = capsys.readouterr().out
    assert not clips.exists()
    assert "files: 1 (1 clips)" in out and "event configuration: deleted" in out

    def no_prompt(_prompt: str) -> str:
        raise AssertionError("--yes must not ask")

    monkeypatch.setattr("builtins.input", no_prompt)
    assert main([*base, "event", "purge", "--org", "1", "--event", "1", "--yes"]) == 0


# ---- the orphan sweep on s3:// (LastModified instead of mtime) ---------------------------
@needs_s3
def test_orphan_sweep_on_s3(tmp_path):
    with moto_server(tmp_path) as server:
        options = server.options()
        settings = load_app_settings(
            None,
            data_dir=str(tmp_path / "data"),
            api={"orphan_grace_s": GRACE, "control_uri": str(tmp_path / "control")},
        )
        services = Services.create(settings, embedder=None, limiter=None)
        services.events.create_org("o", 1)
        event = services.events.create_event(1, "on s3", 1, output_uri="s3://facereel-orphans/out")
        services.settings = settings.model_copy(
            update={"store": settings.store.model_copy(update={"storage_options": options})}
        )
        fs = fsspec.filesystem("s3", **fsspec_options("s3://", options))
        fs.mkdir("facereel-orphans")
        recorded = services.records.start(SearchRecord(str(uuid.uuid4()), 1, 1, PROCESSING, "", "p", None))
        services.records.finish(recorded.request_id, recorded.job_id, COMPLETED, videos=[{"uuid": "kept"}])
        lost = str(uuid.uuid4())
        for key in (f"{recorded.request_id}/kept.mp4", f"{recorded.request_id}/stale.mp4", f"{lost}/a.mp4"):
            fs.pipe_file(f"facereel-orphans/out/1/1/clips/{key}", b"x")

        assert sweep_event_orphans(services, event) == []  # all younger than the grace
        removed = sweep_event_orphans(services, event, now=time.time() + 2 * GRACE)
        assert sorted(removed) == sorted([f"1/1/clips/{recorded.request_id}/stale.mp4", f"1/1/clips/{lost}/a.mp4"])
        assert fs.find("facereel-orphans/out") == [f"facereel-orphans/out/1/1/clips/{recorded.request_id}/kept.mp4"]
