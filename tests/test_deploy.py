"""deploy/: the KubeRay manifests (ray.io/v1) against KubeRay's structure and facereel's own
serve config, settings and CLI. Pure: no Ray cluster, no Kubernetes, no network."""

from __future__ import annotations

import importlib
import os
import re
import shlex
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from pydantic import BaseModel

from app.config import AppSettings

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
RAYSERVICE = DEPLOY / "kuberay" / "rayservice.yaml"
RAYJOB = DEPLOY / "kuberay" / "rayjob.yaml"
PREFIX = "FACEREEL_"
# Read by load_settings itself (the YAML file's path), not a setting.
NOT_SETTINGS = {"FACEREEL_CONFIG"}
# Settings that name storage: on a multi-node cluster each must be shared (object storage).
STORAGE_VARS = {
    "FACEREEL_STORE__URI",
    "FACEREEL_API__CONTROL_URI",
    "FACEREEL_API__OUTPUT_ROOT",
    "FACEREEL_API__SOURCE_ROOT",
}


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict), path
    return doc


def project_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def setting_exists(env_name: str, model: type[BaseModel] = AppSettings) -> bool:
    """Whether ``FACEREEL_A__B__C`` names a setting: walk the pydantic models along the
    ``__``-separated, case-insensitive path; a dict setting takes one more key."""
    if not env_name.startswith(PREFIX):
        return False
    path = env_name[len(PREFIX) :].lower().split("__")
    current: type[BaseModel] | None = model
    for i, part in enumerate(path):
        if current is None or part not in current.model_fields:
            return False
        annotation = current.model_fields[part].annotation
        rest = path[i + 1 :]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            current = annotation
            continue
        if typing.get_origin(annotation) is dict:
            return len(rest) <= 1 and all(rest)
        return not rest
    return False  # stopped on a section, not a value


def cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["rayClusterConfig" if doc["kind"] == "RayService" else "rayClusterSpec"]


def pod_containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = cluster_spec(doc)
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def runtime_env_vars(doc: dict[str, Any]) -> dict[str, str]:
    if doc["kind"] == "RayService":
        apps = yaml.safe_load(doc["spec"]["serveConfigV2"])["applications"]
        return {k: v for app in apps for k, v in (app.get("runtime_env") or {}).get("env_vars", {}).items()}
    return yaml.safe_load(doc["spec"]["runtimeEnvYAML"])["env_vars"]


