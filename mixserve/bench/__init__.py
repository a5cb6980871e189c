"""`mixserve bench`: ME against its baselines on the same members and prompts (docs/performance.md)."""
