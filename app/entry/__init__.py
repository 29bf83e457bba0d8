"""Entry points: the Serve application builder, the CLI, the demo, the serving environment."""
