"""The online side of facereel: CLI, and (later) Serve deployments, routes, auth, records."""
