"""A search's Ray tasks (``run_search``, its clips, extra clips) run below serving.

Ray's CPU counts are bookkeeping, not isolation: on a node that also runs Serve's proxy and
the ingress, a search's workers take the cores the readers wait for (bench/load.py on 2
cores: 0.35-0.59 of them during POST bursts, and accepted GETs' p99 went from 0.9 s to
9 s). So these tasks ask for workers of their own, marked by an environment variable in
their runtime env (Ray keeps a worker pool per runtime env, so no Serve replica or index
job ever reuses such a worker), and each such worker lowers its OS priority once, every
thread of it (Linux's nice is per thread). Serving then preempts searching; searches still
use every idle cycle.
"""

from __future__ import annotations

import contextlib
import logging
import os

log = logging.getLogger(__name__)

BACKGROUND_ENV = "FACEREEL_BACKGROUND_WORKER"
_lowered = False  # once per worker process


def background_options(nice: int) -> dict:
    """Ray ``.options(...)`` of a background task: its own worker pool when ``nice`` > 0.
    Only ``env_vars`` is given: Ray merges it with the parent's, and the rest of the parent's
    runtime env (working_dir, py_modules) is inherited."""
    return {"runtime_env": {"env_vars": {BACKGROUND_ENV: str(nice)}}} if nice > 0 else {}


def run_below_serving() -> None:
    """In a background task's worker: lower the process's priority by the niceness its
    runtime env names (first call only; a worker without the mark is left alone)."""
    global _lowered
    nice = int(os.environ.get(BACKGROUND_ENV, "0") or 0)
    if _lowered or nice <= 0:
        return
    _lowered = True
    lower_process_priority(nice)


def lower_process_priority(nice: int) -> None:
    """Every thread of this process ``nice`` steps lower; threads started later inherit it
    from the thread that starts them."""
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # not Linux: the process's nice (per process there)
        os.nice(nice)
        return
    for tid in threads:
        with contextlib.suppress(OSError):  # the thread ended meanwhile
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    log.debug("background worker %d: %d threads at nice +%d", os.getpid(), len(threads), nice)
