"""Admission by the search queue (issue 26 item 3): a search POST is admitted while one more
search would likely end within ``api.search_target_s`` at the cluster's measured pace, and
fewer than ``api.max_searches_in_flight`` are in flight; else 503 with a Retry-After from
the queue (app/core/search_pace.py)."""

from __future__ import annotations

import pytest
import ray

from app.core.search_pace import UNTIMED_SEARCH_S, SearchPace, admission_wait_s


def test_the_pace_is_busy_seconds_per_ended_search():
    pace = SearchPace()
    pace.started(100.0)
    pace.started(100.0)
    pace.ended(104.0)
    pace.ended(108.0)
    assert pace.per_search_s() == pytest.approx(4.0)  # two ended within 8 busy seconds
    assert pace.in_flight == 0


def test_idle_time_between_searches_does_not_slow_the_pace():
    pace = SearchPace()
    pace.started(0.0)
    pace.ended(3.0)
    pace.started(3_600.0)  # an hour later
    pace.ended(3_605.0)
    assert pace.per_search_s() == pytest.approx(4.0)


def test_side_by_side_searches_read_as_the_clusters_throughput():
    pace = SearchPace()
    for _ in range(4):
        pace.started(0.0)
    for t in (10.0, 20.0, 30.0, 40.0):  # 4 in flight, one ends every 10 s
        pace.ended(t)
    assert pace.per_search_s() == pytest.approx(10.0)


def test_the_pace_follows_the_last_window_of_ends():
    pace = SearchPace(window=2)
    t = 0.0
    for took in (100.0, 2.0, 2.0):
        pace.started(t)
        t += took
        pace.ended(t)
    assert pace.per_search_s() == pytest.approx(2.0)


def test_a_cancelled_search_frees_its_place_without_counting_for_the_pace():
    pace = SearchPace()
    pace.started(0.0)
    pace.started(0.0)
    pace.ended(1.0, counted=False)
    pace.ended(6.0)
    assert pace.in_flight == 0 and pace.per_search_s() == pytest.approx(6.0)
    pace.ended(7.0)  # an end nobody started is ignored
    assert pace.in_flight == 0


def test_a_search_alone_is_always_admitted():
    assert admission_wait_s(0, 500.0, 40.0, 8) == 0.0


def test_admitted_while_it_would_end_within_the_target():
    assert admission_wait_s(3, 10.0, 40.0, 8) == 0.0  # ends after 40 s
    assert admission_wait_s(4, 10.0, 40.0, 8) == pytest.approx(10.0)  # 50 s: one ahead must end
    assert admission_wait_s(7, 10.0, 40.0, 8) == pytest.approx(40.0)


def test_the_cap_holds_however_fast_searches_are():
    assert admission_wait_s(7, 1.0, 40.0, 8) == 0.0
    assert admission_wait_s(8, 1.0, 40.0, 8) == pytest.approx(1.0)
    assert admission_wait_s(10, 1.0, 40.0, 8) == pytest.approx(3.0)


def test_before_any_search_ended_the_default_pace_is_used():
    assert admission_wait_s(3, None, 40.0, 8) == 0.0
    assert admission_wait_s(4, None, 40.0, 8) == pytest.approx(5 * UNTIMED_SEARCH_S - 40.0)


def test_the_supervisor_answers_for_the_whole_cluster(ray_cluster, settings):
    from app.jobs.supervisor import supervisor

    handle = supervisor(settings)
    assert ray.get(handle.admission.remote(40.0, 10_000), timeout=60) == 0.0  # below any real queue


def test_a_search_waiting_for_a_worker_past_the_grace_holds_admission_until_it_runs():
    pace = SearchPace()
    pace.started(0.0, "warm")
    pace.running("warm")  # took a warm worker at once
    pace.started(1.0, "cold")
    assert pace.longest_wait_s(3.5) == pytest.approx(2.5)
    assert admission_wait_s(2, 1.0, 40.0, 8, pace.longest_wait_s(3.5), 3.0) == 0.0  # within the grace
    assert admission_wait_s(2, 1.0, 40.0, 8, pace.longest_wait_s(5.0), 3.0) == pytest.approx(3.0)
    assert admission_wait_s(2, 30.0, 40.0, 8, pace.longest_wait_s(5.0), 3.0) == pytest.approx(
        50.0
    )  # the queue's own wait is longer
    pace.running("cold")
    assert pace.longest_wait_s(60.0) == 0.0
    assert admission_wait_s(2, 1.0, 40.0, 8, pace.longest_wait_s(60.0), 3.0) == 0.0


def test_a_job_that_waited_past_the_request_deadline_no_longer_holds_admission():
    """An infeasible task stays in Ray's queue forever; its record was failed at the deadline."""
    pace = SearchPace()
    pace.started(0.0, "infeasible")
    assert pace.longest_wait_s(500.0, up_to_s=600.0) == pytest.approx(500.0)
    assert pace.longest_wait_s(601.0, up_to_s=600.0) == 0.0


def test_a_search_that_ends_or_is_cancelled_before_it_ran_no_longer_waits():
    pace = SearchPace()
    pace.started(0.0, "died")
    pace.started(0.0, "cancelled")
    pace.ended(1.0, job_id="died")  # its worker never started: the job ended with an error
    pace.ended(1.0, counted=False, job_id="cancelled")
    assert pace.longest_wait_s(100.0) == 0.0 and pace.in_flight == 0


@ray.remote(num_cpus=0)
class Told:
    """Stands for the supervisor: what run_search tells it."""

    def __init__(self) -> None:
        self.running: list[str] = []

    def job_running(self, job_id: str) -> None:
        self.running.append(job_id)

    def seen(self) -> list[str]:
        return self.running


def test_a_search_job_tells_its_supervisor_when_it_runs(ray_cluster, settings):
    """run_search's first act, before any store write: admission stops holding back for it."""
    from app.jobs.dispatch import SearchJob, run_search
    from app.store.events import SearchRules

    told = Told.remote()
    rules = SearchRules(threshold=0.5, segments=settings.segments, output_root=str(settings.output_root))
    job = SearchJob("0b5c8a52-0000-4000-8000-00000000000f", "job-told", 7, 42, rules, {}, supervisor=told)
    assert ray.get(run_search.remote(settings, job), timeout=120) == "no_matches"
    assert ray.get(told.seen.remote(), timeout=30) == ["job-told"]
