"""Config -> Ray: starting or joining a cluster, and where each member runs (docs/architecture.md, "cluster")."""
