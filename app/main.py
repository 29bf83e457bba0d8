"""The Serve application's import path (serve_config.yaml, deploy/kuberay): app/entry/serve.py."""

from app.entry.serve import build_app

__all__ = ["build_app"]
