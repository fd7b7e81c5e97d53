"""Learning: settings, splits, features, normalisation, the networks and their training."""
