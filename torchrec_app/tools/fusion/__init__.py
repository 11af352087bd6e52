"""Combining ranking runs: ensembles (priority, weighted reciprocal-rank fusion) and a LightGBM re-ranker."""
