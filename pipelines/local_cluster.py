"""Starting a private local Ray cluster beside another one on the same machine.

Ray 2.60's ``ray.init()`` starts a new local node's dashboard agent on the fixed port 52365
and has no argument to change it (``ray start`` has ``--dashboard-agent-listen-port``).
With that port taken by another local cluster (``facereel index`` run beside ``facereel
serve``, ``facereel demo`` beside a test session's cluster), the agent cannot bind, the
raylet gives up waiting for it, and ``ray.init()`` fails with "The current node timed out
during startup" (measured here: every second cluster failed that way). So when the port is
taken, the new node is given a free one.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

RAY_DEFAULT_AGENT_PORT = 52365


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@contextmanager
def agent_port_for_a_new_node() -> Iterator[int]:
    """Around ``ray.init()`` of a new local cluster: its dashboard agent listens on 52365 when
    that is free, else on a free port. Yields the port."""
    if port_free(RAY_DEFAULT_AGENT_PORT):
        yield RAY_DEFAULT_AGENT_PORT
        return
    from ray._private import parameter

    port = free_port()
    original = parameter.RayParams

    class RayParams(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs) -> None:
            kwargs.setdefault("dashboard_agent_listen_port", port)
            super().__init__(*args, **kwargs)

    log.debug(
        "port %d is taken (another local Ray cluster): this one's agent listens on %d", RAY_DEFAULT_AGENT_PORT, port
    )
    parameter.RayParams = RayParams  # ray.init() looks it up when it builds the node
    try:
        yield port
    finally:
        parameter.RayParams = original
