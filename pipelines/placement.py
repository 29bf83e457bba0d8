"""Fit the index stages to the cluster's nodes, node by node (pure).

A Ray cluster is not one pool of CPUs: a task or actor runs on one node, so a request
must fit in what one node has free. Pooled sums hide that. On two 1-CPU nodes the detect
and embed actors (0.5 CPU each) left 0.5 free on each node, and the 1-CPU decode task
could never start: the stream waited forever with half the cluster idle.

The rule that prevents it, on more than one node: every CPU request is a whole number of
one unit, the decode task's request. Nodes then hold whole units, so whenever the actors
leave at least one unit free in total, some node has a unit free and a decode task can
run, however Ray placed the actors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pipelines.config import PoolSettings

# Below this share of what the stages ask, the cluster is busy with other work: fail
# rather than run every stage on a sliver of a CPU.
MIN_SCALE = 0.1
_EPS = 1e-9


class ClusterError(RuntimeError):
    """The Ray cluster cannot run the work as configured; the message says what to change."""


class ClusterTooSmall(ClusterError):
    """The cluster cannot run the pipeline; the message names what is missing."""


@dataclass(frozen=True)
class NodeCapacity:
    """One alive node: what it has free now, and in all."""

    node_id: str
    cpus: float
    gpus: float = 0.0
    total_cpus: float = 0.0
    total_gpus: float = 0.0

    def describe(self) -> str:
        gpus = f", {self.gpus:g}/{self.total_gpus:g} GPU" if self.total_gpus else ""
        return f"{self.node_id[:8]}: {self.cpus:g}/{self.total_cpus:g} CPU{gpus} free"


@dataclass(frozen=True)
class PoolFit:
    """An actor pool as it will be built: per-actor requests and its size range."""

    num_cpus: float
    num_gpus: float
    min_size: int
    max_size: int
    batch_size: int


def embed_threads(pool: PoolFit, decode_cpus: float, configured: int) -> int:
    """Threads of an embed actor on CPUs. Embedding is ~95 % of the model work, while the
    decode task's reservation idles most of the run (decoding a 600 s event took 22 s of
    212 s): the embed actors share it. 2 CPUs: one actor, 2 threads (1.14x the
    throughput of 1 thread, bench/ingest.py --duration 600); 16 CPUs: 20 actors, 1 thread,
    as configured. A configured count above that is kept, and 0 (onnxruntime's choice)."""
    if pool.num_gpus > 0 or pool.max_size < 1 or configured == 0:
        return configured
    share = (pool.max_size * pool.num_cpus + decode_cpus) / pool.max_size
    return max(configured, int(share + 0.5))


@dataclass(frozen=True)
class StageFit:
    decode_cpus: float
    pools: dict[str, PoolFit]
    # CPU requests were multiplied by this to fit what is free (1.0: as configured).
    scale: float = 1.0
    notes: list[str] = field(default_factory=list)


def describe_nodes(nodes: list[NodeCapacity]) -> str:
    return "; ".join(n.describe() for n in nodes) or "no alive nodes"


def _units(cpus: float, unit: float | None) -> float:
    """What a node can hold for requests made of whole units."""
    if unit is None:
        return cpus
    return math.floor(cpus / unit + _EPS) * unit


def _round_up(ask: float, unit: float | None) -> float:
    if unit is None or ask <= 0:
        return ask
    return math.ceil(ask / unit - _EPS) * unit


def packs(claims: list[tuple[float, float]], decode_cpus: float, nodes: list[NodeCapacity], unit: float | None) -> bool:
    """Whether the (cpu, gpu) claims fit on the nodes with a decode task's CPUs left on one.

    First-fit decreasing; with unit-sized requests any node left holding a unit can take
    the decode task, so the check on the leftover is a sum.
    """
    free = [[_units(n.cpus, unit), n.gpus] for n in nodes]
    for cpu, gpu in sorted(claims, key=lambda c: (c[1], c[0]), reverse=True):
        for slot in free:
            if slot[0] + _EPS >= cpu and slot[1] + _EPS >= gpu:
                slot[0] -= cpu
                slot[1] -= gpu
                break
        else:
            return False
    if unit is None or len(nodes) == 1:
        return max(slot[0] for slot in free) + _EPS >= decode_cpus
    return sum(slot[0] for slot in free) + _EPS >= decode_cpus


def fit_stages(nodes: list[NodeCapacity], decode_cpus: float, pools: dict[str, PoolSettings]) -> StageFit:
    """CPU/GPU requests and actor pool sizes for the decode task and the ``pools``.

    ``pools`` is in pipeline order (e.g. bibs, detect, embed). Raises ``ClusterTooSmall``
    when no node can hold a stage or the smallest pipeline does not fit.
    """
    nodes = [n for n in nodes if n.total_cpus > 0 or n.total_gpus > 0]
    if not any(n.total_cpus > 0 for n in nodes):
        raise ClusterTooSmall(f"no node of the cluster has CPUs ({describe_nodes(nodes)})")
    notes: list[str] = []
    gpu_max: dict[str, int] = {}
    for name, pool in pools.items():
        if pool.num_gpus <= 0:
            continue
        if not any(n.total_gpus + _EPS >= pool.num_gpus for n in nodes):
            largest = max((n.total_gpus for n in nodes), default=0.0)
            raise ClusterTooSmall(
                f"index.{name} asks {pool.num_gpus:g} GPU per actor, but no node has that many "
                f"(largest: {largest:g} GPU; nodes: {describe_nodes(nodes)}). "
                f"Add a GPU node, or set index.{name}.num_gpus: 0 to run the stage on CPUs"
            )
        fits = sum(math.floor(n.gpus / pool.num_gpus + _EPS) for n in nodes)
        if fits < 1:
            raise ClusterTooSmall(
                f"index.{name} asks {pool.num_gpus:g} GPU per actor and every GPU is held by other "
                f"work ({describe_nodes(nodes)})"
            )
        gpu_max[name] = fits

    multi = len([n for n in nodes if n.total_cpus > 0]) > 1
    cpu_asks = [p.num_cpus for p in pools.values() if p.num_cpus > 0]
    unit = min([decode_cpus, *cpu_asks]) if multi else None
    decode = unit if unit is not None else decode_cpus
    asks = {name: _round_up(p.num_cpus, unit) for name, p in pools.items()}
    if unit is not None and unit < decode_cpus:
        notes.append(f"decode asks {unit:g} CPU (not {decode_cpus:g}) so that it fits beside the actors on a node")

    def claims_at(scale: float) -> list[tuple[float, float]]:
        return [(asks[name] * scale, p.num_gpus) for name, p in pools.items() for _ in range(max(1, p.min_size))]

    def fits_at(scale: float) -> bool:
        return packs(claims_at(scale), decode * scale, nodes, unit * scale if unit else None)

    scale = 1.0
    if not fits_at(1.0):
        need = decode + sum(c for c, _ in claims_at(1.0))
        if unit is None:
            scale = min(n.cpus for n in nodes if n.total_cpus > 0) / need * 0.999
            ok = scale >= MIN_SCALE and fits_at(scale)
        else:  # the largest scale that packs: bisect, floors make it not quite monotonic
            lo, hi = 0.0, 1.0
            for _ in range(30):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if fits_at(mid) else (lo, mid)
            scale = lo
            ok = scale >= MIN_SCALE
        if not ok:
            stages = " + ".join(
                [f"decode {decode:g}"] + [f"{name} {asks[name]:g} x {max(1, p.min_size)}" for name, p in pools.items()]
            )
            raise ClusterTooSmall(
                f"the smallest index pipeline needs {need:g} CPUs ({stages}), with the decode task's "
                f"on one node beside the actors, and the cluster has too few free: {describe_nodes(nodes)}. "
                "Free CPUs (stop other work, e.g. a Serve app) or add a node"
            )
        notes.append(f"only part of the cluster is free: stage CPU requests scaled by {scale:.2f}")

    decode *= scale
    unit_s = unit * scale if unit is not None else None
    capacity = sum(_units(n.cpus, unit_s) for n in nodes)
    budget = max(0.0, capacity - decode)
    fitted: dict[str, PoolFit] = {}
    for i, (name, p) in enumerate(pools.items()):
        ask = asks[name] * scale
        later = list(pools)[i + 1 :]
        if p.max_size:
            hi = p.max_size
        elif name == "bibs":
            hi = 1  # OCR is the costly stage: one actor unless asked
        else:  # detect: a third of the CPUs left; embed, the costlier stage, the rest
            share = budget / 3 if later else budget
            hi = max(1, int(share // ask + _EPS)) if ask > 0 else gpu_max.get(name, 1)
            if p.num_gpus > 0:  # and no more than the GPU slots of the nodes
                hi = max(1, min(hi, gpu_max[name]))
        budget = max(0.0, budget - hi * ask)
        fitted[name] = PoolFit(ask, p.num_gpus, max(1, min(p.min_size, hi)), hi, p.batch_size)
    claimed = sum(f.max_size * f.num_cpus for f in fitted.values())
    if claimed + decode > capacity + 1e-6:
        raise ClusterTooSmall(
            f"actor pools claim {claimed:g} CPUs at full size and decode needs {decode:g}, but the "
            f"cluster has {capacity:g} free ({describe_nodes(nodes)}): lower index.detect/embed "
            "max_size or num_cpus"
        )
    return StageFit(decode, fitted, scale, notes)
