"""The Ray cluster as it is: alive nodes, what each has free, and storage every node shares.

On one node nothing here costs more than a look at the node table: the single-node default
stays local and zero-config. On more than one, every root facereel reads or writes must be
shared: a path only the driver's node has would be read by a decode task elsewhere, and a
clip written on node B would be missing from the /media route on node A.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import fsspec
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pipelines.media import fsspec_options, is_remote
from pipelines.placement import ClusterError, NodeCapacity

log = logging.getLogger(__name__)

PROBE_FOLDER = ".facereel-probe"


class StorageNotShared(ClusterError):
    """A storage root that not every node of the cluster can use; the message says which and why."""


def node_capacities() -> list[NodeCapacity]:
    """Alive nodes with their free and total CPUs and GPUs (Ray's view lags ~0.1 s)."""
    try:  # per-node free resources: a developer API, but the only view of them
        from ray._private.state import available_resources_per_node

        free = available_resources_per_node()
    except Exception:
        free = {}
    nodes = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        total = node.get("Resources", {})
        avail = free.get(node["NodeID"], total)
        nodes.append(
            NodeCapacity(
                node_id=node["NodeID"],
                cpus=float(avail.get("CPU", 0.0)),
                gpus=float(avail.get("GPU", 0.0)),
                total_cpus=float(total.get("CPU", 0.0)),
                total_gpus=float(total.get("GPU", 0.0)),
            )
        )
    return nodes


def settled_capacities(need_cpus: float, wait_s: float = 1.0) -> list[NodeCapacity]:
    """Node capacities, giving Ray's resource view a moment to catch up with tasks just
    finished (e.g. the probe tasks right before the pipeline is sized)."""
    deadline = time.monotonic() + wait_s
    nodes = node_capacities()
    while sum(n.cpus for n in nodes) < need_cpus and time.monotonic() < deadline:
        time.sleep(0.05)  # poll interval; bounded by the deadline
        nodes = node_capacities()
    return nodes


def alive_node_ids() -> list[str]:
    return [n["NodeID"] for n in ray.nodes() if n.get("Alive")]


def _under(path: str, prefixes: list[str]) -> bool:
    resolved = Path(path).expanduser().resolve()
    for prefix in prefixes:
        root = Path(prefix).expanduser().resolve()
        if resolved == root or root in resolved.parents:
            return True
    return False


def local_roots_refused(roots: dict[str, str], shared_paths: list[str], nodes: int) -> list[str]:
    """The roots a cluster of ``nodes`` nodes cannot use, each with the reason (pure).

    A local path is node-local unless it lies under one of ``shared_paths``: mounts the
    operator says every node has (NFS, a CSI volume). Object storage URIs are shared.
    """
    if nodes <= 1:
        return []
    return [
        f"{name} {root!r} is a local path, but the cluster has {nodes} nodes"
        for name, root in roots.items()
        if root and not is_remote(root) and not _under(root, shared_paths)
    ]


@ray.remote(num_cpus=0, max_retries=0)
def _write_probe(root: str, run: str, options: dict) -> str:
    node = ray.get_runtime_context().get_node_id()
    fs, path = fsspec.core.url_to_fs(root, **options)
    fs.makedirs(f"{path}/{PROBE_FOLDER}/{run}", exist_ok=True)
    fs.pipe_file(f"{path}/{PROBE_FOLDER}/{run}/{node}", node.encode())
    return node


@ray.remote(num_cpus=0, max_retries=0)
def _read_probe(root: str, run: str, writer: str, options: dict) -> bool:
    fs, path = fsspec.core.url_to_fs(root, **options)
    try:
        return fs.cat_file(f"{path}/{PROBE_FOLDER}/{run}/{writer}") == writer.encode()
    except FileNotFoundError:
        return False


@ray.remote(num_cpus=0, max_retries=0)
def _remove_probe(root: str, run: str, options: dict) -> None:
    fs, path = fsspec.core.url_to_fs(root, **options)
    fs.rm(f"{path}/{PROBE_FOLDER}/{run}", recursive=True)
    with contextlib.suppress(OSError):  # the folder goes only when no other probe is running
        fs.rmdir(f"{path}/{PROBE_FOLDER}")


def _on(node_id: str) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node_id, soft=False)


