"""`mixserve soak`: a served ensemble under load while its processes are killed and paused, every
answer checked (docs/deploy.md, "Reliability")."""
