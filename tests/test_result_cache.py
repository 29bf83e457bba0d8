"""The replicas' cache of finished results: served from memory only while nothing was
written, so a result that changes (anywhere, by any replica or worker) is never stale."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from app.core.contract import COMPLETED, FAILED, PROCESSING
from app.store.control import ControlStore, local_root
from app.store.records import ExtraClip, ExtraClips, RequestRecords, SearchRecord
from app.store.result_cache import STAMP_SETTLE_S, ResultCache


class Replica:
    """One ingress replica's view: its own store handle, records and result cache."""

    def __init__(self, uri: str, max_entries: int = 100, clock=time.time_ns) -> None:
        self.control = ControlStore(uri)
        self.records = RequestRecords(self.control, 60)
        self.clips = ExtraClips(self.control, 60)
        self.cache = ResultCache(self.control, max_entries, clock)
        self.loads = 0

    def get(self, request_id: str) -> tuple[SearchRecord | None, list[ExtraClip]]:
        def load():
            self.loads += 1
            record = self.records.get(request_id)
            return record, (self.clips.of_request(request_id) if record else [])

        return self.cache.read(request_id, load)


@pytest.fixture
def replicas(tmp_path) -> tuple[Replica, Replica]:
    uri = str(tmp_path / "control")
    return Replica(uri), Replica(uri)


def finished(replica: Replica, status: str = COMPLETED, request_id: str | None = None) -> SearchRecord:
    rid = request_id or str(uuid.uuid4())
    existing = replica.records.get(rid)
    record = replica.records.start(existing or SearchRecord(rid, 1, 1, PROCESSING, "", "p", None))
    assert replica.records.finish(rid, record.job_id, status, hits=7)
    return replica.records.get(rid)


def test_a_settled_result_is_served_from_memory_until_anything_is_written(replicas):
    a, b = replicas
    rid = finished(a).request_id
    first, _ = a.get(rid)
    second, _ = a.get(rid)
    assert first.status == second.status == COMPLETED and a.loads == 1 and a.cache.hits == 1
    finished(b)  # another search, elsewhere: the tables moved on, so the entry is re-read
    assert a.get(rid)[0].status == COMPLETED and a.loads == 2


def test_a_rerun_by_another_replica_is_never_served_stale(replicas):
    a, b = replicas
    rid = finished(a).request_id
    a.get(rid)
    a.get(rid)
    rerun = b.records.start(b.records.get(rid))  # a re-POST or "not me" through replica b
    record, _ = a.get(rid)
    assert record.status == PROCESSING and record.job_id == rerun.job_id
    b.records.finish(rid, rerun.job_id, FAILED, error="x")
    assert a.get(rid)[0].status == FAILED


def test_a_deletion_by_another_replica_is_seen_at_once(replicas):
    a, b = replicas
    rid = finished(a).request_id
    a.get(rid)
    b.records.delete(rid)
    assert a.get(rid) == (None, [])


def test_processing_searches_and_searches_with_clips_being_cut_are_not_kept(replicas):
    a, b = replicas
    rid = str(uuid.uuid4())
    record = a.records.start(SearchRecord(rid, 1, 1, PROCESSING, "", "p", None))
    a.get(rid)
    assert not a.cache.items  # processing: its worker will write, not a request
    a.records.finish(rid, record.job_id, COMPLETED)
    clip = b.clips.start(ExtraClip(uuid.uuid4().hex, rid, 1, 1, record.job_id, PROCESSING, {}))
    _, clips = a.get(rid)
    assert [c.status for c in clips] == [PROCESSING] and not a.cache.items
    b.clips.finish(clip.clip_id, COMPLETED, video={"clip": "done"})  # what the clip worker does
    _, clips = a.get(rid)
    assert [c.status for c in clips] == [COMPLETED] and rid in a.cache.items


def test_the_cache_is_bounded_and_can_be_turned_off(tmp_path):
    uri = str(tmp_path / "control")
    small, off = Replica(uri, max_entries=2), Replica(uri, max_entries=0)
    ids = [finished(small).request_id for _ in range(3)]
    for rid in ids:
        small.get(rid)
    assert list(small.cache.items) == ids[1:]
    off.get(ids[0])
    off.get(ids[0])
    assert off.loads == 2 and not off.cache.items


def later() -> int:
    """A clock past the settle window of every write made so far."""
    return time.time_ns() + int(2 * STAMP_SETTLE_S * 1e9)


def test_a_settled_result_is_served_without_a_version_read_and_never_after_a_write(tmp_path):
    uri = str(tmp_path / "control")
    a, b = Replica(uri, clock=later), Replica(uri, clock=later)
    rid = finished(a).request_id
    assert a.cache.fresh(rid) is None  # not cached yet
    a.get(rid)
    a.cache.versions = None  # a version read now would raise: the stamp alone must answer
    record, clips = a.cache.fresh(rid)
    assert (record.request_id, record.status, clips, a.loads, a.cache.hits) == (rid, COMPLETED, [], 1, 1)
    rerun = b.records.start(b.records.get(rid))  # a re-POST through replica b
    assert a.cache.fresh(rid) is None
    del a.cache.versions
    assert a.get(rid)[0].job_id == rerun.job_id and a.loads == 2


def test_a_directory_time_inside_the_settle_window_proves_nothing(replicas):
    a, b = replicas  # the real clock: b's write just happened
    rid = finished(a).request_id
    a.get(rid)
    finished(b)
    assert a.cache.stamp() is None and a.cache.fresh(rid) is None
    assert a.get(rid)[0].status == COMPLETED and a.loads == 2  # the version check decides


def test_a_check_that_found_nothing_changed_lets_later_polls_skip_it(tmp_path):
    uri = str(tmp_path / "control")
    clock = {"now": time.time_ns()}
    a = Replica(uri, clock=lambda: clock["now"])
    rid = finished(a).request_id
    a.get(rid)  # cached inside the settle window: no stamp
    assert a.cache.fresh(rid) is None
    clock["now"] = later()
    a.get(rid)  # the version check finds it unchanged, and records the stamp
    assert a.cache.fresh(rid) is not None and a.loads == 1


@pytest.mark.parametrize(
    ("uri", "root"),
    [("/data/control", "/data/control"), ("file:///data/control", "/data/control"), ("s3://b/control", None)],
)
def test_only_a_local_store_has_directory_times(uri, root):
    assert local_root(uri) == (None if root is None else Path(root))
