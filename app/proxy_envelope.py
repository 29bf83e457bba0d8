"""The proxy callback's import path (deploy/Dockerfile, app/entry/serving_env.py): app/http/proxy_envelope.py."""

from app.http.proxy_envelope import middlewares

__all__ = ["middlewares"]
