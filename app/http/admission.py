"""Admission control: shed load with an enveloped 503 and Retry-After instead of queueing.

Each ingress replica admits at most ``api.max_concurrent_reads`` GETs and
``api.max_concurrent_writes`` POSTs/DELETEs at once; one more is answered 503 at once,
before any work or storage, so a client backs off rather than waiting seconds in a queue.
The same middleware runs in Serve's HTTP proxy (``api.proxy_max_reads/writes``, see
app/http/proxy_envelope.py), where a shed request costs neither a route to a replica nor the
replica's time. Health, metrics and docs are never shed.
Embedding and job dispatch have their own bounds (app/features/search/requests.py,
app/features/search/video_clipping.py), enforced with ``overloaded``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.errors import overloaded
from app.http.errors import error_response
from app.obs.io_threads import REQUEST_CLASS
from app.obs.metrics import in_flight, shed

# The in-flight gauge is set at most this often per class; a change in between is set when
# the interval ends, so the gauge always shows the last value within it (an idle replica
# never reads busy). Ray's Gauge.set cost 3 % of a polled replica's CPU when it was set at
# each request's start and end (issue 21).
GAUGE_EVERY_S = 0.1

UNSHED = ("/healthz", "/metrics", "/openapi.json", "/docs", "/-/")  # "/-/": Serve's own routes


# GETs of one record that clients poll until it is terminal: a finished one is served from
# the replica's memory (app/store/result_cache.py) and, unchanged, answered 304 (ETag). They get a
# bound of their own, so that pollers are not shed by the bound sized for expensive reads
# (media files, photo pages, BIB search), nor shed those.
POLLED = re.compile(r"^/api/v1/ext/\d+/event/\d+/(video-clipping|index-jobs)/[^/]+$")


def admission_class(method: str, path: str) -> str | None:
    """'read', 'poll', 'write', or None for requests that are never shed."""
    if path.startswith(UNSHED):
        return None
    if method not in ("GET", "HEAD"):
        return "write"
    return "poll" if POLLED.match(path) else "read"


class Admission:
    def __init__(
        self,
        app: ASGIApp,
        max_reads: int,
        max_writes: int,
        retry_after_s: float,
        reads_while_writing: int | None = None,
        layer: str = "ingress",
        max_polls: int | None = None,
        gauge: Callable[[str, int, str], None] = in_flight,
    ) -> None:
        self.app = app
        self.layer = layer  # where it sheds, "ingress" or "proxy": a tag of its metrics
        # Polls count as reads unless they have a bound of their own.
        self.limits = {"read": max_reads, "write": max_writes, "poll": max_polls or 0}
        # Writes first: while a write is in progress fewer reads are admitted, so that a
        # search's chain of calls is not queued behind readers on a busy replica.
        self.reads_while_writing = max_reads if reads_while_writing is None else min(reads_while_writing, max_reads)
        self.retry_after_s = retry_after_s
        self.active = {"read": 0, "write": 0, "poll": 0}
        self.gauge = gauge  # (class, requests in flight, layer): the in-flight gauge's setter
        self.reported = {"read": 0.0, "write": 0.0, "poll": 0.0}  # monotonic time of each class's last set
        self.pending: set[str] = set()  # classes with a set scheduled for the end of their interval

    def limit(self, kind: str) -> int:
        if kind == "read" and self.active["write"]:
            return self.reads_while_writing
        return self.limits[kind]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = admission_class(scope.get("method", ""), scope.get("path", "")) if scope["type"] == "http" else None
        if kind == "poll" and not self.limits["poll"]:
            kind = "read"
        if kind is None:
            await self.app(scope, receive, send)
            return
        if self.active[kind] >= (limit := self.limit(kind)):
            shed(kind, self.layer)
            response = error_response(overloaded(f"{limit} {kind}s in progress", self.retry_after_s))
            await response(scope, receive, send)
            return
        self.active[kind] += 1
        self.report(kind)
        REQUEST_CLASS.set(kind)  # this request's blocking calls run on its class's threads
        try:
            await self.app(scope, receive, send)
        finally:
            self.active[kind] -= 1
            self.report(kind)

    def report(self, kind: str) -> None:
        if time.monotonic() - self.reported[kind] >= GAUGE_EVERY_S:
            self.set_gauge(kind)
        elif kind not in self.pending:
            self.pending.add(kind)
            asyncio.get_running_loop().call_later(GAUGE_EVERY_S, self.set_gauge, kind)

    def set_gauge(self, kind: str) -> None:
        self.pending.discard(kind)
        self.reported[kind] = time.monotonic()
        self.gauge(kind, self.active[kind], self.layer)
