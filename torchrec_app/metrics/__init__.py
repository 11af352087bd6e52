"""Evaluation metrics computed on a whole split: binary (CTR) and ranking."""
