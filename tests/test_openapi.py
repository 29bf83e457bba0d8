"""The OpenAPI document, and a schema fuzz of the live Serve application against it.

The fuzz (schemathesis) sends generated requests, valid and invalid, with good keys, bad
keys and none. Every response must be a documented status with a body that matches its
schema, never a 5xx; and a request that is not a documented write (a 2xx POST or DELETE)
must leave the fuzz org's stored state exactly as it was.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from pathlib import Path

import httpx
import pytest

from app.http.openapi import operations
from app.store.events import EventStore
from app.store.keys import KeyStore
from tests.conftest import SCHEMA_FUZZ

FUZZ_ORG, FUZZ_EVENT, OTHER_EVENT = 31, 1, 2
# Cases per run; the runs together must reach the 1,000.
RUNS = {
    "positive, valid key, the fuzz event": 420,
    "negative, valid key, the fuzz event": 300,
    "positive, valid key, any path": 160,
    "positive, invalid key or none": 160,
}
MIN_CASES = 1000


def test_every_route_is_in_the_document(serve_api):
    from app.features.services import Services
    from app.http.api import create_api

    doc = httpx.get(f"{serve_api.base_url}/openapi.json", timeout=30).json()
    assert doc["openapi"].startswith("3.1")
    app = create_api(Services.create(serve_api.settings, embedder=None, limiter=None))
    documented = {(path, method) for path, item in doc["paths"].items() for method in item}
    served = set()
    for route, _ in operations(app.routes):
        path = re.sub(r":\w+\}", "}", route.path)
        served |= {(path, m.lower()) for m in route.methods if m != "HEAD"}
    assert documented == served
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    page = httpx.get(f"{serve_api.base_url}/docs", timeout=30)
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text
    script = httpx.get(f"{serve_api.base_url}/docs/static/swagger-ui-bundle.js", timeout=30)
    assert script.status_code == 200 and len(script.content) > 100_000


CONTROL_TABLES = (
    "orgs",
    "events",
    "api_keys",
    "search_requests",
    "extra_clips",
    "event_media",
    "index_jobs",
    "index_locks",
    "webhook_deliveries",
)
# Index jobs run on after the POST that started them (a documented write): their status,
# progress, lock and deliveries change later by themselves, so only which exist counts.
ONLY_KEYS = {"index_jobs": ["job_id"], "index_locks": ["event_id"], "webhook_deliveries": ["delivery_id"]}


class StoredState:
    """A digest of everything the fuzz org has stored: its control rows and its files. A
    table's rows are read again only when its version moved (the fuzz reads the state after
    each of its 1,000 cases; most change nothing)."""

    def __init__(self, serve_api) -> None:
        self.serve_api = serve_api
        self.tables: dict[str, tuple[int, str]] = {}

    def table_digest(self, name: str) -> str:
        table = self.serve_api.control.table(name)
        version = table.version
        cached = self.tables.get(name)
        if cached is not None and cached[0] == version:
            return cached[1]
        digest = hashlib.sha256()
        rows = table.search().where(f"org_id = {FUZZ_ORG}").to_arrow().to_pylist()
        if name in ONLY_KEYS:
            rows = [{k: r[k] for k in ONLY_KEYS[name]} for r in rows]
        for row in sorted(rows, key=repr):
            digest.update(repr(sorted(row.items())).encode())
        self.tables[name] = (version, digest.hexdigest())
        return self.tables[name][1]

    def __call__(self) -> str:
        digest = hashlib.sha256()
        for name in CONTROL_TABLES:
            digest.update(self.table_digest(name).encode())
        settings = self.serve_api.settings
        for base in (settings.output_root, settings.source_root):
            root = Path(base) / str(FUZZ_ORG)
            for path in sorted(root.rglob("*")) if root.exists() else []:
                digest.update(f"{path}:{path.stat().st_size if path.is_file() else 'dir'}".encode())
        return digest.hexdigest()


def is_documented_write(method: str, status: int) -> bool:
    return method in ("POST", "PUT", "DELETE") and 200 <= status < 300


@pytest.fixture(scope="module")
def fuzz_keys(serve_api) -> dict[str, list[str]]:
    events, keys = EventStore(serve_api.control), KeyStore(serve_api.control)
    events.create_org("fuzz org", FUZZ_ORG)
    events.create_event(FUZZ_ORG, "fuzzed", FUZZ_EVENT, bib_search=True)
    events.create_event(FUZZ_ORG, "all off", OTHER_EVENT, video_search=False, face_search=False)
    # Several keys, so the per-key POST rate limit still lets most POSTs reach their handlers.
    valid = [keys.create(FUZZ_ORG, name=f"fuzz {i}")[0] for i in range(16)]
    inactive, key = keys.create(FUZZ_ORG, name="revoked")
    keys.deactivate(key.key_id)
    return {"valid": valid, "invalid": ["frk_not-a-key", inactive, ""]}


def test_schema_fuzz_finds_no_server_error_and_no_schema_violation(serve_api, fuzz_keys, request):
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation import GenerationMode
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    ]
    schema = schemathesis.openapi.from_url(f"{serve_api.base_url}/openapi.json")
    valid = itertools.cycle(fuzz_keys["valid"])
    invalid = itertools.cycle(fuzz_keys["invalid"])
    here = {"org_id": FUZZ_ORG, "event_id": FUZZ_EVENT}
    runs = {
        "positive, valid key, the fuzz event": (GenerationMode.POSITIVE, here, valid),
        "negative, valid key, the fuzz event": (GenerationMode.NEGATIVE, here, valid),
        "positive, valid key, any path": (GenerationMode.POSITIVE, None, valid),
        "positive, invalid key or none": (GenerationMode.POSITIVE, None, invalid),
    }
    statuses: dict[int, int] = {}
    state = StoredState(serve_api)
    last = [state()]  # the state after the previous case is the next case's "before"

    def fuzz(strategy, keys, examples: int) -> None:
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def one(case) -> None:
            key = next(keys)
            before = last[0]
            response = case.call(base_url=serve_api.base_url, headers={"X-API-Key": key} if key else {})
            status = response.status_code
            statuses[status] = statuses.get(status, 0) + 1
            last[0] = state()
            case.validate_response(response, checks=checks)
            if not is_documented_write(case.method.upper(), status):
                assert last[0] == before, f"{case.method} {case.formatted_path} -> {status} changed state"

        one()

    for name, (mode, path_parameters, keys) in runs.items():
        fuzz(schema.as_strategy(mode, path_parameters=path_parameters), keys, RUNS[name])
    cases = sum(statuses.values())
    summary = ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()))
    request.config.stash.setdefault(SCHEMA_FUZZ, []).append(f"{cases} cases, 0 5xx, 0 schema violations ({summary})")
    assert cases >= MIN_CASES, cases
    assert not any(s >= 500 for s in statuses)
    # It reached the handlers, not only the auth checks: answers, and input refused by its rules.
    assert statuses.get(200, 0) >= 10 and statuses.get(400, 0) >= 100, statuses
