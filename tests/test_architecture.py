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


# The floors, lowest first: a module imports only from its own floor or lower ones, and
# modules never import each other in a cycle (ARCHITECTURE.md draws this list).
FLOORS: list[tuple[str, str]] = [
    ("pipelines", "the data side: decode, detect, embed, track, index, match, segment, clip"),
    ("app.config", "the one typed settings object"),
    ("app.core", "pure rules and types: the contract, domain errors, schemas, the search pace"),
    ("app.obs", "logs, metrics, background threads"),
    ("app.store", "repositories: the LanceDB control tables"),
    ("app.jobs", "Ray: the search and index tasks, their supervisor, webhooks"),
    ("app.features", "use cases: searches, sources, retention, auth, upkeep"),
    ("app.http", "the HTTP layer: Starlette app, routes, envelope, admission, OpenAPI"),
    ("app.deployments", "Ray Serve deployments"),
    ("app.entry", "entry points: the CLI, the demo, the Serve app builder"),
    ("app", "import-path shims kept for configs: app.cli, app.main, app.proxy_envelope"),
]
RANK = {name: rank for rank, (name, _) in enumerate(FLOORS)}
# Only the HTTP layer speaks HTTP: these are imported nowhere else.
HTTP_ONLY = ("starlette", "fastapi", "app.http.errors")
HTTP_FLOOR = "app.http"


def floor_of(module: str) -> str:
    """The floor a module is on: its longest listed prefix."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in RANK:
            return ".".join(parts[:end])
    raise KeyError(f"{module} is on no floor: add its folder to FLOORS")


def module_sources(repo: Path) -> dict[str, tuple[str, bool]]:
    """module name -> (source, is a package's __init__) for every module of app/ and pipelines/."""
    out = {}
    for top in ("app", "pipelines"):
        for path in sorted((repo / top).rglob("*.py")):
            parts = path.relative_to(repo).with_suffix("").parts
            package = parts[-1] == "__init__"
            out[".".join(parts[:-1] if package else parts)] = (path.read_text(), package)
    return out


def imports_of(name: str, source: str, package: bool, known: set[str]) -> set[str]:
    """Every module ``name`` imports, at any depth: in functions, under TYPE_CHECKING, relative
    ones resolved; ``from a import b`` counts as ``a.b`` when that is a module. External
    modules are kept by their full name (``starlette.responses``)."""
    here = name if package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    resolved = set()
    for module in found:
        inner = module
        while inner and inner not in known:
            inner = inner.rpartition(".")[0]
        resolved.add(inner or module)
    resolved.discard(name)
    return resolved


def import_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    known = set(sources)
    return {name: imports_of(name, src, package, known) for name, (src, package) in sources.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root] & graph.keys())))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            step = next(edges, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(graph[step] & graph.keys()))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def violations(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """What breaks the floors: an import up a floor, a cycle, HTTP outside the HTTP layer."""
    graph = import_graph(sources)
    out = []
    for name, deps in sorted(graph.items()):
        floor = floor_of(name)
        for dep in sorted(deps):
            if dep in graph and RANK[floor_of(dep)] > RANK[floor]:
                out.append(f"up a floor: {name} ({floor}) imports {dep} ({floor_of(dep)})")
            below_http = RANK[floor] < RANK[HTTP_FLOOR]
            if below_http and any(dep == h or dep.startswith(h + ".") for h in HTTP_ONLY):
                out.append(f"HTTP outside app/http: {name} imports {dep}")
    out.extend("cycle: " + " -> ".join(c) for c in cycles(graph))
    return out


def floors_diagram() -> str:
    """The floors as ARCHITECTURE.md draws them, top floor first."""

    def shown(name: str) -> str:
        if name == "app":
            return "app/*.py"
        path = name.replace(".", "/")
        return path + (".py" if (REPO / f"{path}.py").is_file() else "/")

    width = max(len(shown(name)) for name, _ in FLOORS)
    rule = "+" + "-" * (width + 2) + "+"
    lines = [rule]
    for name, what in reversed(FLOORS):
        lines += [f"| {shown(name):<{width}} |  {what}", rule]
    return "\n".join(lines)


def test_the_tree_keeps_its_floors():
    sources = module_sources(REPO)
    assert len(sources) > 100
    assert {floor_of(name) for name in sources} == set(RANK)  # every floor is in use
    assert violations(sources) == []


def test_the_floors_test_catches_each_kind_of_violation():
    tree = {
        "pipelines.clip": ("from pipelines import ffmpeg\n", False),
        "pipelines.ffmpeg": ("import subprocess\n", False),
        "app.core.rules": ("def f():\n    from app.store import records\n", False),  # up, in a function
        "app.store": ("", True),
        "app.store.records": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from app.jobs.x import X\n",
            False,
        ),  # up, for types only
        "app.jobs.x": ("from starlette.responses import JSONResponse\n", False),  # HTTP below the HTTP layer
        "app.features.a": ("from . import b\n", False),  # a cycle, through a relative import
        "app.features.b": ("def g():\n    from app.features.a import h\n", False),
        "app.features.c": ("from app.http.errors import status_of\n", False),  # up, and HTTP
        "app.http.routes": ("from starlette.routing import Route\nfrom app.features import a\n", False),
        "app.entry.cli": ("from app.http import routes\nimport pipelines.clip\n", False),
    }
    assert violations(tree) == [
        "up a floor: app.core.rules (app.core) imports app.store.records (app.store)",
        "HTTP outside app/http: app.features.c imports app.http.errors",
        "HTTP outside app/http: app.jobs.x imports starlette.responses",
        "up a floor: app.store.records (app.store) imports app.jobs.x (app.jobs)",
        "cycle: app.features.a -> app.features.b",
    ]


def test_architecture_md_draws_the_floors():
    text = (REPO / "ARCHITECTURE.md").read_text()
    assert floors_diagram() in text, "redraw the floors in ARCHITECTURE.md from tests/test_architecture.py"


def test_route_modules_hold_no_storage_ray_or_model_calls():
    routes = sorted((REPO / "app" / "http" / "routes").glob("*.py"))
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
