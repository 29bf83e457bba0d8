"""ApiIngress: the HTTP entry point, serving the Starlette app of app/http/api.py."""

from __future__ import annotations

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
    def __init__(self, settings: AppSettings, embedder, matcher) -> None:
        self.settings = settings  # built by the driver; never re-read from this replica's env
        self.embedder = embedder  # DeploymentHandle to SelfieEmbedder
        self.matcher = matcher  # DeploymentHandle to SearchMatcher
        self.warm_workers = warm_search_workers(settings)

    def __serve_build_asgi_app__(self) -> HttpApp:
        """Serve calls this once per replica, after __init__ (a late-bound ingress app)."""
        from app.features.ratelimit import limiter_actor
        from app.features.services import Services
        from app.http.api import create_api

        return create_api(Services.create(self.settings, self.embedder, limiter_actor(), self.matcher))


def warm_search_workers(settings: AppSettings) -> list[int]:
    """Before the replica is ready (Serve routes to it only after __init__): the processes
    that run searches and cuts are up, so a first search waits for none (app/jobs/dispatch.py
    ``warm_search_worker``). Their pids; none when turned off or when it failed (logged:
    serving matters more than a fast first search)."""
    n = settings.api.warm_search_workers
    if n <= 0:
        return []
    import ray

    from app.jobs.supervisor import supervisor

    started = time.monotonic()
    try:
        pids = ray.get(supervisor(settings).warm.remote(settings, n), timeout=settings.api.warm_timeout_s)
    except Exception as exc:
        log.warning("search workers not warmed (%s); the first searches start their own", exc)
        return []
    log.info(
        "%d search workers warm in %.1f s (pids %s)", len(set(pids)), time.monotonic() - started, sorted(set(pids))
    )
    return pids
