"""ApiIngress: the HTTP entry point. Thin: route matching, error rendering, the sweep."""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from app.contract import error_body
from app.errors import ApiError
from app.routes import events, media, video_clipping
from app.services import Services
from pipelines.config import Settings

log = logging.getLogger(__name__)

API = "/api/v1/ext/{org_id:int}/event/{event_id:int}"


# Defaults match serve_config.yaml; a whole CPU per replica would starve clipping on small hosts.
@serve.deployment(name="ApiIngress", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=200)
class ApiIngress:
    def __init__(self, settings_data: dict, embedder) -> None:
        from app.ratelimit import limiter_actor

        self.settings = Settings(**settings_data)
        self.services = Services.create(self.settings, embedder, limiter_actor())
        s = self.services
        self.routes = [
            Route(API, partial(events.event_details, services=s), methods=["GET"]),
            Route(
                f"{API}/video-clipping/search-by-selfie",
                partial(video_clipping.search_by_selfie, services=s),
                methods=["POST"],
            ),
            Route(
                f"{API}/video-clipping/{{request_id}}", partial(video_clipping.get_result, services=s), methods=["GET"]
            ),
            Route(
                "/media/{org_id:int}/{event_id:int}/clips/{request_id}/{name}",
                partial(media.clip_file, services=s),
                methods=["GET", "HEAD"],
            ),
            Route("/healthz", self.health, methods=["GET"]),
        ]
        self.sweeper = asyncio.get_event_loop().create_task(self.sweep_forever())

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def sweep_forever(self) -> None:
        """Fail searches whose worker vanished, even if nobody polls them; keep tables lean."""
        api = self.settings.api
        last_maintenance = time.monotonic()
        while True:
            await asyncio.sleep(api.sweep_interval_s)
            try:
                if n := await asyncio.to_thread(self.services.records.sweep_overdue):
                    log.warning("failed %d overdue searches", n)
                if time.monotonic() - last_maintenance >= api.maintenance_interval_s:
                    last_maintenance = time.monotonic()
                    await self.services.maintain()
            except Exception:
                log.exception("overdue sweep or table maintenance failed")

    async def __call__(self, request: Request) -> Response:
        allowed: set[str] = set()
        for route in self.routes:
            match, child_scope = route.matches(request.scope)
            if match == Match.FULL:
                scoped = Request({**request.scope, **child_scope}, request.receive)
                try:
                    return await route.endpoint(scoped)
                except ApiError as err:
                    return err.response()
                except Exception:
                    log.exception("unhandled error on %s %s", request.method, request.url.path)
                    return JSONResponse(error_body("Internal server error.", "internal_error"), status_code=500)
            if match == Match.PARTIAL:
                allowed |= route.methods or set()
        if allowed:
            return JSONResponse(
                error_body("Method not allowed.", "method_not_allowed"),
                status_code=405,
                headers={"Allow": ", ".join(sorted(allowed))},
            )
        return JSONResponse(error_body("Not found.", "not_found"), status_code=404)
