"""ApiIngress: the HTTP entry point, serving the Starlette app of app/http/api.py."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from ray import serve

from app.config import AppSettings

if TYPE_CHECKING:
    from app.http.api import HttpApp

log = logging.getLogger(__name__)


# Defaults match serve_config.yaml; a whole CPU per replica would starve clipping on small hosts.
@serve.deployment(
    name="ApiIngress", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=200, max_queued_requests=1000
)
@serve.ingress()
class ApiIngress:
    async def __init__(self, settings: AppSettings, embedder, matcher) -> None:
        """Serve routes to a replica only once this has returned: it warms what a first search
        would otherwise wait for (issue 21), and serving starts even when a warm-up fails."""
        from app.features.ratelimit import limiter_actor
        from app.features.services import Services

        self.settings = settings  # built by the driver; never re-read from this replica's env
        self.services = Services.create(settings, embedder, limiter_actor(), matcher)
        self.warm_workers = await warm_search_workers(settings)
        try:
            times = await asyncio.wait_for(self.services.warm_up(), timeout=settings.api.warm_timeout_s)
            log.info("ingress warm in %s", times.summary())
        except Exception as exc:
            log.warning("ingress not warmed (%s); the first requests open what they need", exc)

    def __serve_build_asgi_app__(self) -> HttpApp:
        """Serve calls this once per replica, after __init__ (a late-bound ingress app)."""
        from app.http.api import create_api

        return create_api(self.services)


async def warm_search_workers(settings: AppSettings) -> list[int]:
    """Before the replica is ready: the processes that run searches and cuts are up, so a
    first search waits for none (app/jobs/dispatch.py ``warm_search_worker``). Their pids;
    none when turned off or when it failed (logged: serving matters more than a fast first
    search)."""
    n = settings.api.warm_search_workers
    if n <= 0:
        return []
    from app.jobs.supervisor import supervisor

    started = time.monotonic()
    try:
        ref = supervisor(settings).warm.remote(settings, n, once=True)  # the cluster's workers: once
        pids = await asyncio.wait_for(asyncio.wrap_future(ref.future()), timeout=settings.api.warm_timeout_s)
    except Exception as exc:
        log.warning("search workers not warmed (%s); the first searches start their own", exc)
        return []
    log.info(
        "%d search workers warm in %.1f s (pids %s)", len(set(pids)), time.monotonic() - started, sorted(set(pids))
    )
    return pids
