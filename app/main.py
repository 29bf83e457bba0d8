"""The Serve application: ``serve run serve_config.yaml``, or ``build_api(settings)`` from Python."""

from __future__ import annotations

from ray.serve import Application

from app.config import AppSettings, load_app_settings
from app.deployments.embedder import SelfieEmbedder
from app.deployments.ingress import ApiIngress
from app.deployments.matcher import SearchMatcher


def build_api(settings: AppSettings) -> Application:
    """The deployment graph for settings already loaded: they reach every replica as they are."""
    settings = settings.pinned()
    return ApiIngress.bind(settings, SelfieEmbedder.bind(settings), SearchMatcher.bind(settings))


def build_app(args: dict | None = None) -> Application:
    """Application builder for ``serve run``: ``config`` (YAML path) plus top-level overrides.

    The environment is read here, once, in the process that builds the application.
    """
    args = dict(args or {})
    config = args.pop("config", None)
    return build_api(load_app_settings(config, **args))
