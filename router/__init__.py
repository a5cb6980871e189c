"""The router: sessions, policies and the step loop (docs/architecture.md, "router")."""
