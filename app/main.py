"""The Serve application: ``serve run serve_config.yaml`` or ``build_app({...})`` from Python."""

from __future__ import annotations

from pathlib import Path

from ray.serve import Application

from app.deployments.embedder import SelfieEmbedder
from app.deployments.ingress import ApiIngress
from pipelines.config import Settings, load_settings


def absolute_paths(settings: Settings) -> Settings:
    """Replicas may start in another working directory: pin relative local paths now."""
    update = {"data_dir": str(Path(settings.data_dir).expanduser().resolve())}
    return settings.model_copy(update=update)


def build_app(args: dict | None = None) -> Application:
    """Application builder. ``args``: ``config`` (YAML path) plus any top-level overrides."""
    args = dict(args or {})
    config = args.pop("config", None)
    settings = absolute_paths(load_settings(config, **args))
    data = settings.model_dump()
    return ApiIngress.bind(data, SelfieEmbedder.bind(data))


app = build_app
