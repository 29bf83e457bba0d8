"""Stage sizing against the cluster's nodes (pure): pipelines/placement.py."""

from __future__ import annotations

import itertools

import pytest

from pipelines.config import PoolSettings
from pipelines.placement import ClusterTooSmall, NodeCapacity, describe_nodes, fit_stages, packs

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


def sizes(fit) -> dict[str, tuple[float, float, int, int]]:
    return {name: (p.num_cpus, p.num_gpus, p.min_size, p.max_size) for name, p in fit.pools.items()}


def test_one_big_node_gives_detect_a_third_of_what_decode_leaves_and_embed_the_rest():
    fit = fit_stages(nodes(16), 1.0, pools())
    # 15 CPUs after decode: detect 5 / 0.5 = 10 actors, embed the other 10 CPUs = 20.
    assert (fit.decode_cpus, fit.scale, fit.notes) == (1.0, 1.0, [])
    assert sizes(fit) == {"detect": (0.5, 0.0, 1, 10), "embed": (0.5, 0.0, 1, 20)}
    with_bibs = fit_stages(nodes(16), 1.0, {"bibs": HALF, **pools()})
    # OCR gets one actor unless asked; detect a third of the 14.5 CPUs left; embed the rest.
    assert sizes(with_bibs) == {"bibs": (0.5, 0.0, 1, 1), "detect": (0.5, 0.0, 1, 9), "embed": (0.5, 0.0, 1, 20)}


def test_on_several_nodes_requests_are_whole_units_of_the_smallest_ask():
    fit = fit_stages(nodes(3, 1.5), 1.0, pools(detect=PoolSettings(num_cpus=0.3)))
    # unit 0.3: decode asks 0.3, embed's 0.5 rounds up to 0.6; 4.5 CPUs hold 15 units.
    assert fit.decode_cpus == 0.3 and fit.notes == [
        "decode asks 0.3 CPU (not 1) so that it fits beside the actors on a node"
    ]
    assert sizes(fit) == {"detect": (0.3, 0.0, 1, 4), "embed": (0.6, 0.0, 1, 5)}
    at_least_two = fit_stages(nodes(4, 4), 1.0, pools(detect=PoolSettings(num_cpus=1.0, min_size=2)))
    assert at_least_two.decode_cpus == 0.5
    assert sizes(at_least_two) == {"detect": (1.0, 0.0, 2, 2), "embed": (0.5, 0.0, 1, 11)}


def test_a_partly_busy_cluster_scales_every_request_by_the_same_factor():
    one = fit_stages([NodeCapacity("a" * 32, 1.25, 0, 2, 0)], 1.0, pools())
    # 2 CPUs needed, 1.25 free: scaled by 1.25 / 2 * 0.999.
    assert one.scale == pytest.approx(0.624375) and one.decode_cpus == pytest.approx(0.624375)
    assert sizes(one) == {
        "detect": (pytest.approx(0.3121875), 0.0, 1, 1),
        "embed": (pytest.approx(0.3121875), 0.0, 1, 1),
    }
    assert one.notes == ["only part of the cluster is free: stage CPU requests scaled by 0.62"]
    two = fit_stages([NodeCapacity("a" * 32, 0.9, 0, 2, 0), NodeCapacity("b" * 32, 0.9, 0, 2, 0)], 1.0, pools())
    # Units: the largest scale that still packs, by bisection (0.9 to 1e-9).
    assert two.scale == pytest.approx(0.9, abs=1e-6) and two.decode_cpus == pytest.approx(0.45, abs=1e-6)
    assert [(p.min_size, p.max_size) for p in two.pools.values()] == [(1, 1), (1, 2)]
    assert two.notes[-1] == "only part of the cluster is free: stage CPU requests scaled by 0.90"
    even = fit_stages(nodes(1, 1), 1.0, pools())
    assert even.scale == 1.0 and [(p.min_size, p.max_size) for p in even.pools.values()] == [(1, 1), (1, 2)]


def test_a_gpu_only_stage_is_sized_by_the_gpu_slots():
    fit = fit_stages(nodes(4, gpus=(2,)), 1.0, pools(embed=PoolSettings(num_cpus=0, num_gpus=0.5)))
    assert sizes(fit) == {"detect": (0.5, 0.0, 1, 2), "embed": (0.0, 0.5, 1, 4)}


