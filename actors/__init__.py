"""Members: one model each, holding weights and per-session KV caches (docs/architecture.md, "member")."""
