"""CPU-bound request work (Face Search's matching and photo ranking, answered in the
request) run in the SearchMatcher deployment (app/deployments/matcher.py), not on the
ingress replica. A video search matches in its job instead (app/jobs/matching.py).

The ingress serves every request from one event loop; a match done there, even in a
thread, holds the GIL for long stretches, and under a burst of POSTs every GET and even
every load-shedding 503 waits behind it. A long-lived replica keeps the face store open
and costs no process start per call (a plain Ray task did: new workers under a burst).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError

from app.core.errors import overloaded


async def offload(services, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(store, settings, *args)`` in a SearchMatcher replica; its result or its error.
    A matcher that is down or full is a 503 (nothing is stored before matching)."""
    try:
        return await services.matcher.run.remote(fn, args)
    except RayTaskError as exc:  # the function's own error, as if it had run here
        raise exc.as_instanceof_cause() from None
    except (RayActorError, ActorUnavailableError, BackPressureError):
        raise overloaded("the search matcher is busy or restarting", services.settings.api.retry_after_s) from None
