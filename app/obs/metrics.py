"""The online service's metrics (Ray's metrics API, see pipelines/metrics.py); GET /metrics and
the per-request series are served by app/http/metrics.py.

Recorded here: requests by route, method and status; latency histograms; requests in
flight and shed, per admission class (the queue depth); search jobs running; search
outcomes by status; clip cutting time. /metrics answers the Prometheus text of the
ingress's node, facereel's families only; a Prometheus server should scrape every node's
Ray metrics port instead, which has the clip workers' and indexers' series too.
"""

from __future__ import annotations

import urllib.request

from pipelines.metrics import count, observe, set_gauge

PREFIX = "ray_facereel_"


def search_outcome(status: str) -> None:
    count("facereel_search_outcomes_total", "Searches that reached a terminal status, by status.", 1, status=status)


def search_queued(seconds: float) -> None:
    observe("facereel_search_queued_seconds", "Time a search job waited in Ray's queue (handed to Ray -> running).",
            seconds)  # fmt: skip


def search_running(seconds: float) -> None:
    observe("facereel_search_running_seconds", "Time a search job ran (started -> its outcome recorded).",
            seconds)  # fmt: skip


def clip_cut(seconds: float, ok: bool) -> None:
    observe("facereel_clip_seconds", "Time to cut one clip and its poster, upload included.", seconds)
    count("facereel_clips_total", "Clips cut, by result.", 1, result="ok" if ok else "error")


def running_searches(n: int) -> None:
    set_gauge("facereel_search_jobs_running", "Search jobs running, per ingress replica's watch list.", n)


def in_flight(kind: str, n: int, layer: str = "ingress") -> None:
    set_gauge("facereel_http_in_flight", "HTTP requests being handled, by admission class and layer (proxy, ingress).",
              n, kind=kind, layer=layer)  # fmt: skip


def shed(kind: str, layer: str = "ingress") -> None:
    count("facereel_http_shed_total", "Requests answered 503 by admission control, by class and layer.", 1,
          kind=kind, layer=layer)  # fmt: skip


def node_metrics_url() -> str | None:
    """This node's Ray metrics export endpoint."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node.get("NodeID") == node_id and node.get("MetricsExportPort"):
            return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    return None


def facereel_families(text: str) -> str:
    """Only facereel's metric families (HELP, TYPE and samples) of a Prometheus text page."""
    kept = []
    for line in text.splitlines():
        name = line.split(" ", 3)[2] if line.startswith("# ") and len(line.split(" ", 3)) > 2 else line
        if name.startswith(PREFIX):
            kept.append(line)
    return "\n".join(kept) + "\n"


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()
