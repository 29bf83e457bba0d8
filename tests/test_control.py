"""Control-plane pieces without HTTP: records' job guard, maintenance, the auth cache."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from app.core.contract import COMPLETED, PROCESSING, clip_item, clip_window_hms, format_hms, result_payload
from app.features.auth import TtlCache
from app.features.ratelimit import Bucket, Buckets, TokenLeases, lease_size, take, take_up_to
from app.store.control import REQUESTS, ControlStore
from app.store.records import RequestRecords, SearchRecord, is_past


def test_a_stale_job_cannot_overwrite_a_newer_search(tmp_path):
    records = RequestRecords(ControlStore(str(tmp_path / "control")), 60)
    rid = str(uuid.uuid4())
    first = records.start(SearchRecord(rid, 1, 1, PROCESSING, "", "yunet-sface", np.ones(128, np.float32)))
    old_job = first.job_id
    second = records.start(records.get(rid))
    assert second.job_id != old_job
    assert not records.finish(rid, old_job, COMPLETED)  # the old worker is ignored
    assert records.get(rid).status == PROCESSING
    assert records.finish(rid, second.job_id, COMPLETED, hits=3)
    got = records.get(rid)
    assert got.status == COMPLETED and got.hits == 3
    assert np.array_equal(got.embedding, np.ones((1, 128), np.float32))


def test_concurrent_starts_of_one_new_request_leave_one_row(tmp_path):
    """Twenty replicas' worth of writers start the same new request_id at once: LanceDB's
    merge_insert appends a row for each unless the key is declared (one row, one job)."""
    from concurrent.futures import ThreadPoolExecutor

    uri = str(tmp_path / "control")
    ControlStore(uri)
    rid = str(uuid.uuid4())

    def start(_: int) -> str:
        records = RequestRecords(ControlStore(uri), 60)
        return records.start(SearchRecord(rid, 1, 1, PROCESSING, "", "p", None)).job_id

    with ThreadPoolExecutor(20) as pool:
        jobs = set(pool.map(start, range(20)))
    control = ControlStore(uri)
    rows = control.rows(REQUESTS, f"request_id = '{rid}'")
    assert len(rows) == 1 and rows[0]["job_id"] in jobs


def test_one_process_queues_its_writes_of_one_record_and_each_start_gets_its_full_dispatch_window(tmp_path):
    """Eight of one replica's threads start one request at once (a POST burst). Unqueued,
    their merge_inserts conflicted and retried for seconds, and a start's dispatch deadline,
    counted from before its write, was mostly spent when the write landed (CI: spent)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    records = RequestRecords(ControlStore(str(tmp_path / "control")), 600, dispatch_deadline_s=15)
    rid = str(uuid.uuid4())
    inside, most_inside, guard = 0, 0, threading.Lock()
    upsert = records.control.upsert

    def counted_upsert(*args, **kwargs):
        nonlocal inside, most_inside
        with guard:
            inside += 1
            most_inside = max(most_inside, inside)
        try:
            return upsert(*args, **kwargs)
        finally:
            with guard:
                inside -= 1

    records.control.upsert = counted_upsert

    def start(_: int) -> tuple[str, datetime, datetime]:
        record = records.start(SearchRecord(rid, 1, 1, PROCESSING, "", "p", None))
        return record.job_id, record.deadline_at, datetime.now(UTC)

    with ThreadPoolExecutor(8) as pool:
        started = list(pool.map(start, range(8)))
    assert most_inside == 1  # one write of the record at a time
    assert len(records.writing) == 0  # no lock outlives its holders
    for _, deadline, returned in started:
        assert deadline > returned  # never written already overdue
    stored = records.get(rid)
    last = max(started, key=lambda s: s[1])
    assert stored.job_id == last[0] and stored.deadline_at == last[1]
    assert stored.deadline_at - max(s[2] for s in started) < timedelta(seconds=15)


