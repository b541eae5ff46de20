"""Results: the local store (always written) and Weights & Biases (mirrors it, never replaces it)."""
