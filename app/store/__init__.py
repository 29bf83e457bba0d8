"""Repositories over the LanceDB control tables (records, events, keys, locations, index jobs, sources)."""
