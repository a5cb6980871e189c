"""`mixserve eval`: each member, ME and CE scored by lm-evaluation-harness over HTTP (docs/evaluation.md)."""
