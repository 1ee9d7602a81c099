"""dayone service: the CLI and the FastAPI site (top layer: imports matrix and probes)."""
