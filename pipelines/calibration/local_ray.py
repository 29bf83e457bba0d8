"""A notebook's local Ray: its CPU share, quieter logs, and a shutdown that leaves no process."""

from __future__ import annotations

import os


def local_cpus() -> int:
    """CPUs this process may use (its affinity where the OS tells it, e.g. a container's
    share), for ``settings.ray.num_cpus`` of a notebook's local Ray."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def quiet_ray_logs() -> None:
    """Fewer Ray lines in notebook outputs (call before indexing starts Ray): Ray's info
    notes (missing ipywidgets, token auth on, progress bars off, "dataset finished") and
    tqdm's IProgress warning are silenced; warnings and errors still show. Lines that Ray
    workers and its C++ core print themselves cannot be caught here."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", message="IProgress not found")
    for name, level in {
        "ray.widgets.util": logging.WARNING,
        "ray._private.authentication.authentication_token_setup": logging.ERROR,
        "ray.data._internal.progress": logging.ERROR,
        "ray.data._internal.execution.streaming_executor": logging.WARNING,
    }.items():
        logging.getLogger(name).setLevel(level)


def stop_ray() -> bool:
    """Shut down the process's Ray (the local cluster indexing started), so no Ray
    processes outlive a notebook; imports nothing when Ray was never used. True if it ran."""
    import sys

    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return False
    ray.shutdown()
    return True
