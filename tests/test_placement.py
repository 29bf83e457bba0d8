"""Stage sizing against the cluster's nodes (pure): pipelines/placement.py."""

from __future__ import annotations

import itertools

import pytest

from pipelines.config import PoolSettings
from pipelines.placement import ClusterTooSmall, NodeCapacity, fit_stages, packs

HALF = PoolSettings(num_cpus=0.5)


def nodes(*cpus: float, gpus: tuple[float, ...] = ()) -> list[NodeCapacity]:
    g = list(gpus) + [0.0] * (len(cpus) - len(gpus))
    return [NodeCapacity(f"node{i:02d}" * 4, c, g[i], c, g[i]) for i, c in enumerate(cpus)]


def pools(detect: PoolSettings = HALF, embed: PoolSettings = HALF) -> dict[str, PoolSettings]:
    return {"detect": detect, "embed": embed}


def every_placement_leaves_decode_room(cluster: list[NodeCapacity], fit) -> bool:
    """Place the actors of every pool at full size in every way Ray could (each actor on
    any node with room): a decode task must always fit on some node afterwards."""
    actors = [p.num_cpus for p in fit.pools.values() for _ in range(p.max_size)]
    for choice in itertools.product(range(len(cluster)), repeat=len(actors)):
        free = [n.cpus for n in cluster]
        placed = True
        for cpu, node in zip(actors, choice, strict=True):
            if free[node] + 1e-9 < cpu:
                placed = False
                break
            free[node] -= cpu
        if placed and max(free) + 1e-9 < fit.decode_cpus:
            return False
    return True


def test_one_node_keeps_the_configured_requests():
    fit = fit_stages(nodes(2), 1.0, pools())
    assert fit.decode_cpus == 1.0 and fit.scale == 1.0
    assert [(p.min_size, p.max_size) for p in fit.pools.values()] == [(1, 1), (1, 1)]
    big = fit_stages(nodes(16), 1.0, pools())
    det, emb = big.pools["detect"], big.pools["embed"]
    assert det.max_size * 0.5 + emb.max_size * 0.5 + 1.0 <= 16 and emb.max_size > det.max_size >= 2


def test_two_one_cpu_nodes_leave_a_decode_task_room_wherever_the_actors_go():
    """The repro of issue 13: 1-CPU decode and two 0.5-CPU actors on two 1-CPU nodes hung."""
    cluster = nodes(1, 1)
    fit = fit_stages(cluster, 1.0, pools())
    assert fit.decode_cpus == 0.5  # one unit: fits beside the actors on either node
    assert every_placement_leaves_decode_room(cluster, fit)
    # What the old pooled sizing built: decode 1.0 and one actor per pool can starve decode.
    from pipelines.placement import PoolFit, StageFit

    old = StageFit(1.0, {"detect": PoolFit(0.5, 0, 1, 1, 4), "embed": PoolFit(0.5, 0, 1, 1, 32)})
    assert not every_placement_leaves_decode_room(cluster, old)


@pytest.mark.parametrize("cpus", [(1, 1), (2, 1), (1, 1, 1), (2, 2), (3, 1.5)])
@pytest.mark.parametrize("detect_cpus", [0.5, 1.0, 0.3])
def test_multi_node_fits_never_starve_decode(cpus, detect_cpus):
    cluster = nodes(*cpus)
    fit = fit_stages(cluster, 1.0, pools(detect=PoolSettings(num_cpus=detect_cpus)))
    assert all(p.num_cpus > 0 and p.min_size <= p.max_size for p in fit.pools.values())
    assert every_placement_leaves_decode_room(cluster, fit)


def test_a_gpu_stage_without_a_gpu_node_fails_naming_the_gpu():
    gpu = PoolSettings(num_cpus=0.5, num_gpus=1)
    with pytest.raises(ClusterTooSmall, match=r"index.embed asks 1 GPU per actor.*no node has that many"):
        fit_stages(nodes(1, 1), 1.0, pools(embed=gpu))
    with pytest.raises(ClusterTooSmall, match="held by other work"):
        fit_stages([NodeCapacity("a" * 32, 2, 0.0, 2, 1.0)], 1.0, pools(embed=gpu))
    fit = fit_stages(nodes(4, 4, gpus=(1, 2)), 1.0, pools(embed=PoolSettings(num_cpus=0.5, num_gpus=0.6)))
    assert fit.pools["embed"].max_size == 1 + 3  # per node: floor(1/0.6) + floor(2/0.6)
    # Many GPU slots, few CPUs: the GPU actors' CPU requests still fit beside decode.
    many = fit_stages(nodes(2, gpus=(8,)), 1.0, pools(embed=PoolSettings(num_cpus=0.5, num_gpus=0.25)))
    assert many.pools["embed"].max_size == 1 and many.decode_cpus == 1.0


def test_requests_shrink_to_what_other_work_leaves_and_fail_when_nothing_is_left():
    # e.g. a Serve app holds 0.75 of 2 CPUs
    fit = fit_stages([NodeCapacity("a" * 32, 1.25, 0, 2, 0)], 1.0, pools())
    assert fit.scale < 1 and fit.decode_cpus + sum(p.num_cpus for p in fit.pools.values()) <= 1.25
    assert fit.notes
    busy = [NodeCapacity("a" * 32, 0.0, 0, 1, 0), NodeCapacity("b" * 32, 0.05, 0, 1, 0)]
    with pytest.raises(ClusterTooSmall, match=r"smallest index pipeline needs 1\.5 CPUs.*0/1 CPU free"):
        fit_stages(busy, 1.0, pools())


def test_pool_maxima_beyond_the_cluster_are_refused():
    with pytest.raises(ClusterTooSmall, match="decode needs"):
        fit_stages(nodes(2), 1.0, pools(detect=PoolSettings(num_cpus=1, max_size=2)))


def test_a_head_without_cpus_counts_as_no_node():
    head = NodeCapacity("h" * 32, 0, 0, 0, 0)
    fit = fit_stages([head, *nodes(2)], 1.0, pools())
    assert fit.decode_cpus == 1.0  # one CPU node: no unit rounding
    with pytest.raises(ClusterTooSmall, match="no node of the cluster has CPUs"):
        fit_stages([head], 1.0, pools())


def test_packs_is_node_by_node():
    two = nodes(1, 1)
    assert packs([(0.5, 0), (0.5, 0)], 0.5, two, 0.5)
    assert not packs([(1.5, 0)], 0.5, two, 0.5)  # 2 CPUs in all, but no node holds 1.5


def test_the_embed_actors_share_the_decode_reservation_as_threads():
    from pipelines.placement import PoolFit, embed_threads

    def fitted(cluster: list[NodeCapacity]) -> tuple[PoolFit, float]:
        fit = fit_stages(cluster, 1.0, pools())
        return fit.pools["embed"], fit.decode_cpus

    small, decode = fitted(nodes(2.0))
    assert small.max_size == 1 and embed_threads(small, decode, 1) == 2  # the 2-CPU host
    big, decode = fitted(nodes(16.0))
    assert big.max_size >= 10 and embed_threads(big, decode, 1) == 1  # many actors: as configured
    assert embed_threads(small, decode, 3) == 3 and embed_threads(small, decode, 0) == 0
    gpu = PoolFit(num_cpus=0.5, num_gpus=0.25, min_size=1, max_size=1, batch_size=32)
    assert embed_threads(gpu, decode, 1) == 1
