"""The CTR task: a registered architecture plus the weighted click loss, scored by AUC / logloss.

``TrainPipelineSparseDist`` calls ``model(batch)`` and expects ``(loss, output)``; the
loss is backpropagated and ``output`` (a :class:`~torchrec_app.models.task.ModelOutput`
with one head, ``label``) returned to the loop. Padding rows (weight 0, see
:mod:`torchrec_app.data.batch`) contribute nothing. :data:`CTR_TASK` registers every
tower of :mod:`torchrec_app.models.registry` with the loop (see :mod:`torchrec_app.models.task`).

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
from torchrec_app.data.metadata import DatasetMetadata
from torchrec_app.data.reader import table_sizes
from torchrec_app.metrics.binary import BinaryEvaluator
from torchrec_app.models.registry import build_ctr_model
from torchrec_app.models.sparse import SparseArch, build_feature_transform, build_tables
from torchrec_app.models.task import ModelOutput, Task

#: The one head of a CTR model (the Criteo ``label`` column).
HEAD = "label"


class TowerOutput(NamedTuple):
    """What an architecture with ``has_aux_logits = True`` returns."""

    logits: torch.Tensor
    """``B``: the prediction (what metrics and serving read)."""
    aux_logits: dict[str, torch.Tensor]
    """Branch name -> logits ``B``, each trained by its own weighted BCE term."""


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
    (:func:`with_aux_losses`); ``ModelOutput.predictions["label"]`` is always the final prediction.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.has_aux_logits = bool(getattr(model, "has_aux_logits", False))

    def forward(self, batch: Batch) -> tuple[torch.Tensor, ModelOutput]:
        output = self.model(batch.dense_features, batch.sparse_features)
        if self.has_aux_logits:  # fixed at construction: static under torch.fx
            logits = output.logits
            loss = weighted_bce(logits, batch.labels, batch.weights)
            loss = with_aux_losses(loss, output.aux_logits, batch.labels, batch.weights)
        else:
            logits = output
            loss = weighted_bce(logits, batch.labels, batch.weights)
        output = ModelOutput(loss=loss.detach(), weights=batch.weights, predictions={HEAD: logits.detach()},
                             labels={HEAD: batch.labels})  # fmt: skip
        return loss, output


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


def build_ctr_task_model(config: AppConfig, metadata: DatasetMetadata, device: torch.device | str = "meta") -> CTRModel:
    """The CTR model of a Criteo-kind dataset: its features, its tables capped as the reader caps ids."""
    return build_model(config, metadata.dense_features, metadata.sparse_features, table_sizes(metadata, config.data), device)


def make_ctr_evaluator(config: AppConfig, metadata: DatasetMetadata) -> BinaryEvaluator:
    """Exact AUC / logloss / calibration of the click head over a whole split."""
    return BinaryEvaluator()


#: Every tower in the model registry trains and is scored as a click model.
CTR_TASK = Task(name="ctr", data_kind="criteo", build_model=build_ctr_task_model, make_evaluator=make_ctr_evaluator,
                monitor="logloss", higher_is_better=False)  # fmt: skip