def cpu_quantity(value: str | int | float) -> float:
    """A Kubernetes CPU quantity ("4", 2, "500m") in cores."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def serve_app(doc: dict[str, Any]) -> dict[str, Any]:
    apps = yaml.safe_load(doc["spec"]["serveConfigV2"])["applications"]
    assert len(apps) == 1
    return apps[0]


def min_replicas(deployment: dict[str, Any]) -> int:
    if "autoscaling_config" in deployment:
        return deployment["autoscaling_config"]["min_replicas"]
    return deployment.get("num_replicas", 1)


def max_replicas(deployment: dict[str, Any]) -> int:
    if "autoscaling_config" in deployment:
        return deployment["autoscaling_config"]["max_replicas"]
    return deployment.get("num_replicas", 1)


MANIFESTS = [pytest.param(RAYSERVICE, "RayService", id="rayservice"), pytest.param(RAYJOB, "RayJob", id="rayjob")]


# --- the settings walker itself -------------------------------------------------------------


def test_setting_walker_accepts_real_settings_and_refuses_others() -> None:
    real = ["FACEREEL_DATA_DIR", "FACEREEL_STORE__URI", "FACEREEL_API__CONTROL_URI", "FACEREEL_INDEX__EMBED__NUM_GPUS"]
    assert all(setting_exists(name) for name in real)
    assert setting_exists("FACEREEL_STORE__STORAGE_OPTIONS__AWS_ENDPOINT")  # a dict setting's key
    wrong = [
        "FACEREEL_STORE_URI",  # single underscore
        "FACEREEL_STORE__URL",
        "FACEREEL_STORE",  # a section, not a value
        "FACEREEL_INDEX__EMBED__GPUS",
        "FACEREEL_API__CONTROL_URI__X",
        "FACEREEL_STORE__STORAGE_OPTIONS__A__B",
        "STORE__URI",
    ]
    assert not any(setting_exists(name) for name in wrong)


# --- common to both manifests --------------------------------------------------------------


@pytest.mark.parametrize(("path", "kind"), MANIFESTS)
def test_manifest_header(path: Path, kind: str) -> None:
    doc = load(path)
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["kind"] == kind
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])


@pytest.mark.parametrize(("path", "kind"), MANIFESTS)
def test_ray_cluster_spec(path: Path, kind: str) -> None:
    spec = cluster_spec(load(path))
    assert spec["rayVersion"] == ray.__version__
    head = spec["headGroupSpec"]
    # KubeRay's rayStartParams is map[string]string: a bare number is refused.
    assert head["rayStartParams"] and all(isinstance(v, str) for v in head["rayStartParams"].values())
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert head["rayStartParams"]["num-cpus"] == "0"  # nothing runs on the head
    containers = head["template"]["spec"]["containers"]
    assert containers and containers[0]["name"] == "ray-head"
    ports = {p["containerPort"] for p in containers[0]["ports"]}
    assert {6379, 8265} <= ports
    for container in containers:
        assert container["image"]
        for key in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][key]), (container["name"], key)


@pytest.mark.parametrize(("path", "kind"), MANIFESTS)
def test_worker_groups(path: Path, kind: str) -> None:
    groups = cluster_spec(load(path))["workerGroupSpecs"]
    assert {g["groupName"] for g in groups} == {"cpu", "gpu"}
    for group in groups:
        name = group["groupName"]
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name
        params = group["rayStartParams"]
        assert all(isinstance(v, str) for v in params.values()), name
        containers = group["template"]["spec"]["containers"]
        assert len(containers) == 1 and containers[0]["image"], name
        limits = containers[0]["resources"]["limits"]
        assert {"cpu", "memory"} <= set(containers[0]["resources"]["requests"]), name
        # Ray must count what the pod has, not the node's cores or GPUs.
        assert float(params["num-cpus"]) == cpu_quantity(limits["cpu"]), name
        assert float(params.get("num-gpus", "0")) == float(limits.get("nvidia.com/gpu", 0)), name
    gpu = next(g for g in groups if g["groupName"] == "gpu")
    assert float(gpu["rayStartParams"]["num-gpus"]) >= 1


@pytest.mark.parametrize(("path", "kind"), MANIFESTS)
def test_images_are_this_version(path: Path, kind: str) -> None:
    images = {c["image"] for c in pod_containers(load(path))}
    assert images <= {f"facereel:{project_version()}", f"facereel:{project_version()}-gpu"}
    assert f"facereel:{project_version()}" in images


@pytest.mark.parametrize(("path", "kind"), MANIFESTS)
def test_every_pod_gets_s3_credentials_from_the_secret(path: Path, kind: str) -> None:
    for container in pod_containers(load(path)):
        env = {e["name"]: e for e in container.get("env", [])}
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            ref = env[name]["valueFrom"]["secretKeyRef"]
            assert ref["name"] and ref["key"] == name, (container["name"], name)
            assert not ref.get("optional", False)
            assert "value" not in env[name]  # never a literal key in the manifest


@pytest.mark.parametrize(("path", "kind"), MANIFESTS)
def test_facereel_variables_name_real_settings(path: Path, kind: str) -> None:
    doc = load(path)
    names = set(runtime_env_vars(doc))
    names |= {e["name"] for c in pod_containers(doc) for e in c.get("env", [])}
    facereel = {n for n in names if n.startswith(PREFIX)}
    assert facereel, "no facereel settings at all"
    assert sorted(n for n in facereel if not setting_exists(n)) == []
    # Comments too (e.g. the GPU switches in rayjob.yaml): a name there is one to copy.
    mentioned = set(re.findall(r"\bFACEREEL_[A-Z0-9_]+", path.read_text())) - NOT_SETTINGS
    assert sorted(n for n in mentioned if not setting_exists(n)) == []


@pytest.mark.parametrize(("path", "kind"), MANIFESTS)
def test_runtime_env_values_load_into_the_settings(path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The values parse as pydantic-settings reads them (a list as JSON, floats...)."""
    for name in [n for n in os.environ if n.startswith(PREFIX)]:
        monkeypatch.delenv(name)
    env_vars = runtime_env_vars(load(path))
    for name, value in env_vars.items():
        assert isinstance(value, str), f"{name}: runtime_env env_vars must be strings"
        monkeypatch.setenv(name, value)
    settings = AppSettings()
    assert settings.store.uri == env_vars["FACEREEL_STORE__URI"]
    assert settings.api.control_uri == env_vars["FACEREEL_API__CONTROL_URI"]


