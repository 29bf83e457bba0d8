"""A second private local cluster on one machine (pipelines/local_cluster.py): Ray's fixed
dashboard-agent port is swapped for a free one when another cluster holds it."""

from __future__ import annotations

import socket

from pipelines.local_cluster import RAY_DEFAULT_AGENT_PORT, agent_port_for_a_new_node, port_free


def test_a_new_node_gets_a_free_agent_port_when_rays_default_is_taken():
    from ray._private import parameter

    holder = None
    if port_free(RAY_DEFAULT_AGENT_PORT):  # else another cluster holds it already
        holder = socket.socket()
        holder.bind(("", RAY_DEFAULT_AGENT_PORT))
    try:
        with agent_port_for_a_new_node() as port:
            params = parameter.RayParams()  # as ray.init() builds a new node's
            assert params.dashboard_agent_listen_port == port != RAY_DEFAULT_AGENT_PORT
            assert port_free(port)
        assert parameter.RayParams().dashboard_agent_listen_port == RAY_DEFAULT_AGENT_PORT  # put back
    finally:
        if holder is not None:
            holder.close()
