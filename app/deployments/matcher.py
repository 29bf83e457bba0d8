"""SearchMatcher: the CPU-bound part of a Face Search request (matching a person, ranking
photos), off the ingress replica; see app/features/offload.py for why."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ray import serve

from app.config import AppSettings


# Defaults match serve_config.yaml, so the Python entry point schedules the same way.
@serve.deployment(
    name="SearchMatcher", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=8, max_queued_requests=16
)
class SearchMatcher:
    def __init__(self, settings: AppSettings) -> None:
        self.settings = settings  # built by the driver; never re-read from this replica's env
        self._store = None

    def store(self):
        """The face store, opened once per replica (it checks for new commits on read)."""
        if self._store is None:
            from pipelines.models import pack_info
            from pipelines.store import FaceStore

            self._store = FaceStore.from_settings(
                self.settings, pack_info(self.settings.models.pack), search_cache=True
            )
        return self._store

    async def run(self, fn: Callable[..., Any], args: tuple) -> Any:
        """``fn(store, settings, *args)``: a module-level function of app/features/search/."""
        return await asyncio.to_thread(fn, self.store(), self.settings, *args)
