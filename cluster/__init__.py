"""Config -> Ray: starting or joining a cluster, and where each member runs (DESIGN.md, "cluster")."""
