"""HTTP routes, one module per resource: parse the request, call a service, render the envelope.

Route modules hold no LanceDB, Ray or model calls (tests/test_architecture.py checks)."""