@dataclass(frozen=True)
class StorageRoot:
    """A root to check: its name in messages ("store.uri"), where it is, how to open it."""

    name: str
    uri: str
    storage_options: dict | None = None


def probe_shared(roots: list[StorageRoot], node_ids: list[str], timeout_s: float = 60.0) -> None:
    """Write a probe file from a task on each node into every root, and read each back on
    another node; raise ``StorageNotShared`` naming the root and nodes that failed."""
    run = uuid.uuid4().hex[:12]
    for root in roots:
        options = fsspec_options(root.uri, root.storage_options)
        try:
            writers = ray.get(
                [_write_probe.options(scheduling_strategy=_on(n)).remote(root.uri, run, options) for n in node_ids],
                timeout=timeout_s,
            )
            readers = node_ids[1:] + node_ids[:1]  # each node reads the next one's file
            seen = ray.get(
                [
                    _read_probe.options(scheduling_strategy=_on(r)).remote(root.uri, run, w, options)
                    for r, w in zip(readers, writers, strict=True)
                ],
                timeout=timeout_s,
            )
        except ray.exceptions.GetTimeoutError as exc:
            raise StorageNotShared(
                f"{root.name} {root.uri!r}: the storage probe got no answer from every node in {timeout_s:g} s"
            ) from exc
        except ray.exceptions.RayTaskError as exc:
            raise StorageNotShared(f"{root.name} {root.uri!r} is not writable from every node: {exc.cause!r}") from exc
        missing = [f"{w[:8]} -> {r[:8]}" for r, w, ok in zip(readers, writers, seen, strict=True) if not ok]
        try:
            ray.get(_remove_probe.options(scheduling_strategy=_on(node_ids[0])).remote(root.uri, run, options))
        except Exception:
            log.debug("could not remove the probe files under %s", root.uri, exc_info=True)
        if missing:
            raise StorageNotShared(
                f"{root.name} {root.uri!r} is not shared by the cluster's nodes: a file written on one "
                f"node was not there on another ({', '.join(missing)}). Use s3:// or a path every node mounts"
            )


def check_shared_storage(
    roots: list[StorageRoot], shared_paths: list[str], unprobed: dict[str, str] | None = None
) -> list[str]:
    """On a cluster of more than one node, refuse node-local roots (``roots`` and the
    ``unprobed`` ones, name -> path, which are not written to) and prove ``roots`` shared
    with a probe. Returns the alive node ids checked: none on a single node, where nothing
    is done."""
    node_ids = alive_node_ids()
    if len(node_ids) <= 1:
        return []
    named = {r.name: r.uri for r in roots} | (unprobed or {})
    refused = local_roots_refused(named, shared_paths, len(node_ids))
    if refused:
        raise StorageNotShared(
            "; ".join(refused) + ". On a multi-node cluster every node must reach the same storage: use "
            "s3:// (or another object store) or a path every node mounts, and list that mount in "
            "ray.shared_paths"
        )
    started = time.monotonic()
    probe_shared(roots, node_ids)
    log.debug("storage shared by %d nodes (%.2f s): %s", len(node_ids), time.monotonic() - started, roots)
    return node_ids


@ray.remote(num_cpus=0, max_retries=0)
def _readable(uris: list[str], options: list[dict]) -> list[str]:
    """The URIs this node cannot see."""
    missing = []
    for uri, opts in zip(uris, options, strict=True):
        fs, path = fsspec.core.url_to_fs(uri, **opts)
        try:
            if not fs.exists(path):
                missing.append(uri)
        except Exception:
            missing.append(uri)
    return missing


def check_sources_everywhere(
    uris: list[str], options: list[dict], node_ids: list[str], timeout_s: float = 60.0
) -> None:
    """Every node must see the media it may be asked to decode: a stat from each node."""
    answers = ray.get(
        [_readable.options(scheduling_strategy=_on(n)).remote(uris, options) for n in node_ids], timeout=timeout_s
    )
    missing = {n[:8]: m for n, m in zip(node_ids, answers, strict=True) if m}
    if missing:
        node, uris_missing = next(iter(missing.items()))
        raise StorageNotShared(
            f"media not readable from every node: node {node} cannot see {uris_missing[0]!r}"
            + (f" and {len(uris_missing) - 1} more" if len(uris_missing) > 1 else "")
            + f" ({len(missing)} of {len(node_ids)} nodes). Put media on s3:// or a path every node mounts"
        )
