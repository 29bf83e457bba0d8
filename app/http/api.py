"""The HTTP application: a Starlette app that the ApiIngress deployment serves.

Routes come from one module per resource (app/http/routes/); errors are rendered once, in
the contract's envelope: ``DomainError`` by its code (app/http/errors.py), Starlette's own 404/405,
and anything unexpected as a 500. The overdue sweep runs for the app's lifetime.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.contract import error_body
from app.core.errors import DomainError
from app.features import upkeep
from app.features.search.bib_search import BibSearch
from app.features.search.face_search import FaceSearch
from app.features.search.video_clipping import VideoClippingSearch
from app.features.services import Services
from app.http.admission import Admission
from app.http.errors import error_response
from app.http.metrics import RequestMetrics
from app.http.openapi import document
from app.http.routes import (
    bib_search,
    event_media,
    events,
    face_search,
    index_jobs,
    media,
    service,
    storage,
    video_clipping,
)
from app.http.routes.common import UseCases
from app.obs.io_threads import IoThreads
from app.obs.log_context import install as install_log_context

log = logging.getLogger(__name__)

HTTP_CODES = {404: ("Not found.", "not_found"), 405: ("Method not allowed.", "method_not_allowed")}


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    return error_response(exc)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's routing errors (unknown path, wrong method) in the API envelope."""
    assert isinstance(exc, HTTPException)
    message, code = HTTP_CODES.get(exc.status_code, (str(exc.detail), "http_error"))
    headers = dict(exc.headers or {})
    if "Allow" in headers:  # Starlette joins a set: make it stable
        headers["Allow"] = ", ".join(sorted(m.strip() for m in headers["Allow"].split(",")))
    return JSONResponse(error_body(message, code), status_code=exc.status_code, headers=headers)


class InternalErrors:
    """Any unexpected exception becomes the enveloped 500 (logged once, not re-raised)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = JSONResponse(error_body("Internal server error.", "internal_error"), status_code=500)
            await response(scope, receive, send)


def create_api(services: Services) -> Starlette:
    """The app for one ingress replica; routes reach their use cases through ``app.state.use_cases``."""
    api = services.settings.api
    install_log_context()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(IoThreads(api.io_threads, api.io_write_threads))
        tasks = [
            loop.create_task(upkeep.sweep_forever(services)),
            loop.create_task(upkeep.watch_jobs_forever(services)),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()

    app = Starlette(
        routes=[
            *events.routes(),
            *video_clipping.routes(services.settings),
            *face_search.routes(services.settings),
            *bib_search.routes(services.settings),
            *event_media.routes(services.settings),
            *index_jobs.routes(),
            *storage.routes(),
            *media.routes(),
            *service.routes(),
        ],
        middleware=[
            Middleware(InternalErrors),
            Middleware(RequestMetrics),
            Middleware(
                Admission,
                api.max_concurrent_reads,
                api.max_concurrent_writes,
                api.retry_after_s,
                api.max_concurrent_reads_while_writing,
                max_polls=api.max_concurrent_polls,
            ),
        ],
        exception_handlers={DomainError: api_error, HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.use_cases = UseCases(services, VideoClippingSearch(services), FaceSearch(services), BibSearch(services))
    app.state.openapi = document(app.routes, services.settings)
    return app
