"""mixserve: serve an ensemble of LLMs at the cost of one model (Mixture-model-like Ensemble on Ray)."""

__version__ = "0.1.0"
