"""A search's Ray tasks run below serving (app/obs/background.py): on the real local cluster,
a task given ``background_options`` runs in a worker of its own whose every thread is niced,
and a plain task's worker is left at the serving priority."""

from __future__ import annotations

import os
import threading

import ray

from app.obs.background import BACKGROUND_ENV, background_options, run_below_serving


def thread_niceness() -> dict[int, int]:
    return {int(t): os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir("/proc/self/task")}


@ray.remote(num_cpus=0)
def probe() -> dict:
    """What a search task does first, then how nice this worker's threads are, including
    one started afterwards."""
    before = thread_niceness()
    run_below_serving()
    run_below_serving()  # once per worker: a second call changes nothing
    later: list[int] = []
    thread = threading.Thread(target=lambda: later.append(os.getpriority(os.PRIO_PROCESS, 0)))
    thread.start()
    thread.join()
    return {
        "pid": os.getpid(),
        "marked": os.environ.get(BACKGROUND_ENV),
        "before": before,
        "after": thread_niceness(),
        "main": os.getpriority(os.PRIO_PROCESS, 0),
        "later": later[0],
    }


def lowered(run: dict, by: int) -> bool:
    """Every thread that lived through the call is ``by`` nicer (capped at 19); threads Ray
    starts meanwhile are not compared."""
    kept = set(run["before"]) & set(run["after"])
    return bool(kept) and all(run["after"][t] == min(19, run["before"][t] + by) for t in kept)


def test_background_tasks_run_niced_in_workers_of_their_own(ray_cluster):
    plain = ray.get(probe.remote())
    background = ray.get(probe.options(**background_options(7)).remote())
    assert plain["marked"] is None and lowered(plain, 0)  # a plain worker is left alone
    assert background["marked"] == "7" and background["pid"] != plain["pid"]
    assert len(background["after"]) > 1 and lowered(background, 7)  # Ray's own threads too, not only the task's
    assert background["later"] == background["main"]  # a thread started afterwards inherits it
    again = ray.get(probe.options(**background_options(7)).remote())
    if again["pid"] == background["pid"]:  # the same worker reused: not lowered twice
        assert lowered(again, 0)


def test_no_background_options_when_off():
    assert background_options(0) == {}


def test_warm_search_workers_are_started_and_reused_by_the_next_tasks(ray_cluster, settings):
    """Warm before ready (issue 21): the workers the supervisor starts for the search tasks'
    pool are distinct, niced, and the next task of that pool runs in one of them instead of
    starting a process."""
    import psutil

    from app.jobs.supervisor import supervisor

    nice = settings.api.search_task_nice
    pids = ray.get(supervisor(settings).warm.remote(settings, 3), timeout=300)
    assert len(set(pids)) == 3  # the job's worker and two clips' workers
    for pid in pids:
        proc = psutil.Process(pid)
        assert proc.environ().get(BACKGROUND_ENV) == str(nice) and proc.nice() >= nice
    # Tasks of the same pools, from the same places, find warm workers idle.
    again = ray.get(supervisor(settings).warm.remote(settings, 2, 0.0), timeout=60)
    assert again[0] == pids[0] and set(again[1:]) <= set(pids[1:])


def test_a_cluster_is_warmed_once_for_every_replica_that_starts(ray_cluster, settings):
    """Each ingress replica's start asks for a warm cluster (``once``): a replica that starts
    later (a replacement, a scale-up) is answered with the workers already warm, without a new
    warm-up that would queue behind running searches. Here the second warm-up would hold its
    workers for 60 s; it answers within seconds, with the first one's pids."""
    from app.jobs.supervisor import supervisor

    first = ray.get(supervisor(settings).warm.remote(settings, 3, 0.0, once=True), timeout=300)
    again = ray.get(supervisor(settings).warm.remote(settings, 3, 60.0, once=True), timeout=20)
    assert again == first and len(set(first)) >= 3
