"""Scoring EASE and Multi-VAE with the one ranking evaluator (:mod:`torchrec_app.metrics.ranking`).

Both models score a user against the whole catalog on the process that holds the user
(``B x (N + 1)`` scores: EASE's ``x_u B``, Multi-VAE's decoder output), so ranks come from
:func:`~torchrec_app.metrics.ranking.rank_full_scores` with the user's input items masked
(``ranking.mask_seen``) and id 0 (padding) excluded; per-user results, top-K lists *and*
their scores go to ``<run>/details/<split>.parquet`` (the scores feed ``torchrec-app rerank``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from torchrec_app.config.sequences import RankingEvalConfig
from torchrec_app.metrics.ranking import RankingMetrics, rank_full_scores


def unwrap_scorer(model: nn.Module) -> nn.Module:
    """The module with a ``score(batch)`` method inside ``model`` (DMP / DDP wrappers, or itself)."""
    for _ in range(5):
        if hasattr(model, "score"):
            return model
        model = getattr(model, "module", model)
    raise TypeError(f"{type(model).__name__} has no score(batch) method")


class UserItemsEvaluator:
    """Full-ranking metrics of a user-item model over one split (``update`` per batch, ``compute`` once).

    ``update(model, batch)``: ``model.score(batch)`` (``B x (N + 1)``) ranked against every
    target of each real row; ``compute()`` is a collective (means over every rank's users);
    ``save_details(path)`` writes one row per user, with the top-K ids and their scores.
    """

    def __init__(self, config: RankingEvalConfig) -> None:
        self.config = config
        self.metrics = RankingMetrics(config.ks)

    def update(self, model: nn.Module, batch: Any) -> None:
        scorer = unwrap_scorer(model)
        with torch.no_grad():
            scores = scorer.score(batch)
            seen = batch.seen() if self.config.mask_seen else None
            ranks, top, top_scores = rank_full_scores(scores, batch.targets, seen, k=self.config.save_top_k, min_item=1,
                                                      block_items=self.config.item_block)  # fmt: skip
        top = torch.where(torch.isneginf(top_scores), torch.full_like(top, -1), top)  # masked / padding: not recommendations
        real = batch.weights > 0
        self.metrics.add(batch.users[real], batch.targets[real], ranks[real], top[real], top_scores[real])

    def compute(self) -> dict[str, float]:
        """Recall@K, NDCG@K, MRR over every rank's users, ``users`` and ``rows`` (the same count)."""
        metrics = self.metrics.compute()
        return {**metrics, "rows": metrics["users"]}

    def save_details(self, path: Any) -> None:
        """Per-user results with ``top_k_scores`` beside ``top_k`` (rank 0 writes; call on every rank)."""
        self.metrics.write_per_user(path)
