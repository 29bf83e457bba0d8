"""Log records carry the org, event and request they are about (app/obs/log_context.py), as
fields of Ray's JSON log encoding; concurrent requests do not see each other's."""

from __future__ import annotations

import asyncio
import io
import json
import logging

from ray._common.formatters import JSONFormatter

from app.obs import log_context


def test_bound_fields_are_json_log_fields_and_stay_with_their_request():
    log_context.install()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    logger = logging.getLogger("facereel.test.log_context")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    async def request(org: int, event: int, request_id: str, started: asyncio.Event, other: asyncio.Event) -> None:
        log_context.bind(org_id=org, event_id=event)
        started.set()
        await other.wait()  # both requests have bound their fields before either logs
        log_context.bind(request_id=request_id)
        logger.info("search started")

    async def two_requests() -> None:
        a, b = asyncio.Event(), asyncio.Event()
        await asyncio.gather(request(7, 42, "rid-a", a, b), request(8, 1, "rid-b", b, a))

    try:
        asyncio.run(two_requests())
        logger.info("outside any request")
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    about = {(r.get("org_id"), r.get("event_id"), r.get("request_id")) for r in lines[:2]}
    assert about == {(7, 42, "rid-a"), (8, 1, "rid-b")}
    assert all(r["message"] == "search started" for r in lines[:2])
    assert "request_id" not in lines[2] and lines[2]["message"] == "outside any request"
