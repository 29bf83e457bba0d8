"""ApiIngress: the HTTP entry point, serving the Starlette app of app/api.py."""

from __future__ import annotations

from ray import serve
from starlette.applications import Starlette

from app.config import AppSettings


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

    def __serve_build_asgi_app__(self) -> Starlette:
        """Serve calls this once per replica, after __init__ (a late-bound ingress app)."""
        from app.api import create_api
        from app.ratelimit import limiter_actor
        from app.services import Services

        return create_api(Services.create(self.settings, self.embedder, limiter_actor(), self.matcher))
