"""Unlearning results: metric bars with Retrain marked, gap-to-Retrain vs time."""

__all__: list[str] = []
