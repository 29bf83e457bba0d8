"""Observability and process helpers: metrics series, log context, stage times, threads, niceness."""
