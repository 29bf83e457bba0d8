"""What a person running the CLI sees: facereel's own lines, and Ray's only with ``-v``.

Ray's Python loggers are lowered in app/entry/cli.py and workers' output is not relayed
(``ray.log_to_driver``). What is left is native: Ray's C++ core in the driver process
writes its errors straight to file descriptor 2 (for example the "constructor arguments
in the object store" line that every Ray Data actor pool triggers in Ray 2.60,
ray-project/ray#57733), and ``serve run`` prints Serve's start-up. Those go to a log file
instead, named on the terminal when something fails, so nothing is lost.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TextIO


def library_log_path(data_dir: str, command: str) -> Path:
    """Where a command's library output goes: ``<data_dir>/logs/<command>.log``, overwritten
    each run."""
    return Path(data_dir) / "logs" / f"{command}.log"


def divert_native_stderr(path: Path) -> TextIO:
    """Point file descriptor 2 (native code, and the processes this one starts) at
    ``path``, and keep Python's ``sys.stderr`` on the terminal. Returns the terminal stream.

    Call before logging is configured, so its handler writes to the terminal stream."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    terminal = os.fdopen(os.dup(2), "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    sys.stderr = terminal
    for handler in logging.getLogger().handlers:  # any configured before: keep them on the terminal
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.__stderr__:
            handler.setStream(terminal)
    return terminal


def run_quietly(command: list[str], log_path: Path, health_url: str, ready_line: str, poll_s: float = 0.5) -> int:
    """Run a long-lived server command with its output in ``log_path``; print ``ready_line``
    once ``health_url`` answers 200, and the log's path if the command ends. Ctrl-C (or
    SIGTERM) is passed on to it, and its exit code returned."""
    import signal
    import subprocess
    import time

    import httpx

    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log_file:
        child = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    previous = signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGINT))
    print(f"starting (Ray's output: {log_path}; -v shows it here)", flush=True)
    ready = False
    try:
        while child.poll() is None:
            if not ready:
                try:
                    ready = httpx.get(health_url, timeout=2).status_code == 200
                except httpx.HTTPError:
                    ready = False
                if ready:
                    print(f"{ready_line} (Ctrl-C stops it)", flush=True)
            time.sleep(poll_s)  # a poll interval: the child's exit and readiness are both checked
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)
    code = child.wait()
    if code:
        print(f"stopped with exit code {code}; see {log_path}", file=sys.stderr, flush=True)
    return code


def divert_ray_notices(log_path: Path) -> None:
    """Ray's driver prints the raylet's notices to stdout through its error listener,
    whatever ``log_to_driver`` says: "(raylet) WARNING: 8 PYTHON worker processes have been
    started ...", a task's failure, an actor's restart. They go to ``log_path`` instead
    (the listener looks its printer up on each notice; Ray 2.60's ``print_to_stdstream``)."""
    from ray._private import worker

    log_file = open(log_path, "a", buffering=1, encoding="utf-8", errors="backslashreplace")  # noqa: SIM115  (the process's lifetime)

    def to_log(data: dict, ignore_prefix: bool) -> None:
        worker.print_worker_logs(data, log_file, ignore_prefix)

    worker.print_to_stdstream = to_log
