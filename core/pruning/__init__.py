"""Pruning: what to drop (filter correlation), what it costs (MACs), and how to remove it (surgery)."""

from core.pruning.correlation import pearson_correlation, redundancy_scores

__all__ = ["pearson_correlation", "redundancy_scores"]
