"""Pair caches (contract 3): file format, building, freshness and the inventory."""
