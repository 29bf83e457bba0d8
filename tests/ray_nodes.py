"""A real multi-node Ray cluster on this machine for tests: raylets started with ``ray start``.

Each node runs ``ray start --block`` in a session of its own, so stopping it kills exactly
its processes (``ray stop`` would also stop the suite's own local cluster). Every port is
chosen free: two raylets on one host would otherwise both claim the default agent ports.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import free_ports

VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")


def cluster_env() -> dict[str, str]:
    """The environment of the cluster's processes and its clients: the venv first on PATH
    (jobs run ``facereel``), no FACEREEL_* leaking in, token auth off (a test cluster on
    127.0.0.1; the worker would otherwise need the head's token)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEREEL_", "RAY_ADDRESS"))}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_AUTH_MODE"] = "disabled"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def _agent_ports(avoid: Collection[int]) -> list[str]:
    listen, grpc, metrics, runtime_env = free_ports(4, avoid)  # distinct: Ray refuses a port given twice
    return [
        f"--dashboard-agent-listen-port={listen}",
        f"--dashboard-agent-grpc-port={grpc}",
        f"--metrics-export-port={metrics}",
        f"--runtime-env-agent-port={runtime_env}",
    ]


@dataclass
class RayNodes:
    gcs_address: str  # 127.0.0.1:port, for RAY_ADDRESS
    dashboard: str  # http://127.0.0.1:port: jobs, Serve's REST API, the state API
    procs: list[subprocess.Popen]

    def node_ids(self) -> list[str]:
        from ray.util.state import list_nodes

        return sorted(n.node_id for n in list_nodes(address=self.dashboard) if n.state == "ALIVE")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def ray_nodes(
    cpus: list[int], log_dir: Path, deadline_s: float = 120.0, avoid: Collection[int] = ()
) -> Iterator[RayNodes]:
    """A head and workers with these CPU counts; all stopped on exit, even on failure.
    ``avoid``: ports the caller has chosen but not bound yet (Serve's HTTP port)."""
    port, dash, client = free_ports(3, avoid)
    env = cluster_env()
    procs: list[subprocess.Popen] = []

    def start(name: str, args: list[str]) -> None:
        with open(log_dir / f"{name}.log", "wb") as out:
            procs.append(
                subprocess.Popen(
                    [RAY, "start", "--block", *args, *_agent_ports(avoid)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            )

    nodes = RayNodes(f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}", procs)
    try:
        start(
            "head",
            [
                "--head",
                f"--num-cpus={cpus[0]}",
                f"--port={port}",
                "--node-ip-address=127.0.0.1",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dash}",
                f"--ray-client-server-port={client}",
                "--disable-usage-stats",
            ],
        )
        _wait(lambda: _alive(nodes) >= 1, procs, log_dir, deadline_s, "the head")
        for i, n in enumerate(cpus[1:], 1):
            start(f"worker{i}", [f"--address={nodes.gcs_address}", f"--num-cpus={n}", "--node-ip-address=127.0.0.1"])
        _wait(lambda: _alive(nodes) == len(cpus), procs, log_dir, deadline_s, f"{len(cpus)} nodes")
        yield nodes
    finally:
        for proc in reversed(procs):
            _stop(proc)
        # `ray stop` would remove the head's address file; a stale one makes a later
        # ray.init() (no address) try to join this cluster.
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if current.exists() and current.read_text().strip().endswith(f":{port}"):
            current.unlink(missing_ok=True)


def _alive(nodes: RayNodes) -> int:
    try:
        return len(nodes.node_ids())
    except Exception:
        return 0


def _wait(ready, procs: list[subprocess.Popen], log_dir: Path, deadline_s: float, what: str) -> None:
    deadline = time.monotonic() + deadline_s
    while not ready():
        dead = [p for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            logs = "\n".join(f"--- {f.name}\n{f.read_text()[-1500:]}" for f in sorted(log_dir.glob("*.log")))
            raise RuntimeError(f"Ray cluster: {what} not up ({'a node exited' if dead else 'deadline'}):\n{logs}")
        time.sleep(0.5)  # poll interval; bounded by the deadline
