"""Per-objective losses of the feed model and the hook that combines them (``model.feed.weighting``).

Each objective ``k`` has its own weighted binary cross-entropy over the batch's real rows::

    L_k = sum_i w_i BCE(logit_ik, y_ik) / sum_i w_i,   w_i = weights_i * importance_i

(``importance`` is the sampling levers' per-row multiplier, 1 unless a core-set selector
reweights; padding has 0). The trained loss is ``weighting(losses, shared=z)``: a module
built by name from :data:`WEIGHTINGS`, so objective-weighting schemes (static weights here;
uncertainty weighting, DWA, GradNorm in ``models/feed/weighting.py``) plug in without touching
the model. A weighting is an ``nn.Module`` inside the model: its parameters (e.g. learned
log-variances) are trained by the dense optimizer and saved in checkpoints, its buffers (e.g.
DWA's loss history) too. ``shared`` is the shared representation ``B x N`` the objectives'
heads read, for gradient-based schemes (GradNorm's gradient norms); others ignore it.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from torchrec_app.config.errors import ConfigError
from torchrec_app.config.feed import FeedModelConfig


def objective_losses(logits: torch.Tensor, labels: torch.Tensor, row_weights: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """``{name_k: L_k}`` from ``B x K`` logits and labels and ``B`` row weights (see the module docstring).

    >>> losses = objective_losses(torch.zeros(2, 2), torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([1.0, 0.0]), ["a", "b"])
    >>> {k: round(v.item(), 4) for k, v in losses.items()}
    {'a': 0.6931, 'b': 0.6931}
    """
    per_row = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")  # B x K
    means = (per_row * row_weights[:, None]).sum(dim=0) / row_weights.sum().clamp(min=1e-12)
    return {name: means[k] for k, name in enumerate(names)}


class StaticWeighting(nn.Module):
    """``sum_k lambda_k L_k`` with fixed ``lambda_k`` (``model.feed.loss_weights``, default 1).

    >>> weighting = StaticWeighting({"a": 2.0}, ["a", "b"])
    >>> weighting({"a": torch.tensor(1.0), "b": torch.tensor(3.0)}).item()
    5.0
    """

    def __init__(self, loss_weights: dict[str, float], names: list[str]) -> None:
        super().__init__()
        self.loss_weights = {name: float(loss_weights.get(name, 1.0)) for name in names}

    def forward(self, losses: dict[str, torch.Tensor], shared: torch.Tensor | None = None) -> torch.Tensor:
        return sum(self.loss_weights[name] * loss for name, loss in losses.items())


#: ``model.feed.weighting`` -> ``(config, loss names) -> nn.Module`` whose ``forward(losses, shared=None)`` is the trained loss
WEIGHTINGS: dict[str, Callable[[FeedModelConfig, list[str]], nn.Module]] = {
    "static": lambda config, names: StaticWeighting(config.loss_weights, names),
}


def register_weighting(name: str, factory: Callable[[FeedModelConfig, list[str]], nn.Module]) -> None:
    """Make ``model.feed.weighting=<name>`` build ``factory(config, loss names)``."""
    WEIGHTINGS[name] = factory


def build_weighting(config: FeedModelConfig, names: list[str]) -> nn.Module:
    """The weighting named by ``config.weighting`` over the losses ``names`` (objectives, then ``any`` if present)."""
    if config.weighting not in WEIGHTINGS:
        raise ConfigError(f"model.feed.weighting={config.weighting!r} is not one of {', '.join(sorted(WEIGHTINGS))}")
    unknown = sorted(set(config.loss_weights) - set(names))
    if unknown:
        raise ConfigError(f"model.feed.loss_weights names {unknown}, which this model does not train; it trains {names}")
    return WEIGHTINGS[config.weighting](config, names)
