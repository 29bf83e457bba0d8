"""The per-event index lock on a real control table: one holder at a time, and a lock held
by a job that has already ended (its ender is still cleaning up) is waited for, not refused."""

from __future__ import annotations

import threading
import time

from app.store.control import ControlStore
from app.store.index_jobs import FAILED, IndexJobs


def jobs_on(tmp_path) -> IndexJobs:
    return IndexJobs(ControlStore(str(tmp_path / "control")), 300.0, 60.0)


def test_one_holder_at_a_time_and_a_running_holder_is_named_at_once(tmp_path):
    jobs = jobs_on(tmp_path)
    first = jobs.create("job-1", 1, 7, ["a.mp4"], None)
    assert jobs.acquire(1, 7, first.job_id) is None
    assert jobs.acquire(1, 8, "job-other-event") is None  # another event has its own lock
    started = time.monotonic()
    assert jobs.acquire_after_ended(1, 7, "job-2", wait_s=20.0) == "job-1"
    assert time.monotonic() - started < 5.0  # a queued or running holder is not waited for
    jobs.release(1, 7, "job-1")
    assert jobs.acquire(1, 7, "job-2") is None
    assert jobs.holder(1, 7) == "job-2"


def test_a_new_job_waits_for_an_ended_jobs_clean_up_instead_of_a_409(tmp_path):
    jobs = jobs_on(tmp_path)
    ended = jobs.create("job-1", 1, 7, ["a.mp4"], None)
    assert jobs.acquire(1, 7, ended.job_id) is None
    # The ender's terminal write comes first; it frees the lock once it has cleaned up.
    assert jobs.end(ended, FAILED, "driver lost", release=False)
    cleaned = threading.Event()

    def clean_up_then_release() -> None:
        cleaned.wait(timeout=30)
        jobs.release(1, 7, ended.job_id)

    ender = threading.Thread(target=clean_up_then_release)
    ender.start()
    try:
        assert jobs.acquire(1, 7, "job-2") == "job-1"  # not waited for: refused at once
        cleaned.set()
        assert jobs.acquire_after_ended(1, 7, "job-2", wait_s=30.0) is None
        assert jobs.holder(1, 7) == "job-2"
    finally:
        cleaned.set()
        ender.join()


def test_an_ended_job_that_never_frees_its_lock_is_named_after_the_wait(tmp_path):
    jobs = jobs_on(tmp_path)
    ended = jobs.create("job-1", 1, 7, ["a.mp4"], None)
    assert jobs.acquire(1, 7, ended.job_id) is None
    assert jobs.end(ended, FAILED, "driver lost", release=False)
    assert jobs.acquire_after_ended(1, 7, "job-2", wait_s=0.5) == "job-1"
