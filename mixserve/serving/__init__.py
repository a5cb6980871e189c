"""Serving: the ensemble built from a config (ensemble.py), the Ray Serve app and its HTTP and gRPC
ingresses, and `mixserve serve` / `mixserve generate` (cli.py). It sits on the router and the members;
the tooling and the CLI sit on it (docs/architecture.md, "Layout")."""
