"""Which of a replica's search jobs a re-POST superseded (app/features/watched_searches.py):
the interleaving CI once hit, where two concurrent cancelling passes took all four jobs of
one request and left its record ``processing`` with nothing running."""

from __future__ import annotations

from app.features.watched_searches import WatchedSearches

RID = "0b5c8a52-0000-4000-8000-000000000001"


def test_a_lone_job_is_never_judged_and_the_record_is_not_read():
    jobs = WatchedSearches()
    jobs.add(RID, "a", "ref-a")
    reads: list[str] = []
    assert jobs.superseded(RID, lambda: reads.append("read") or "b") == {}
    assert reads == [] and len(jobs) == 1


def test_jobs_other_than_the_records_are_taken_out_and_other_requests_are_left():
    jobs = WatchedSearches()
    for job_id in ("a", "b", "c"):
        jobs.add(RID, job_id, f"ref-{job_id}")
    jobs.add("another-request", "x", "ref-x")
    assert jobs.superseded(RID, lambda: "b") == {"a": "ref-a", "c": "ref-c"}
    assert set(jobs.refs().values()) == {"b", "x"}


def test_a_job_followed_while_an_older_read_is_in_flight_is_not_cancelled_by_it():
    """POSTs recorded attempts a, b, c and dispatched them; c's pass reads the record (c).
    Before that read returns, d is recorded and dispatched, and d's pass cancels a, b and c.
    c's pass, answering from its older read, must not take d: d is the current attempt."""
    jobs = WatchedSearches()
    for job_id in ("a", "b", "c"):
        jobs.add(RID, job_id, f"ref-{job_id}")
    record = {"job_id": "c"}

    def older_read() -> str:
        seen = record["job_id"]  # the read returns the record as it was when it began
        record["job_id"] = "d"  # meanwhile: d is recorded, dispatched, and its own pass runs
        jobs.add(RID, "d", "ref-d")
        assert jobs.superseded(RID, lambda: record["job_id"]) == {"a": "ref-a", "b": "ref-b", "c": "ref-c"}
        return seen

    assert jobs.superseded(RID, older_read) == {}
    assert jobs.refs() == {"ref-d": "d"}


def test_a_deleted_record_cancels_nothing():
    jobs = WatchedSearches()
    jobs.add(RID, "a", "ref-a")
    jobs.add(RID, "b", "ref-b")
    assert jobs.superseded(RID, lambda: None) == {} and len(jobs) == 2


def test_pop_answers_once():
    jobs = WatchedSearches()
    jobs.add(RID, "a", "ref-a")
    assert jobs.pop("a") == (RID, "ref-a") and jobs.pop("a") is None and len(jobs) == 0