def test_an_overdue_read_does_not_fail_a_search_whose_deadline_moved_since(tmp_path):
    """A sweep reads a record past its dispatch deadline; before it writes, the replica
    dispatches the job and moves the deadline. The sweep's write must not land."""
    records = RequestRecords(ControlStore(str(tmp_path / "control")), 0.5, dispatch_deadline_s=0.01)
    rid = str(uuid.uuid4())
    record = records.start(SearchRecord(rid, 1, 1, PROCESSING, "", "p", None))
    while not is_past((overdue := records.read(rid)).deadline_at):
        pass  # 10 ms
    records.deadline *= 100_000
    assert records.started(record)
    assert not records.fail_overdue(overdue)
    assert records.get(rid).status == PROCESSING
    records.deadline /= 100_000
    assert records.started(record)
    while not is_past((overdue := records.read(rid)).deadline_at):
        pass  # 0.5 s
    assert records.fail_overdue(overdue)  # once truly past, it fails
    assert records.read(rid).status == "failed"


def test_each_terminal_writer_loses_the_race_cleanly_and_terminal_means_terminal(tmp_path):
    """The attempt's own finish, the overdue sweep, the lost-worker watcher and the lost-owner
    sweep race to end one attempt, each from its own store (as replicas and the job do):
    exactly one writes, the others get False, and the stored status is the winner's. No
    later write of that attempt (a late job's finish, its start, a dispatch) changes it;
    only a new attempt moves the request on."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from app.core.contract import FAILED, NO_MATCHES

    uri = str(tmp_path / "control")
    ControlStore(uri)
    for round_ in range(4):  # each writer gets several chances to be the one that wins
        rid = str(uuid.uuid4())
        records = RequestRecords(ControlStore(uri), 600, dispatch_deadline_s=0.01)
        attempt = records.start(SearchRecord(rid, 1, 1, PROCESSING, "", "p", None))
        assert records.dispatched(rid, attempt.job_id, "task-1", "gone-owner", datetime.now(UTC))
        # Past its deadline, owned by a gone supervisor, its job done: every writer has a reason.
        stored = records.read(rid)
        records.control.upsert(REQUESTS, [{**stored.to_row(), "deadline_at": datetime.now(UTC) - timedelta(seconds=1)}])
        go = threading.Barrier(4)

        def writer(kind: str, rid: str = rid, attempt: SearchRecord = attempt, go=go) -> tuple[str, bool]:
            mine = RequestRecords(ControlStore(uri), 600)  # another process's store and lock
            go.wait()
            if kind == "job":
                return kind, mine.finish(rid, attempt.job_id, COMPLETED, hits=3)
            if kind == "overdue":
                return kind, bool(mine.sweep_overdue())
            if kind == "watcher":
                return kind, mine.finish(rid, attempt.job_id, FAILED, error="worker lost")
            return kind, bool(mine.sweep_lost_owners("live-owner"))

        order = ["job", "overdue", "watcher", "owner"][round_:] + ["job", "overdue", "watcher", "owner"][:round_]
        with ThreadPoolExecutor(4) as pool:
            results = dict(pool.map(writer, order))
        winners = [k for k, won in results.items() if won]
        assert len(winners) == 1, results
        final = records.read(rid)
        assert final.status == (COMPLETED if winners == ["job"] else FAILED), (winners, final.status)
        assert final.status != PROCESSING and final.job_id == attempt.job_id
        # A late job (or a late watcher) of that attempt changes nothing, and is told so.
        assert not records.finish(rid, attempt.job_id, NO_MATCHES)
        assert not records.finish(rid, attempt.job_id, FAILED, error="again")
        assert not records.started(attempt)
        assert not records.dispatched(rid, attempt.job_id, "task-2", "live-owner", datetime.now(UTC))
        assert not records.sweep_overdue() or all(r.request_id != rid for r in records.sweep_overdue())
        assert records.read(rid).to_row() == final.to_row()
    # Only a new attempt (a new POST) moves the request on.
    again = records.start(records.read(rid))
    assert records.read(rid).status == PROCESSING and again.job_id != attempt.job_id


def test_queued_and_running_times_are_kept_apart_and_a_dispatched_attempt_is_not_failed_at_the_dispatch_deadline(
    tmp_path,
):
    records = RequestRecords(ControlStore(str(tmp_path / "control")), 600, dispatch_deadline_s=0.05)
    rid = str(uuid.uuid4())
    attempt = records.start(SearchRecord(rid, 1, 1, PROCESSING, "", "p", None))
    handed = datetime.now(UTC)
    assert records.dispatched(rid, attempt.job_id, "t", "o", handed)
    end = datetime.now(UTC) + timedelta(seconds=0.2)
    while datetime.now(UTC) < end:  # well past the dispatch deadline, queued in Ray
        assert not records.sweep_overdue()
    stored = records.read(rid)
    assert stored.status == PROCESSING and stored.task_id == "t" and stored.owner == "o"
    assert stored.deadline_at - handed > timedelta(seconds=500)
    before_start = datetime.now(UTC)
    assert records.started(attempt)
    assert records.finish(rid, attempt.job_id, COMPLETED)
    after_finish = datetime.now(UTC)
    done = records.read(rid)
    # Queued: dispatch to start, exactly; running: start to outcome, within the two calls.
    assert done.dispatched_at <= done.started_at
    assert done.queued_s == pytest.approx((done.started_at - done.dispatched_at).total_seconds(), abs=1e-3)
    assert done.queued_s >= 0.2
    assert done.running_s is not None
    assert 0 <= done.running_s <= (after_finish - before_start).total_seconds()


def test_a_table_from_before_keys_were_declared_gets_its_key(tmp_path):
    """A control store written by an older release (nullable key, no declared key) is
    migrated on open, and its rows read the same."""
    import lancedb
    import pyarrow as pa

    from app.store.control import PRIMARY_KEYS, SCHEMAS

    uri = str(tmp_path / "control")
    db = lancedb.connect(uri)
    old = pa.schema([f.with_nullable(True) for f in SCHEMAS[REQUESTS]])
    rid = str(uuid.uuid4())
    db.create_table(REQUESTS, data=pa.Table.from_pylist([{"request_id": rid, "status": COMPLETED}], schema=old))
    control = ControlStore(uri)
    field = control.table(REQUESTS).schema.field("request_id")
    assert not field.nullable and field.metadata and PRIMARY_KEYS[REQUESTS] == ["request_id"]
    assert control.rows(REQUESTS, f"request_id = '{rid}'")[0]["status"] == COMPLETED


def test_maintenance_indexes_and_compacts_without_changing_reads(tmp_path):
    control = ControlStore(str(tmp_path / "control"))
    records = RequestRecords(control, 60)
    ids = [str(uuid.uuid4()) for _ in range(5)]
    for rid in ids:
        job = records.start(SearchRecord(rid, 1, 1, PROCESSING, "", "p", None)).job_id
        records.finish(rid, job, COMPLETED)
    before = {rid: records.get(rid).status for rid in ids}
    versions = len(control.table(REQUESTS).list_versions())
    control.maintain(keep_versions_s=0)
    assert any(ix.columns == ["request_id"] for ix in control.table(REQUESTS).list_indices())
    assert len(control.table(REQUESTS).list_versions()) < versions
    assert {rid: records.get(rid).status for rid in ids} == before


def test_ttl_cache_reuses_within_ttl_only():
    calls = []
    cache = TtlCache(60)
    assert cache.get_or_load("k", lambda: calls.append(1) or "v") == "v"
    assert cache.get_or_load("k", lambda: calls.append(1) or "w") == "v"
    assert len(calls) == 1
    off = TtlCache(0)
    assert [off.get_or_load("k", lambda: len(calls)) for _ in range(2)] == [1, 1] and off.items == {}


def test_token_bucket():
    b = Bucket(tokens=2.0, updated=0.0)
    assert take(b, 0.0, rate_per_s=1.0, burst=2) == (True, 0.0)
    assert take(b, 0.0, 1.0, 2) == (True, 0.0)
    allowed, wait = take(b, 0.0, 1.0, 2)
    assert not allowed and wait == 1.0
    assert take(b, 1.0, 1.0, 2)[0]


def test_take_up_to_grants_whole_tokens_only():
    b = Bucket(tokens=5.5, updated=0.0)
    assert take_up_to(b, 0.0, rate_per_s=1.0, burst=10, n=3) == (3, 0.0)
    assert take_up_to(b, 0.0, 1.0, 10, n=3) == (2, 0.0)  # 2.5 left: two whole tokens
    granted, wait = take_up_to(b, 0.0, 1.0, 10, n=3)
    assert granted == 0 and wait == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("per_minute", "burst", "lease_s", "expected"),
    [(60.0, 40, 1.0, 1), (600.0, 100, 1.0, 10), (60000.0, 500, 1.0, 50), (1e9, 10**7, 1.0, 50), (600.0, 100, 0.0, 1)],
    ids=["post-defaults-one-at-a-time", "get-defaults", "tenth-of-burst", "capped", "leases-off"],
)
def test_lease_size(per_minute, burst, lease_s, expected):
    assert lease_size(per_minute, burst, lease_s, max_lease=50) == expected


def test_leases_never_let_a_key_past_its_burst_across_replicas_and_save_calls():
    """Two replicas' leases on one set of buckets: together they admit exactly the burst
    (one token a minute refills nothing during the test), in leases of a tenth of it."""
    import asyncio

    shared, calls = Buckets(), []

    async def take_up_to(*args):
        calls.append(args)
        return shared.take_up_to(*args)

    replicas = [TokenLeases(take_up_to, lease_s=3600.0, max_lease=50) for _ in range(2)]

    async def takes(n: int) -> list[bool]:
        return [(await replicas[i % 2].take("key", "get", 1.0, 200))[0] for i in range(n)]

    assert asyncio.run(takes(200)) == [True] * 200
    assert len(calls) == 10  # ten leases of 20 tokens, not 200 calls
    assert asyncio.run(takes(50)) == [False] * 50  # the burst is spent, whichever replica asks
    refused = asyncio.run(replicas[0].take("key", "get", 1.0, 200))
    assert refused[0] is False and refused[1] > 0


def test_contract_payload_shapes():
    item = clip_item("u", "http://x/u.mp4", "cam.mp4", 42.4, 51.2)
    assert (item["start_time"], item["end_time"]) == ("00:00:42", "00:00:52")
    body = result_payload("r", COMPLETED, [item], None, [])
    assert body == {
        "responseType": "success",
        "message": "Video clipping completed",
        "data": {
            "request_id": "r",
            "status": "completed",
            "videos": [item],
            "error": None,
            "clip_errors": [],
            "segments": [],
            "clips": [],
            "rules": {},
        },
    }


def test_concurrent_misses_of_one_auth_entry_load_it_once(tmp_path):
    """Fifty requests meeting an expired key or event entry read the table once, and a
    failed read reaches every waiter without being cached."""
    import asyncio
    import threading

    from app.config import load_app_settings
    from app.features.services import Services

    services = Services.create(load_app_settings(None, data_dir=str(tmp_path)), embedder=None, limiter=None)
    loads, release = [], threading.Event()

    def load() -> str:
        loads.append(1)
        release.wait(5)  # held until every request is waiting on it
        return "event"

    async def fifty(key, fn) -> list:
        tasks = [asyncio.ensure_future(services.auth.cached(key, fn)) for _ in range(50)]
        asyncio.get_running_loop().call_soon(release.set)  # runs after every task's first step
        return await asyncio.gather(*tasks, return_exceptions=True)

    assert asyncio.run(fifty(("event", 1, 1), load)) == ["event"] * 50 and len(loads) == 1

    def broken() -> str:
        loads.append(1)
        release.wait(5)
        raise OSError("table unreadable")

    release.clear()
    results = asyncio.run(fifty(("event", 1, 2), broken))
    assert all(isinstance(r, OSError) for r in results) and len(loads) == 2
    assert not services.auth.loading and services.auth.cache.peek(("event", 1, 2)) == (False, None)


def test_an_ageing_auth_entry_is_served_at_once_and_read_again_behind_it(tmp_path, caplog):
    """Past half its life an entry is still answered from memory, without waiting (or
    yielding), while one background read renews it; a failed renewal keeps the old entry
    until it expires, and says so."""
    import asyncio
    import threading
    import time

    from app.config import load_app_settings
    from app.features.services import Services

    auth = Services.create(load_app_settings(None, data_dir=str(tmp_path)), embedder=None, limiter=None).auth
    key, ttl = ("event", 1, 9), auth.cache.ttl_s
    loads, release = [], threading.Event()

    def load() -> str:
        loads.append(1)
        release.wait(5)
        return "new"

    async def renew(fn) -> list:
        auth.cache.items[key] = (time.monotonic() - 0.6 * ttl, "old")
        answers = [await auth.cached(key, fn), await auth.cached(key, fn)]  # neither waits for the read
        pending = auth.loading[key]
        release.set()
        await asyncio.wait([pending])
        return [*answers, await auth.cached(key, fn)]

    assert asyncio.run(renew(load)) == ["old", "old", "new"] and len(loads) == 1
    assert auth.cache.peek(key) == (True, "new") and not auth.cache.ageing(key)

    def broken() -> str:
        raise OSError("table unreadable")

    assert asyncio.run(renew(broken)) == ["old", "old", "old"]
    assert "re-reading an auth entry failed: table unreadable" in caplog.text


def test_an_ageing_auth_entry_whose_tables_did_not_change_is_renewed_without_a_read(tmp_path):
    """An entry past half its life is renewed by a stat of its tables when none changed since
    its read (50 pollers' keys would otherwise be re-read 20 times a second); once a table
    changed, it is read again."""
    import asyncio
    import time

    from app.config import load_app_settings
    from app.features.services import Services

    auth = Services.create(load_app_settings(None, data_dir=str(tmp_path)), embedder=None, limiter=None).auth
    auth.settle_ns = 0  # the test's writes are older than that at once; the settle itself is ControlStore's test
    auth.events.create_org("org", 1)
    auth.events.create_event(1, "first", 1)
    key, ttl, loads = ("event", 1, 1), auth.cache.ttl_s, []

    def load():
        loads.append(1)
        return auth.events.get(1, 1)

    async def read_and_settle():
        value = await auth.cached(key, load)
        if key in auth.loading:
            await asyncio.wait([auth.loading[key]])
        return value

    first = asyncio.run(read_and_settle())
    assert first.event_id == 1 and len(loads) == 1 and auth.stamps[key] is not None

    auth.cache.items[key] = (time.monotonic() - 0.6 * ttl, first)  # past half its life
    assert asyncio.run(read_and_settle()) is first and len(loads) == 1  # no read
    assert not auth.cache.ageing(key), "the unchanged entry's life was renewed"

    auth.events.create_event(1, "second", 2)  # the events table changed
    auth.cache.items[key] = (time.monotonic() - 0.6 * ttl, first)
    assert asyncio.run(read_and_settle()) is first and len(loads) == 2  # served, then read again behind it
    assert auth.cache.peek(key)[1] == first and auth.cache.peek(key)[1] is not first


def test_every_n_searches_trigger_background_maintenance(tmp_path):
    import asyncio

    from app.config import load_app_settings
    from app.features.services import Services

    settings = load_app_settings(None, data_dir=str(tmp_path), api={"maintenance_every_searches": 2})
    services = Services.create(settings, embedder=None, limiter=None)
    services.records.start(SearchRecord(str(uuid.uuid4()), 1, 1, PROCESSING, "", "p", None))

    async def two_searches() -> None:
        services.search_started()
        assert not services.background
        services.search_started()
        assert len(services.background) == 1
        await asyncio.gather(*services.background)

    asyncio.run(two_searches())
    assert services.searches_since_maintenance == 0
    assert any(ix.columns == ["request_id"] for ix in services.control.table(REQUESTS).list_indices())


# --- the contract's HH:MM:SS times


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0, "00:00:00"), (59.999, "00:00:59"), (61.0, "00:01:01"), (3661.5, "01:01:01"), (360_000, "100:00:00")],
)
def test_format_hms_floors(seconds, expected):
    assert format_hms(seconds) == expected


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf")])
def test_format_hms_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        format_hms(bad)


def test_clip_window_hms_floors_start_and_ceils_end():
    assert clip_window_hms(12.3, 17.01) == ("00:00:12", "00:00:18")
    assert clip_window_hms(12.0, 17.0) == ("00:00:12", "00:00:17")
    assert clip_window_hms(3599.5, 3600.2) == ("00:59:59", "01:00:01")
    with pytest.raises(ValueError):
        clip_window_hms(5.0, 4.0)


def test_settings_pickle_without_rereading_the_environment(monkeypatch, tmp_path):
    import pickle

    from app.config import load_app_settings

    settings = load_app_settings(None, data_dir=str(tmp_path), decode={"sample_fps": 3.0})
    monkeypatch.setenv("FACEREEL_DECODE__SAMPLE_FPS", "7")
    monkeypatch.setenv("FACEREEL_API__MAX_UPLOAD_BYTES", "2048")
    copy = pickle.loads(pickle.dumps(settings))
    assert copy == settings and copy.decode.sample_fps == 3.0 and copy.api.max_upload_bytes == 10 * 1024 * 1024
    assert load_app_settings(None).decode.sample_fps == 7.0  # what re-reading would have given


def test_example_config_lists_every_setting_with_its_default():
    from pathlib import Path

    import yaml

    from app.config import AppSettings, load_app_settings

    example = Path(__file__).resolve().parents[1] / "facereel.example.yaml"

    def keys(d: dict, prefix: str = "") -> set[str]:
        out = set()
        for k, v in d.items():
            out |= keys(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {prefix + k}
        return out

    defaults = AppSettings().model_dump()
    assert keys(yaml.safe_load(example.read_text())) == keys(defaults)
    loaded = load_app_settings(example).model_dump()
    for section in ("tracks", "match", "segments", "decode", "index", "clip", "api"):
        assert loaded[section] == defaults[section], section


def test_overdue_extra_clips_end_failed_on_read_and_by_the_sweep(tmp_path):
    from datetime import UTC, datetime, timedelta

    from app.store.control import EXTRA_CLIPS
    from app.store.records import OVERDUE_CLIP_ERROR, ExtraClip, ExtraClips

    control = ControlStore(str(tmp_path / "control"))
    clips = ExtraClips(control, 60)
    rid = str(uuid.uuid4())
    made = [
        clips.start(ExtraClip(str(uuid.uuid4()), rid, 1, 1, "job", PROCESSING, {"aspect": "9:16"})) for _ in range(2)
    ]
    past = datetime.now(UTC) - timedelta(seconds=1)
    for clip in made:  # the state a worker that died leaves behind
        control.upsert(
            EXTRA_CLIPS,
            [{**control.rows(EXTRA_CLIPS, f"clip_id = '{clip.clip_id}'")[0], "deadline_at": past}],
        )
    assert clips.sweep_overdue() == 2
    assert clips.sweep_overdue() == 0
    got = clips.of_request(rid)
    assert [(c.status, c.error, c.item) for c in got] == [("failed", OVERDUE_CLIP_ERROR, {"aspect": "9:16"})] * 2


def test_an_events_search_rules_can_be_replaced_and_are_validated(tmp_path):
    from app.config import AppSettings
    from app.features.tuning import apply_recommendation
    from app.store.events import EventStore

    settings = AppSettings(data_dir=str(tmp_path))
    events = EventStore(ControlStore(settings.control_uri))
    events.create_org("o", 1)
    events.create_event(1, "e", 1)
    assert events.get(1, 1).details(settings)["match_threshold_source"] == "model_pack"

    from types import SimpleNamespace

    details = apply_recommendation(
        settings, 1, 1, SimpleNamespace(threshold=0.47, segments={"max_gap_s": 3.0, "min_hits": 3})
    )
    assert details["match_threshold"] == 0.47 and details["match_threshold_source"] == "event"
    assert details["segments"]["max_gap_s"] == 3.0 and details["segments"]["min_hits"] == 3
    rules = events.get(1, 1).search_rules(settings)
    assert rules.threshold == 0.47 and rules.segments.min_hits == 3 and rules.segments.padding_s == 1.0
    for bad in ({"min_hits": 0}, {"no_such_rule": 1}):
        with pytest.raises(ValueError):
            events.set_search_rules(1, 1, 0.5, bad)
    with pytest.raises(ValueError):
        events.set_search_rules(1, 1, 1.5, {})
    with pytest.raises(ValueError):
        events.set_search_rules(1, 2, 0.5, {})
    assert events.get(1, 1).search_rules(settings).threshold == 0.47  # refused writes change nothing
    events.set_search_rules(1, 1, None, {})
    assert events.get(1, 1).details(settings)["match_threshold_source"] == "model_pack"
