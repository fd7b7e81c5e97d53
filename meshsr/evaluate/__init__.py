"""Evaluation: error norms, the metrics tables of a trained pair, and its plots."""
