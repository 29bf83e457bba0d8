"""The service's own routes: GET /healthz, GET /metrics (app/obs/metrics.py), GET /openapi.json
(OpenAPI 3.1, see app/http/openapi.py) and GET /docs (Swagger UI from the swagger-ui-bundle
wheel: no CDN, works offline)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from app.core import schemas
from app.http.metrics import metrics
from app.http.openapi import Operation, api_route

# Relative URLs: the page works under any route prefix.
DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8"><title>facereel API</title>
  <link rel="stylesheet" href="docs/static/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/static/swagger-ui-bundle.js"></script>
  <script>SwaggerUIBundle({url: "openapi.json", dom_id: "#swagger-ui"});</script>
</body>
</html>
"""


async def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.openapi)


async def docs(request: Request) -> HTMLResponse:
    return HTMLResponse(DOCS_PAGE)


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def routes() -> list[BaseRoute]:
    from swagger_ui_bundle import swagger_ui_path

    tag = "Service"
    return [
        api_route(
            "/openapi.json",
            openapi_json,
            "GET",
            Operation("getOpenApi", "This document", tag, ok_media=("application/json",), auth=False),
        ),
        api_route(
            "/docs", docs, "GET", Operation("getDocs", "Browsable API docs", tag, ok_media=("text/html",), auth=False)
        ),
        Mount("/docs/static", StaticFiles(directory=swagger_ui_path), name="docs-static"),
        api_route("/healthz", health, "GET", Operation("getHealth", "Liveness", tag, ok=schemas.Health, auth=False)),
        api_route(
            "/metrics",
            metrics,
            "GET",
            Operation(
                "getMetrics",
                "Prometheus metrics of this node (facereel's families)",
                tag,
                ok_media=("text/plain",),
                auth=False,
            ),
        ),
    ]
