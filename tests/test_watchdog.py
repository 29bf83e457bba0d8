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
