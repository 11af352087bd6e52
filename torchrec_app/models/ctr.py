"""The trainable unit: a registered architecture plus the weighted click loss.

``TrainPipelineSparseDist`` calls ``model(batch)`` and expects ``(loss, output)``; the
loss is backpropagated and ``output`` returned to the loop. Padding rows (weight 0, see
:mod:`torchrec_app.data.batch`) contribute nothing.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import nn

from torchrec_app.config.schema import AppConfig
from torchrec_app.data.batch import Batch
from torchrec_app.models.registry import build_ctr_model
from torchrec_app.models.sparse import SparseArch, build_tables
from torchrec.modules.embedding_modules import EmbeddingBagCollection


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


class CTRModel(nn.Module):
    """Wraps an architecture ``model(dense, kjt) -> logits`` with the loss."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> tuple[torch.Tensor, StepOutput]:
        logits = self.model(batch.dense_features, batch.sparse_features)
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
    sparse_arch = SparseArch(EmbeddingBagCollection(tables=tables, device=torch.device(device)))
    return CTRModel(build_ctr_model(config.model, sparse_arch, num_dense))
