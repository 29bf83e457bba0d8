"""Ray Serve deployments: one per file. Replicas and resources: serve_config.yaml."""