@pytest.mark.parametrize(("path", "kind"), MANIFESTS)
def test_storage_is_shared(path: Path, kind: str) -> None:
    env_vars = runtime_env_vars(load(path))
    storage = {n: v for n, v in env_vars.items() if n in STORAGE_VARS}
    assert {"FACEREEL_STORE__URI", "FACEREEL_API__CONTROL_URI"} <= set(storage)
    assert all(v.startswith("s3://") for v in storage.values()), storage


def test_job_indexes_into_the_store_the_service_reads() -> None:
    service, job = runtime_env_vars(load(RAYSERVICE)), runtime_env_vars(load(RAYJOB))
    for name in ("FACEREEL_STORE__URI", "FACEREEL_API__CONTROL_URI"):
        assert job[name] == service[name], name


def test_dockerfile_base_is_the_installed_ray() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    bases = re.findall(r"^ARG BASE=rayproject/ray:(\S+)-py311$", text, re.MULTILINE)
    assert bases == [ray.__version__]
    assert re.search(r'^RUN pip install --no-cache-dir "\.\$\{EXTRAS\}"$', text, re.MULTILINE)
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "gpu" in extras and "EXTRAS=[gpu]" in text


def test_every_node_starts_with_the_serving_environment() -> None:
    """Ray starts Serve's proxies and workers from the node's environment: the image sets
    what facereel's own entry points set (app/entry/serving_env.py), and the proxy callback
    resolves to Starlette middleware: admission inside the envelope."""
    from app.entry.serving_env import SERVING_ENV
    from app.http.admission import Admission
    from app.http.proxy_envelope import PROXY_CALLBACK, ProxyEnvelope, middlewares

    text = (DEPLOY / "Dockerfile").read_text()
    for name, value in SERVING_ENV.items():
        assert re.search(rf"^ENV {name}={re.escape(value)}$", text, re.MULTILINE), name
    module_name, attr = PROXY_CALLBACK.split(":")
    assert getattr(importlib.import_module(module_name), attr) is middlewares
    assert [m.cls for m in middlewares()] == [Admission, ProxyEnvelope]  # the last is outermost


# --- RayService ----------------------------------------------------------------------------


def test_serve_config_matches_the_repos() -> None:
    doc = load(RAYSERVICE)
    assert isinstance(doc["spec"]["serveConfigV2"], str)  # KubeRay takes a YAML string
    config = yaml.safe_load(doc["spec"]["serveConfigV2"])
    assert config["proxy_location"] == "EveryNode"
    assert config["http_options"]["host"] == "0.0.0.0"
    repo_app = yaml.safe_load((REPO / "serve_config.yaml").read_text())["applications"][0]
    app = serve_app(doc)
    assert (app["name"], app["import_path"], app["route_prefix"]) == (
        repo_app["name"],
        repo_app["import_path"],
        repo_app["route_prefix"],
    )
    mine = {d["name"]: d for d in app["deployments"]}
    theirs = {d["name"]: d for d in repo_app["deployments"]}
    assert list(mine) == list(theirs)
    for name, deployment in mine.items():
        scaling = {k: v for k, v in deployment.items() if k != "ray_actor_options"}
        assert scaling == {k: v for k, v in theirs[name].items() if k != "ray_actor_options"}, name