def test_what_the_errors_and_descriptions_say():
    assert NodeCapacity("abcdefghijkl", 1.5, 0.5, 2, 1).describe() == "abcdefgh: 1.5/2 CPU, 0.5/1 GPU free"
    assert NodeCapacity("abcdefghijkl", 1.5, 0, 2, 0).describe() == "abcdefgh: 1.5/2 CPU free"
    assert describe_nodes([]) == "no alive nodes"
    assert describe_nodes(nodes(1, 2)) == "node00no: 1/1 CPU free; node01no: 2/2 CPU free"
    with pytest.raises(ClusterTooSmall) as busy:
        fit_stages([NodeCapacity("a" * 32, 0.0, 0, 1, 0)], 1.0, pools())
    assert str(busy.value) == (
        "the smallest index pipeline needs 2 CPUs (decode 1 + detect 0.5 x 1 + embed 0.5 x 1), with the decode "
        "task's on one node beside the actors, and the cluster has too few free: aaaaaaaa: 0/1 CPU free. "
        "Free CPUs (stop other work, e.g. a Serve app) or add a node"
    )
    with pytest.raises(
        ClusterTooSmall,
        match=r"^actor pools claim 1\.998 CPUs at full size and decode needs 0\.7992, "
        r"but the cluster has 2 free \(node00no: 2/2 CPU free\)",
    ):
        fit_stages(nodes(2), 1.0, pools(detect=PoolSettings(num_cpus=1, max_size=2)))


def test_packs_places_gpu_claims_first_and_checks_decode_on_one_node():
    gpu_second = nodes(1, 1, gpus=(0, 1))
    # Without units, decode needs one node with its CPUs left: 0.5 + 0.5 is not 1.
    assert not packs([(0.5, 0), (0.5, 1)], 1.0, gpu_second, None)
    assert packs([(1.0, 0)], 1.0, nodes(2), None) and not packs([(1.0, 0)], 1.01, nodes(2), None)
    # GPU claims go first, whatever their order: the CPU claim then takes the other node.
    assert packs([(0.5, 0), (0.5, 1)], 0.5, gpu_second, 0.5)
    assert packs([(0.5, 1), (0.5, 0)], 0.5, nodes(1, 1, gpus=(1, 0)), 0.5)
    assert not packs([(0.5, 1), (0.5, 1)], 0.5, gpu_second, 0.5)  # one GPU in all


def test_packs_at_the_boundaries():
    # First fit decreasing: the 1.0 claim first, or it finds no node after the 0.5 took one.
    assert packs([(0.5, 0), (1.0, 0)], 0.0, nodes(1.0, 0.5), None)
    # GPU claims before CPU-only ones: the 1-CPU claim would otherwise take the GPU node's CPU.
    gpu_first = [NodeCapacity("a" * 32, 1, 1, 1, 1), NodeCapacity("b" * 32, 1, 0, 1, 0)]
    assert packs([(1.0, 0), (0.5, 1)], 0.0, gpu_first, None)
    # With units on several nodes, decode may take what is left anywhere (a sum)...
    assert packs([(0.75, 0), (0.75, 0)], 0.5, nodes(1, 1), 0.25)
    # ... exactly what is left counts, float sums and all.
    assert packs([(0.2, 0), (0.1, 0)], 0.0, nodes(0.3), None)


def test_gpu_only_nodes_and_cpu_free_pools():
    gpu_node = NodeCapacity("g" * 32, 0, 1, 0, 1)
    with pytest.raises(ClusterTooSmall, match="no node of the cluster has CPUs"):
        fit_stages([gpu_node], 1.0, pools())
    # A node with one GPU and no CPUs still serves a 1-GPU stage; the CPU stages go elsewhere.
    one_gpu = fit_stages([gpu_node, *nodes(4)], 1.0, pools(embed=PoolSettings(num_cpus=0, num_gpus=1)))
    assert sizes(one_gpu)["embed"] == (0.0, 1, 1, 1)
    # Scaling to what is free looks at the CPU nodes only.
    busy = NodeCapacity("a" * 32, 1.25, 0, 2, 0)
    assert fit_stages([gpu_node, busy], 1.0, pools()).scale == pytest.approx(0.624375)
    # A GPU-only stage sets no CPU unit on several nodes: decode and detect keep 0.5.
    multi = fit_stages(nodes(4, 4, gpus=(2,)), 1.0, pools(embed=PoolSettings(num_cpus=0, num_gpus=0.5)))
    assert multi.decode_cpus == 0.5 and sizes(multi)["embed"] == (0.0, 0.5, 1, 4)
    # A pool that asks for nothing gets one actor.
    assert sizes(fit_stages(nodes(2), 1.0, pools(embed=PoolSettings(num_cpus=0))))["embed"] == (0.0, 0.0, 1, 1)


def test_batch_sizes_pass_through_and_a_matching_unit_adds_no_note():
    fit = fit_stages(nodes(1, 1), 0.5, pools(detect=PoolSettings(num_cpus=0.5, batch_size=3)))
    assert fit.pools["detect"].batch_size == 3 and fit.notes == [] and fit.decode_cpus == 0.5
    with pytest.raises(ClusterTooSmall, match=r"lower index\.detect/embed max_size or num_cpus$"):
        fit_stages(nodes(2), 1.0, pools(detect=PoolSettings(num_cpus=1, max_size=2)))
    head = NodeCapacity("h" * 32, 0, 0, 0, 0)
    with pytest.raises(ClusterTooSmall, match=r"too few free: aaaaaaaa: 0/1 CPU free\. "):
        fit_stages([head, NodeCapacity("a" * 32, 0.0, 0, 1, 0)], 1.0, pools())
