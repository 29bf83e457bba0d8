"""Serve's proxy answers in the API's envelope (app/http/proxy_envelope.py), checked on the
middleware with stand-in proxies; tests/test_api.py kills the real ingress replica."""

from __future__ import annotations

import pytest
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from app.http.proxy_envelope import LOST, ProxyEnvelope

ENVELOPE = {"responseType", "message", "data"}


def client(inner) -> TestClient:
    return TestClient(ProxyEnvelope(inner))


def check_error(response, status: int, code: str) -> dict:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == ENVELOPE and body["responseType"] == "error" and body["data"]["code"] == code
    return body


def test_a_request_whose_replica_died_gets_an_enveloped_503_with_retry_after():
    async def died(scope: Scope, receive: Receive, send: Send) -> None:
        return None  # Serve's proxy sends nothing when the replica's actor died

    async def raised(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("the proxy's call failed")

    for inner in (died, raised):
        response = client(inner).get("/api/v1/ext/1/event/1")
        body = check_error(response, 503, "overloaded")
        assert body["message"] == LOST and response.headers["retry-after"] == "2"


@pytest.mark.parametrize(
    ("status", "code", "text", "headers"),
    [
        (503, "overloaded", "Request dropped due to backpressure (num_queued_requests=1000).", {"Retry-After": "3"}),
        (408, "request_timeout", "Request abc timed out after 30.0s.", {}),
        (404, "not_found", "Path '/x' not found. Ping http://.../-/routes for available routes.", {}),
        (500, "internal_error", "Internal Server Error", {}),
    ],
)
def test_serves_own_plain_text_errors_keep_their_status_and_text(status, code, text, headers):
    async def serve_says(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse(text, status_code=status, headers=headers)(scope, receive, send)

    response = client(serve_says).post("/api/v1/ext/1/event/1/video-clipping", content=b"{}")
    body = check_error(response, status, code)
    assert body["message"] == text
    if status == 503:
        assert response.headers["retry-after"] == headers.get("Retry-After", "2")


def test_the_apps_own_answers_pass_untouched():
    async def app_error(scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse({"message": "no", "responseType": "error", "data": {"code": "x"}}, 404)
        await response(scope, receive, send)

    async def streamed(scope: Scope, receive: Receive, send: Send) -> None:
        async def parts():
            for i in range(3):
                yield f"part {i}\n".encode()

        await StreamingResponse(parts(), media_type="video/mp4")(scope, receive, send)

    response = client(app_error).get("/x")
    assert response.status_code == 404 and response.json()["data"] == {"code": "x"}
    response = client(streamed).get("/clip.mp4")
    assert response.status_code == 200 and response.content == b"part 0\npart 1\npart 2\n"
    assert response.headers["content-type"] == "video/mp4"


def proxy_app(inner):
    """``inner`` wrapped as Serve's proxy wraps its app: each middleware in list order, so
    the last is outermost (ray.serve._private.http_util._apply_middlewares)."""
    from app.http.proxy_envelope import middlewares

    app = inner
    for middleware in middlewares():
        app = middleware.cls(app, *middleware.args, **middleware.kwargs)
    return app


def test_the_proxy_sheds_reads_and_writes_over_its_own_limits_before_routing(monkeypatch):
    """api.proxy_max_reads/writes, read by the proxy from FACEREEL_API__*: one more request
    of a class is an enveloped 503 with Retry-After and never reaches the replica; the
    other class and Serve's own routes still pass."""
    import asyncio

    import httpx

    monkeypatch.delenv("FACEREEL_CONFIG", raising=False)
    monkeypatch.setenv("FACEREEL_API__PROXY_MAX_READS", "2")
    monkeypatch.setenv("FACEREEL_API__PROXY_MAX_WRITES", "1")
    monkeypatch.setenv("FACEREEL_API__RETRY_AFTER_S", "5")

    async def scenario() -> None:
        gate, routed = asyncio.Event(), []

        async def replica(scope: Scope, receive: Receive, send: Send) -> None:
            routed.append((scope["method"], scope["path"]))
            if scope["path"] == "/work":
                await gate.wait()
            await JSONResponse({"ok": True})(scope, receive, send)

        app = proxy_app(replica)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            held = [asyncio.create_task(http.get("/work")) for _ in range(2)]
            held.append(asyncio.create_task(http.post("/work")))
            while len(routed) < 3:  # all three admitted and waiting in the replica
                await asyncio.sleep(0.01)
            extra_get, extra_post = await http.get("/work"), await http.post("/work")
            for shed in (extra_get, extra_post):
                body = check_error(shed, 503, "overloaded")
                assert shed.headers["retry-after"] == "5" and "in progress" in body["message"]
            assert len(routed) == 3  # the shed requests were never routed
            assert (await http.get("/-/healthz")).status_code == 200  # Serve's own routes: never shed
            gate.set()
            assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200, 200]
            assert (await http.get("/work")).status_code == 200  # the slots were given back

    asyncio.run(scenario())


def test_proxy_admission_can_be_turned_off(monkeypatch):
    from app.http.proxy_envelope import middlewares

    monkeypatch.delenv("FACEREEL_CONFIG", raising=False)
    monkeypatch.setenv("FACEREEL_API__PROXY_MAX_READS", "0")
    monkeypatch.setenv("FACEREEL_API__PROXY_MAX_WRITES", "0")
    monkeypatch.setenv("FACEREEL_API__PROXY_MAX_POLLS", "0")
    assert [m.cls for m in middlewares()] == [ProxyEnvelope]
