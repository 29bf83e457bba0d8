"""How long each step of starting a search took, logged as one line per search, so that a
slow start can be read from the replica's log (issue 10: under load, POSTs waited in the
ingress, not in the embedder or the matcher, and only per-step times showed it)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class StageTimes:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.took: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.took[name] = self.took.get(name, 0.0) + time.perf_counter() - t0

    def total(self) -> float:
        return time.perf_counter() - self.started

    def summary(self) -> str:
        """'2.31 s (embed 0.82, record 0.20, match 1.10, dispatch 0.19)'."""
        parts = ", ".join(f"{name} {s:.2f}" for name, s in self.took.items())
        return f"{self.total():.2f} s ({parts})"
