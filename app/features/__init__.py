"""Use cases: auth and rate limits, searches, media sources, retention, tuning, upkeep. They raise
domain errors (app/core/errors.py) and never build a response."""
