"""The router: sessions, policies and the turn loop (docs/architecture.md, "router")."""
