"""The router: sessions, policies and the step loop (DESIGN.md, "router")."""