def test_serve_import_path_resolves() -> None:
    module_name, attr = serve_app(load(RAYSERVICE))["import_path"].split(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, attr))


def test_serve_deployments_write_their_resources() -> None:
    for deployment in serve_app(load(RAYSERVICE))["deployments"]:
        options = deployment["ray_actor_options"]
        assert isinstance(options["num_cpus"], int | float) and options["num_cpus"] > 0, deployment["name"]
    embedder = next(d for d in serve_app(load(RAYSERVICE))["deployments"] if d["name"] == "SelfieEmbedder")
    assert "num_gpus" in embedder["ray_actor_options"]


def test_head_exposes_dashboard_and_serve() -> None:
    head = cluster_spec(load(RAYSERVICE))["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {8265, 8000} <= {p["containerPort"] for p in head["ports"]}


def test_one_cpu_worker_can_host_the_app() -> None:
    doc = load(RAYSERVICE)
    cpu_group = next(g for g in cluster_spec(doc)["workerGroupSpecs"] if g["groupName"] == "cpu")
    needed = sum(d["ray_actor_options"]["num_cpus"] * min_replicas(d) for d in serve_app(doc)["deployments"])
    assert needed <= float(cpu_group["rayStartParams"]["num-cpus"])


def test_gpu_deployments_fit_the_gpu_group() -> None:
    doc = load(RAYSERVICE)
    gpu_group = next(g for g in cluster_spec(doc)["workerGroupSpecs"] if g["groupName"] == "gpu")
    params = gpu_group["rayStartParams"]
    on_gpus = [d for d in serve_app(doc)["deployments"] if d["ray_actor_options"].get("num_gpus", 0) > 0]
    for d in on_gpus:  # one replica fits one pod of the group
        assert d["ray_actor_options"]["num_gpus"] <= float(params["num-gpus"]), d["name"]
        assert d["ray_actor_options"]["num_cpus"] <= float(params["num-cpus"]), d["name"]
    gpus = sum(d["ray_actor_options"]["num_gpus"] * max_replicas(d) for d in on_gpus)
    assert gpus <= float(params["num-gpus"]) * gpu_group["maxReplicas"]
    # The gpu group runs the GPU build of the image.
    assert all(c["image"].endswith("-gpu") for c in gpu_group["template"]["spec"]["containers"])


# --- RayJob --------------------------------------------------------------------------------


def test_rayjob_runs_facereel_index() -> None:
    from app.entry.cli import build_parser

    spec = load(RAYJOB)["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["facereel", "index"]
    args = build_parser().parse_args(argv[1:])  # exits (SystemExit) on an unknown flag
    assert args.command == "index"
    assert (args.org, args.event) == (1, 1)
    assert args.inputs and all(i.startswith("s3://") for i in args.inputs)


def test_rayjob_lifecycle() -> None:
    spec = load(RAYJOB)["spec"]
    assert isinstance(spec["runtimeEnvYAML"], str)
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert isinstance(runtime_env, dict) and isinstance(runtime_env["env_vars"], dict)
    # The driver must join the job's cluster, not start its own Ray inside the head pod.
    assert runtime_env["env_vars"]["FACEREEL_RAY__ADDRESS"] == "auto"
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0
    assert spec["submissionMode"] == "K8sJobMode"
    assert "rayClusterConfig" not in spec  # RayService's name; a RayJob's is rayClusterSpec
