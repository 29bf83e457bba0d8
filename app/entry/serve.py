"""The Serve application: ``serve run serve_config.yaml``, or ``build_api(settings)`` from Python."""

from __future__ import annotations

from pathlib import Path

import ray
import yaml
from ray.serve import Application

from app.config import AppSettings, load_app_settings
from app.deployments.embedder import SelfieEmbedder
from app.deployments.ingress import ApiIngress
from app.deployments.matcher import SearchMatcher
from pipelines.cluster import StorageRoot, check_shared_storage


def storage_roots(settings: AppSettings) -> list[StorageRoot]:
    """Every root the app reads or writes, for the shared-storage check of a cluster."""
    opts = settings.store.storage_options or None
    return [
        StorageRoot("store.uri", settings.store_uri, opts),
        StorageRoot("api.control_uri", settings.control_uri, opts),
        StorageRoot("api.output_root", settings.output_root, opts),
        StorageRoot("api.source_root", settings.source_root, opts),
    ]


def check_cluster(settings: AppSettings) -> None:
    """On a multi-node cluster, refuse node-local roots (media_roots too) and probe the rest;
    on one node (or before Ray is up) nothing to do."""
    if not ray.is_initialized():
        return
    # media_roots may hold {org_id}: the part before it is what must be shared
    media = {f"api.media_roots[{i}]": r.split("{", 1)[0] for i, r in enumerate(settings.api.media_roots)}
    check_shared_storage(storage_roots(settings), settings.ray.shared_paths, unprobed=media)


def build_api(settings: AppSettings, deployments: dict[str, dict] | None = None) -> Application:
    """The deployment graph for settings already loaded: they reach every replica as they are.
    ``deployments``: Serve options by deployment name over the code's defaults, as a YAML
    config's ``deployments`` sets them (``serve_config_deployments`` reads one)."""
    settings = settings.pinned()
    check_cluster(settings)
    deployments = deployments or {}

    def options(deployment):
        chosen = deployments.get(deployment.name)
        return deployment.options(**chosen) if chosen else deployment

    embedder, matcher = options(SelfieEmbedder).bind(settings), options(SearchMatcher).bind(settings)
    return options(ApiIngress).bind(settings, embedder, matcher)


def serve_config_deployments(path: str | Path, app_name: str = "facereel") -> dict[str, dict]:
    """The Serve options per deployment that a ``serve run`` config file gives the app:
    what ``facereel serve`` deploys, for benchmarks that start the app from Python."""
    config = yaml.safe_load(Path(path).read_text())
    (app,) = [a for a in config["applications"] if a["name"] == app_name]
    return {d["name"]: {k: v for k, v in d.items() if k != "name"} for d in app.get("deployments", [])}


def build_app(args: dict | None = None) -> Application:
    """Application builder for ``serve run``: ``config`` (YAML path) plus top-level overrides.

    The environment is read here, once, in the process that builds the application.
    """
    args = dict(args or {})
    config = args.pop("config", None)
    return build_api(load_app_settings(config, **args))
