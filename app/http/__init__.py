"""The HTTP layer, the only Starlette importer: app factory, routes, multipart, OpenAPI, error
mapping, admission, Serve proxy envelope, /metrics."""
