"""The trainable unit: a registered architecture plus the weighted click loss.

``TrainPipelineSparseDist`` calls ``model(batch)`` and expects ``(loss, output)``; the
loss is backpropagated and ``output`` returned to the loop. Padding rows (weight 0, see
:mod:`torchrec_app.data.batch`) contribute nothing.

An architecture returns logits ``B``, or, if it sets the class attribute
``has_aux_logits = True``, a :class:`TowerOutput` whose ``aux_logits`` are extra
per-branch logits (DCNv3's ECN and LCN). Each branch ``k`` then adds its own loss with a
self-adjusting weight (DCNv3's Tri-BCE, Li et al. 2024, eq. 9-10)::

    L = BCE(y_hat) + sum_k w_k * BCE(y_hat_k),   w_k = max(0, BCE(y_hat_k) - BCE(y_hat))

``w_k`` is a weight, not a path for gradients: it is detached, so a branch that is
already better than the ensemble stops getting extra push (see ``docs/MODELS.md``).
The choice is made once, at construction, so ``forward`` stays torch.fx-traceable.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import nn
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from torchrec_app.config.schema import AppConfig
from torchrec_app.data.batch import Batch
from torchrec_app.models.registry import build_ctr_model
from torchrec_app.models.sparse import SparseArch, build_feature_transform, build_tables


class TowerOutput(NamedTuple):
    """What an architecture with ``has_aux_logits = True`` returns."""

    logits: torch.Tensor
    """``B``: the prediction (what metrics and serving read)."""
    aux_logits: dict[str, torch.Tensor]
    """Branch name -> logits ``B``, each trained by its own weighted BCE term."""


class StepOutput(NamedTuple):
    """What one forward returns besides the loss (all detached)."""

    loss: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor


def weighted_bce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the rows with weight > 0 (0 when there are none)."""
    losses = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return (losses * weights).sum() / weights.sum().clamp(min=1.0)


def with_aux_losses(
    loss: torch.Tensor, aux_logits: dict[str, torch.Tensor], labels: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """``loss + sum_k w_k BCE_k`` with ``w_k = max(0, BCE_k - loss)``, detached (Tri-BCE).

    >>> labels, weights = torch.tensor([1.0, 0.0]), torch.ones(2)
    >>> main = weighted_bce(torch.tensor([2.0, -2.0]), labels, weights)
    >>> worse = torch.tensor([0.0, 0.0])  # BCE = log 2 > main: weighted in
    >>> better = torch.tensor([5.0, -5.0])  # BCE < main: weight 0
    >>> total = with_aux_losses(main, {"worse": worse, "better": better}, labels, weights)
    >>> bool(torch.isclose(total, main + (0.6931 - main) * 0.6931, atol=1e-4))
    True
    """
    total = loss
    for logits in aux_logits.values():
        branch = weighted_bce(logits, labels, weights)
        total = total + (branch - loss).clamp(min=0).detach() * branch
    return total


class CTRModel(nn.Module):
    """Wraps an architecture ``model(dense, kjt) -> logits`` with the loss.

    If the architecture declares ``has_aux_logits = True`` it returns a
    :class:`TowerOutput`, and each auxiliary logit adds its Tri-BCE term
    (:func:`with_aux_losses`); ``StepOutput.logits`` is always the final prediction.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.has_aux_logits = bool(getattr(model, "has_aux_logits", False))

    def forward(self, batch: Batch) -> tuple[torch.Tensor, StepOutput]:
        output = self.model(batch.dense_features, batch.sparse_features)
        if self.has_aux_logits:  # fixed at construction: static under torch.fx
            logits = output.logits
            loss = weighted_bce(logits, batch.labels, batch.weights)
            loss = with_aux_losses(loss, output.aux_logits, batch.labels, batch.weights)
        else:
            logits = output
            loss = weighted_bce(logits, batch.labels, batch.weights)
        return loss, StepOutput(loss.detach(), logits.detach(), batch.labels, batch.weights)


def build_model(
    config: AppConfig,
    dense_features: Sequence[str] | int,
    sparse_features: Sequence[str],
    num_embeddings: dict[str, int],
    device: torch.device | str = "meta",
) -> CTRModel:
    """Build the full model; tables on ``device`` (``meta`` to shard them afterwards)."""
    num_dense = dense_features if isinstance(dense_features, int) else len(dense_features)
    tables = build_tables(config.sparse, sparse_features, num_embeddings)
    transform = build_feature_transform(config.sparse, sparse_features, num_embeddings)
    sparse_arch = SparseArch(EmbeddingBagCollection(tables=tables, device=torch.device(device)), transform)
    return CTRModel(build_ctr_model(config.model, sparse_arch, num_dense))
