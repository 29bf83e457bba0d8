"""Prometheus metrics through Ray's metrics API (``ray.util.metrics``).

Every process records into its own metric objects; each node's Ray metrics agent exports
them on that node's ``metrics_export_port`` (names gain a ``ray_`` prefix), where
Prometheus scrapes them, and the API's /metrics shows the ingress node's. A process
without Ray (a unit test, the CLI before ``ray.init``) records nothing: metrics must never
be why work fails.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

log = logging.getLogger(__name__)

# Seconds: from a cached GET to a long clip.
LATENCY_BOUNDARIES = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_metrics: dict[str, object] = {}


def _metric(kind: str, name: str, description: str, tag_keys: Sequence[str], boundaries: Sequence[float] = ()):
    """The process's metric ``name``, made on first use once Ray is up (None without Ray)."""
    metric = _metrics.get(name)
    if metric is not None:
        return metric
    import ray

    if not ray.is_initialized():
        return None
    from ray.util import metrics

    try:
        if kind == "counter":
            metric = metrics.Counter(name, description=description, tag_keys=tuple(tag_keys))
        elif kind == "gauge":
            metric = metrics.Gauge(name, description=description, tag_keys=tuple(tag_keys))
        else:
            metric = metrics.Histogram(
                name, description=description, boundaries=list(boundaries), tag_keys=tuple(tag_keys)
            )
    except Exception:
        log.debug("metric %s unavailable", name, exc_info=True)
        return None
    _metrics[name] = metric
    return metric


def count(name: str, description: str, value: float = 1.0, **tags: str) -> None:
    metric = _metric("counter", name, description, sorted(tags))
    if metric is not None and value > 0:
        metric.inc(value, tags=tags)


def observe(
    name: str, description: str, value: float, boundaries: Sequence[float] = LATENCY_BOUNDARIES, **tags: str
) -> None:
    metric = _metric("histogram", name, description, sorted(tags), boundaries)
    if metric is not None:
        metric.observe(value, tags=tags)


def set_gauge(name: str, description: str, value: float, **tags: str) -> None:
    metric = _metric("gauge", name, description, sorted(tags))
    if metric is not None:
        metric.set(value, tags=tags)


def index_progress(frames: int, faces: int, media_status: str) -> None:
    """One media file finished indexing: its sampled frames and faces (rate() gives frames/s)."""
    count("facereel_index_frames_total", "Sampled video frames and photos indexed.", frames)
    count("facereel_index_faces_total", "Faces stored by indexing.", faces)
    count("facereel_index_media_total", "Media files finished by indexing, by outcome.", 1, status=media_status)
