"""The shape of the code: thin routes, imports one way, a map whose paths exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# What would mean a route does the work itself: storage, Ray, models, matching.
FORBIDDEN_IN_ROUTES = re.compile(
    r"\bimport ray\b|\bfrom ray\b|lancedb|pipelines\.(models|store|match|index|selfie)|FaceStore|ControlStore"
    r"|\.remote\(|\.records\.|\.embedder\b"
)


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_route_modules_hold_no_storage_ray_or_model_calls():
    routes = sorted((REPO / "app" / "routes").glob("*.py"))
    assert len(routes) >= 4
    offenders = {
        p.name: sorted({m.group(0) for m in FORBIDDEN_IN_ROUTES.finditer(p.read_text())})
        for p in routes
        if FORBIDDEN_IN_ROUTES.search(p.read_text())
    }
    assert offenders == {}


def test_the_grep_would_catch_a_route_doing_the_work():
    doing_work = "import lancedb\nhits = store.search(v)\nawait services.embedder.embed.remote(data)\n"
    assert {m.group(0) for m in FORBIDDEN_IN_ROUTES.finditer(doing_work)} == {"lancedb", ".remote(", ".embedder"}


def test_pipelines_never_import_app():
    offenders = {
        str(p.relative_to(REPO)): sorted(m for m in imported_modules(p) if m == "app" or m.startswith("app."))
        for p in (REPO / "pipelines").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_architecture_md_paths_exist():
    text = (REPO / "ARCHITECTURE.md").read_text()
    paths = set(re.findall(r"`([\w./-]+\.(?:py|yaml|md|csv))`", text))
    assert len(paths) >= 20  # the map names a file for each step
    missing = sorted(p for p in paths if "/" in p and not (REPO / p).exists() and not p.endswith(".csv"))
    assert missing == []
    top_level = sorted(p for p in paths if "/" not in p and p.endswith((".yaml", ".md")) and not (REPO / p).exists())
    assert top_level == []
