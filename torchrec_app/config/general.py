"""Typed config sections of the general recommenders and their ensembles (``docs/GENERAL.md``).

One section per component: ``UserItemsConfig`` (a sequences dataset -> the user-item
layout of one protocol, general or sequential), ``EaseConfig`` (the closed-form EASE),
``MultiVaeConfig`` (Multi-VAE and its KL annealing) and ``FusionConfig`` (the
``rerank`` and ``ensemble`` commands over the per-user top-K lists of several runs).
"""

from __future__ import annotations

from dataclasses import dataclass

USER_ITEM_PROTOCOLS = ("general", "sequential")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(kw_only=True, slots=True)
class UserItemsConfig:
    """How ``preprocess --kind user_items`` derives a user-item dataset from a sequences dataset."""

    protocol: str = "general"
    """general: each user's held-out items are a random sample of their items (valid and test, disjoint);
    sequential: the sequences dataset's own valid / test targets (its leave-one-out or time cut), so
    runs compare with the next-item models user by user (torchrec-app compare)."""
    holdout_fraction: float = 0.1
    """general: share of each user's items held out for test, and the same share for valid (at least
    one each; users with fewer than 3 items only train)."""
    seed: int = 0
    """general: seed of the random hold-out (a hash of seed and user: the same for any user order)."""

    def __post_init__(self) -> None:
        _check(self.protocol in USER_ITEM_PROTOCOLS, f"user_items.protocol={self.protocol!r} is not one of {', '.join(USER_ITEM_PROTOCOLS)}")
        _check(0 < self.holdout_fraction < 0.5, f"user_items.holdout_fraction must be in (0, 0.5), got {self.holdout_fraction}")


@dataclass(kw_only=True, slots=True)
class EaseConfig:
    """EASE (Steck 2019): ``B = I - P diag(1 / diag(P))``, ``P = (X^T X + l2 I)^-1``, solved in float64."""

    l2: float = 200.0
    """The ridge weight lambda (Steck: a few hundred on MovieLens-sized data)."""
    memory_gb: float = 8.0
    """Memory the solve may take: 20 x items^2 bytes (the float64 Gram matrix and its inverse, 8 bytes
    each per entry, and the float32 B). A catalog needing more is refused with the figure."""

    def __post_init__(self) -> None:
        _check(self.l2 > 0, f"ease.l2 must be > 0, got {self.l2}")
        _check(self.memory_gb > 0, f"ease.memory_gb must be > 0, got {self.memory_gb}")


@dataclass(kw_only=True, slots=True)
class MultiVaeConfig:
    """Multi-VAE (Liang et al. 2018): ``[N -> hidden -> latent]`` encoder, ``[latent -> hidden -> N]`` decoder,
    multinomial likelihood, KL weight ``beta = min(anneal_cap, step / total_anneal_steps)``."""

    hidden_dim: int = 600
    """Width of the encoder's and decoder's hidden layer (the item table's embedding width)."""
    latent_dim: int = 200
    """Width of the latent code z."""
    input_dropout: float = 0.5
    """Share of each training user's items dropped from the input (the paper's 0.5)."""
    anneal_cap: float = 0.2
    """Largest KL weight beta (the paper's 0.2; that team's Recall@10 moved from 0.112 to 0.131 tuning it)."""
    total_anneal_steps: int = 200000
    """Steps over which beta grows linearly from 0 to 1 (cut at anneal_cap); 0: beta = anneal_cap from the start."""
    dropout_seed: int = 0
    """Seed of the input dropout (a hash of seed, step and user, so it does not depend on the rank layout)."""

    def __post_init__(self) -> None:
        _check(self.hidden_dim >= 1 and self.latent_dim >= 1, "multivae.hidden_dim and latent_dim must be >= 1")
        _check(0 <= self.input_dropout < 1, f"multivae.input_dropout must be in [0, 1), got {self.input_dropout}")
        _check(0 <= self.anneal_cap <= 1 and self.total_anneal_steps >= 0, "multivae.anneal_cap must be in [0, 1] and total_anneal_steps >= 0")


@dataclass(kw_only=True, slots=True)
class FusionConfig:
    """``torchrec-app rerank`` / ``ensemble``: how several runs' top-K lists are combined."""

    candidates: int = 100
    """Items taken from the top of each run's list (the runs must have saved at least this many: ranking.save_top_k)."""
    rrf_k: float = 60.0
    """Reciprocal-rank fusion: an item at rank r in a list adds weight / (rrf_k + r)."""
    weight_grid: int = 10
    """Fusion weights are fitted on validation over a grid of the simplex with steps of 1 / weight_grid."""
    fit_metric: str = "ndcg@10"
    """Validation metric the fusion weights and the re-ranker's best iteration maximise."""
    num_leaves: int = 31
    """LightGBM: leaves per tree."""
    learning_rate: float = 0.05
    """LightGBM: shrinkage."""
    num_rounds: int = 300
    """LightGBM: boosting rounds (the best on a held-out part of the validation users is kept)."""
    early_stopping_rounds: int = 30
    """LightGBM: stop when the held-out part's NDCG has not improved for this many rounds."""
    holdout_users: float = 0.2
    """Share of the validation users the re-ranker does not train on, to pick its number of rounds."""
    seed: int = 0
    """Seed of the re-ranker (and of the held-out validation users)."""

    def __post_init__(self) -> None:
        _check(self.candidates >= 1 and self.rrf_k >= 0 and self.weight_grid >= 1, "fusion.candidates, weight_grid >= 1 and rrf_k >= 0")
        _check(self.num_leaves >= 2 and self.learning_rate > 0 and self.num_rounds >= 1, "fusion.num_leaves >= 2, learning_rate > 0, num_rounds >= 1")
        _check(0 < self.holdout_users < 1, f"fusion.holdout_users must be in (0, 1), got {self.holdout_users}")
