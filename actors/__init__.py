"""Members: one model each, holding weights and per-session KV caches (DESIGN.md, "member")."""
