"""Admission by the cluster's search queue (issue 26): a search POST is admitted only while
fewer than ``api.max_searches_in_flight`` searches are in flight, else 503 with a
Retry-After from the queue (app/jobs/supervisor.py ``queue_wait_s``)."""

from __future__ import annotations

import pytest
import ray

from app.jobs.supervisor import UNTIMED_SEARCH_S, queue_wait_s


def test_below_capacity_a_search_starts_now():
    assert queue_wait_s(0, 4, []) == 0.0
    assert queue_wait_s(3, 4, [30.0]) == 0.0


def test_at_capacity_the_wait_is_the_searches_ahead_at_their_recent_pace():
    # 4 places, 4 in flight, searches take 6 s: one leaves every 1.5 s.
    assert queue_wait_s(4, 4, [5.0, 6.0, 7.0]) == pytest.approx(1.5)
    # 3 more ahead of it: 4 to leave before its turn.
    assert queue_wait_s(7, 4, [6.0]) == pytest.approx(6.0)
    # The median, so one stuck search does not inflate every Retry-After.
    assert queue_wait_s(1, 1, [2.0, 2.0, 600.0]) == pytest.approx(2.0)


def test_before_any_search_was_timed_the_default_pace_is_used():
    assert queue_wait_s(2, 2, []) == pytest.approx(UNTIMED_SEARCH_S / 2)


def test_the_supervisor_answers_for_the_whole_cluster(ray_cluster, settings):
    from app.jobs.supervisor import supervisor

    handle = supervisor(settings)
    assert ray.get(handle.admission.remote(10_000), timeout=60) == 0.0  # below any real queue
