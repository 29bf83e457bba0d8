"""The HTTP side of metrics: every request counted and timed by its route, and GET /metrics."""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import DomainError
from app.obs.metrics import facereel_families, fetch, node_metrics_url
from pipelines.metrics import count, observe


class RequestMetrics:
    """Counts and times every HTTP request by its route template (not the raw path: ids
    would make a series per request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def tracked(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            count("facereel_http_requests_total", "HTTP requests by route, method and status.", 1,
                  route=path, method=method, status=str(status))  # fmt: skip
            observe("facereel_http_request_seconds", "HTTP request latency by route and method.",
                    time.perf_counter() - started, route=path, method=method)  # fmt: skip


async def metrics(request: Request) -> Response:
    """GET /metrics: facereel's series on this node, in the Prometheus text format."""
    url = await asyncio.to_thread(node_metrics_url)
    if url is None:
        raise DomainError("metrics_unavailable", "This node exports no metrics (Ray's metrics agent is not running).", 10)  # fmt: skip
    try:
        text = await asyncio.to_thread(fetch, url)
    except OSError as exc:
        raise DomainError("metrics_unavailable", f"Ray's metrics agent did not answer: {exc}", 10) from None  # fmt: skip
    return Response(facereel_families(text), media_type="text/plain; version=0.0.4")
