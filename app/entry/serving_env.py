"""The environment a serving Ray cluster starts with, set by facereel's entry points
(``facereel serve``, ``facereel demo``, the tests, bench/load.py) before they start a
local cluster, and by deploy/Dockerfile for clusters started elsewhere. Existing values
are kept.

- ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``: Serve's proxy answers in the API's
  envelope and sheds load before routing (app/http/proxy_envelope.py).
- ``RAY_worker_niceness=0``: Ray starts every worker process, Serve's proxy and replicas
  included, at nice 15, but only after the worker's start-up, which runs at nice 0. So
  each worker Ray started for a search took the cores from the proxy and the ingress at
  28 times their weight: accepted GETs' p99 was 2.7 s within 10 s of a POST burst and
  0.4 s otherwise (bench/load.py, 2 cores). At 0, serving and start-ups share equally, and
  a search's own tasks still run below serving (app/obs/background.py).
- ``RAY_num_workers_soft_limit=8``: idle workers Ray keeps per node. Its default (the
  node's CPUs) let the raylet end one of the two warm search workers 13 s after it started
  on 2 CPUs, so the first search's clip started a process after all (bench/first_search.py:
  16.6 s against a warm p50 of 1.3 s). Each idle worker costs its memory (a few hundred MB).
"""

from __future__ import annotations

import os

from app.http.proxy_envelope import PROXY_CALLBACK, PROXY_CALLBACK_ENV

WORKER_NICENESS_ENV = "RAY_worker_niceness"
WORKERS_SOFT_LIMIT_ENV = "RAY_num_workers_soft_limit"
SERVING_ENV = {PROXY_CALLBACK_ENV: PROXY_CALLBACK, WORKER_NICENESS_ENV: "0", WORKERS_SOFT_LIMIT_ENV: "8"}


def install_in_environment() -> None:
    """Before this process starts a local Ray cluster, whose processes inherit it."""
    for name, value in SERVING_ENV.items():
        os.environ.setdefault(name, value)
