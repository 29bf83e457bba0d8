"""Serve's proxy answers in the API's envelope (app/proxy_envelope.py), checked on the
middleware with stand-in proxies; tests/test_api.py kills the real ingress replica."""

from __future__ import annotations

import pytest
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from app.proxy_envelope import LOST, ProxyEnvelope

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
