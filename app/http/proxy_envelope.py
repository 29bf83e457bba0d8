"""Serve's HTTP proxy answers in the API's envelope too.

Some answers never reach facereel's own app: Serve's proxy writes them itself, as plain
text. A request whose ingress replica died under it got uvicorn's bare "Internal Server
Error"; a full queue (``max_queued_requests``) gets "Request dropped due to backpressure";
a timeout gets a 408. This ASGI middleware runs inside the proxy (Serve loads it from
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=app.http.proxy_envelope:middlewares``, the one hook
Ray 2.60 keeps for proxy middleware) and turns each into the enveloped JSON error the API
documents:

- no answer at all (the replica died, or the proxy's call raised): 503 ``unavailable``
  with ``Retry-After``; every write of the API is safe to repeat with the same request;
- Serve's own non-JSON error statuses keep their status, get a code (503 ``overloaded``
  with ``Retry-After``, 408 ``request_timeout``, 404 ``not_found``, else
  ``internal_error``) and Serve's text as the message.

Answers from facereel's app (always JSON when they are errors) pass through untouched,
streamed as they come.
"""

from __future__ import annotations

import json
import logging

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.contract import error_body

log = logging.getLogger(__name__)

PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "app.proxy_envelope:middlewares"  # the path deploy/Dockerfile names too
RETRY_AFTER_S = 2  # a replica restarts in a few seconds (measured 6.8 s, issue 10)
CODES = {503: "overloaded", 408: "request_timeout", 404: "not_found", 413: "payload_too_large"}
LOST = (
    "The API replica handling this request stopped before it answered (it is being restarted); "
    "retry after the Retry-After seconds with the same request."
)


def middlewares() -> list[Middleware]:
    """What Serve's proxy calls at start (``PROXY_CALLBACK_ENV``): the envelope, and inside
    it admission control (``api.proxy_max_reads/writes``) unless that is off. Serve wraps
    the proxy's app in list order, so the last is outermost."""
    admission = proxy_admission(proxy_settings())
    return [*admission, Middleware(ProxyEnvelope)]


def proxy_settings():
    """The API settings as the proxy can know them: $FACEREEL_CONFIG and FACEREEL_* (the
    proxy is not given the app's arguments). Unreadable settings leave the defaults: a proxy
    that cannot start serves nothing at all."""
    from app.config import AppSettings, load_app_settings

    try:
        return load_app_settings()
    except Exception:
        log.exception("Serve's proxy could not load facereel's settings; it uses the defaults")
        return AppSettings()


def proxy_admission(settings) -> list[Middleware]:
    from app.http.admission import Admission

    api = settings.api
    if not (api.proxy_max_reads or api.proxy_max_writes or api.proxy_max_polls):  # 0: that class is not bounded here
        return []
    unbounded = 1 << 30
    return [
        Middleware(
            Admission,
            api.proxy_max_reads or unbounded,
            api.proxy_max_writes or unbounded,
            api.retry_after_s,
            api.proxy_max_reads_while_writing or None,
            layer="proxy",
            max_polls=api.proxy_max_polls,
        )
    ]


def enveloped(status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> list[Message]:
    """The start and body messages of an enveloped error."""
    code = CODES.get(status, "internal_error")
    body = json.dumps(error_body(message, code)).encode()
    kept = [(k, v) for k, v in headers or [] if k.lower() in (b"retry-after", b"x-request-id")]
    if status == 503 and not any(k.lower() == b"retry-after" for k, _ in kept):
        kept.append((b"retry-after", str(RETRY_AFTER_S).encode()))
    start_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *kept]
    return [
        {"type": "http.response.start", "status": status, "headers": start_headers},
        {"type": "http.response.body", "body": body, "more_body": False},
    ]


def is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(k.lower() == b"content-type" and v.lower().startswith(b"application/json") for k, v in headers)


class ProxyEnvelope:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        replaced: Message | None = None  # a plain-text error start of Serve's, being read
        text = bytearray()

        async def guarded(message: Message) -> None:
            nonlocal started, replaced
            kind = message["type"]
            if kind == "http.response.start":
                if message["status"] >= 400 and not is_json(message.get("headers", [])):
                    replaced = message
                    return
                started = True
            elif kind == "http.response.body" and replaced is not None:
                text.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    reason = text.decode("utf-8", "replace").strip()[:500] or "The request failed in Serve's proxy."
                    for part in enveloped(replaced["status"], reason, list(replaced.get("headers", []))):
                        await send(part)
                    started = True
                return
            await send(message)

        try:
            await self.app(scope, receive, guarded)
        except Exception:
            if started:
                raise
            log.warning("proxy call for %s %s failed before an answer", scope.get("method"), scope.get("path"))
        if not started:
            for part in enveloped(503, LOST):
                await send(part)
