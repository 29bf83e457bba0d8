"""The stream watchdog (pipelines/watchdog.py): a stall is an error, never a wait."""

from __future__ import annotations

import threading
import time

import pytest

from pipelines.watchdog import StreamStalled, watched


def test_items_pass_through_and_errors_surface():
    assert list(watched(lambda: iter(range(5)), 5.0)) == [0, 1, 2, 3, 4]

    def broken():
        yield 1
        raise ValueError("decoder died")

    with pytest.raises(ValueError, match="decoder died"):
        list(watched(broken, 5.0))


def test_a_stream_that_stops_producing_fails_with_the_explanation():
    release = threading.Event()

    def stuck():
        yield "first"
        release.wait(30)  # a stage no node can schedule
        yield "never"

    started = time.monotonic()
    got = []
    with pytest.raises(StreamStalled, match=r"no progress for 0\.5 s: decode waits for 1 CPU"):
        for item in watched(stuck, 0.5, lambda: "decode waits for 1 CPU"):
            got.append(item)
    release.set()
    assert got == ["first"] and time.monotonic() - started < 10


def test_time_spent_by_the_reader_does_not_count_as_a_stall():
    out = []
    for item in watched(lambda: iter(range(3)), 0.3):
        out.append(item)
        threading.Event().wait(0.5)  # the consumer is slow, the stream is not stalled
    assert out == [0, 1, 2]


class _Identity:
    def __call__(self, batch):
        return batch


def test_a_real_ray_data_stall_fails_and_gives_the_actors_cpus_back(ray_cluster):
    """A stage no node can run (a resource nobody has) after an actor pool: the actor holds
    its CPU while the stream waits. The watchdog fails the stream and shuts the executor
    down, and the CPU comes back."""
    import ray

    free_before = ray.available_resources().get("CPU", 0.0)
    ds = ray.data.range(4, override_num_blocks=4).map_batches(
        _Identity, compute=ray.data.ActorPoolStrategy(min_size=1, max_size=1), num_cpus=0.5
    )
    ds = ds.map_batches(lambda b: b, num_cpus=0.5, resources={"no_such_node_resource": 1})
    started = time.monotonic()
    with pytest.raises(StreamStalled, match="no progress for 3 s: nothing can run"):
        list(watched(lambda: ds.iter_batches(batch_size=None), 3.0, lambda: "nothing can run"))
    assert time.monotonic() - started < 30
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0.0) < free_before:
        assert time.monotonic() < deadline, f"CPUs not given back: {ray.available_resources()} (was {free_before})"
        time.sleep(0.1)  # poll interval; bounded by the deadline
