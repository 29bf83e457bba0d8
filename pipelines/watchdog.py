"""A watchdog on a stream of batches: no batch for ``stall_s`` seconds is an error, not a wait.

Ray Data waits quietly when a stage cannot be scheduled (a task whose CPUs no node has
free, actors that never start). The stream is read in a thread of its own; the reader
waits for the next batch with a deadline, and on a stall shuts the Ray Data executors it
started down, so their actors give their CPUs back before the error is raised.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
_END = object()


class StreamStalled(RuntimeError):
    """No batch arrived for the configured time; the message says what was waiting."""


def _ray_data_executors() -> set[threading.Thread]:
    try:
        from ray.data._internal.execution.streaming_executor import StreamingExecutor
    except ImportError:  # a Ray without it: nothing to shut down
        return set()
    return {t for t in threading.enumerate() if isinstance(t, StreamingExecutor)}


def _shutdown(executors: set[threading.Thread]) -> None:
    for executor in executors:
        try:
            executor.shutdown(force=True)  # type: ignore[attr-defined]
        except Exception:
            log.debug("executor shutdown failed", exc_info=True)


def watched(batches: Callable[[], Iterable[T]], stall_s: float, explain: Callable[[], str] = lambda: "") -> Iterator[T]:
    """The items of ``batches()``, raising ``StreamStalled`` after ``stall_s`` seconds
    without one (time the caller spends on an item does not count).

    Leaving early (an error, a cancel, a stall) shuts down the Ray Data executors the stream
    started. ``explain`` adds what the cluster was waiting for to the stall's message.
    """
    before = _ray_data_executors()
    handoff: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def put(item: object) -> None:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def produce() -> None:
        try:
            for item in batches():
                if stop.is_set():
                    return
                put(item)
            put(_END)
        except BaseException as exc:
            put(exc)

    reader = threading.Thread(target=produce, name="watched-stream", daemon=True)
    reader.start()
    finished = False
    try:
        while True:
            try:
                item = handoff.get(timeout=stall_s)
            except queue.Empty:
                detail = explain()
                raise StreamStalled(f"no progress for {stall_s:g} s" + (f": {detail}" if detail else "")) from None
            if item is _END:
                finished = True
                return
            if isinstance(item, BaseException):
                finished = True  # the stream ended itself
                raise item
            yield item
    finally:
        stop.set()
        if not finished:
            _shutdown(_ray_data_executors() - before)
        reader.join(timeout=1.0)  # a daemon: a producer stuck in Ray must not hold the caller
