"""The contract between a model family and the one training loop.

A **task** says what a family of models trains on and how it is scored. The trainer,
validator, checkpointer and bench know nothing else about a model, so a new family
(multi-task ranking, next-item recommendation, ...) plugs in by registering a
:class:`Task`, never by changing the loop.

* ``task.build_model(config, metadata, device)`` returns the *trainable unit*: an
  ``nn.Module`` whose embedding tables are TorchRec collections (``EmbeddingBagCollection``
  or ``EmbeddingCollection``, built on ``meta`` to be sharded) and whose
  ``forward(batch)`` returns ``(loss, ModelOutput)`` — what ``TrainPipelineSparseDist``
  expects. The loss is the mean over the rows with weight > 0 of this rank's batch.
* ``task.make_evaluator(config, metadata)`` returns a fresh :class:`Evaluator` for one
  pass over an evaluation split; the validator feeds it every batch and asks for the
  metrics, which are the same on every rank.
* ``task.monitor`` names the validation metric that early stopping and "best state"
  follow, and whether higher is better.
* ``task.data_kind`` names the dataset layout the family reads (``metadata.json``'s
  ``kind``), which picks the batch reader.
* Optional: ``task.batch_maker(config, metadata, data_dir)`` returns ``(columns,
  make_batch)`` when a family's batches depend on its model settings (next-item models:
  sequence length, the loss's candidate keys, side information); by default the reader
  uses the dataset kind's registered batch maker. ``task.initialize(model, config,
  metadata)`` fills the sharded model's weights before training (e.g. from a pretrained
  model); resuming a checkpoint overrides it. ``task.planning_metadata(config)`` describes a
  dataset from the recipe alone, for ``torchrec-app plan`` without ``--data``.
* Optional: ``task.fit(config, metadata, data_dir)`` for closed-form models (EASE): the
  model is solved, not trained, and scored by the same evaluator into the same run directory.
* Optional: an evaluator with ``save_details(path)`` writes per-row / per-user results;
  the validator calls it for the best validation and the final test evaluation
  (``<run>/details/<split>.parquet``).

The CTR task (DLRM, DCNv2, DCNv3, MaskNet, DNN over Criteo-format data) is the first
registration: :mod:`torchrec_app.models.ctr`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Protocol

import torch
from torch import nn

from torchrec_app.config.errors import ConfigError


class ModelOutput(NamedTuple):
    """What a trainable unit's forward returns besides the loss (all detached).

    ``predictions`` and ``labels`` map a head (objective) name to ``B`` logits and ``B``
    labels, for heads scored row by row (CTR: one head; multi-task: one per objective).
    Families scored otherwise (e.g. next-item ranking) may leave both empty.
    """

    loss: torch.Tensor
    """Scalar: the loss that was backpropagated (for logging)."""
    weights: torch.Tensor
    """``B``: 1 for a real row, 0 for padding (the trainer counts samples with it)."""
    predictions: dict[str, torch.Tensor] = {}
    labels: dict[str, torch.Tensor] = {}
    losses: dict[str, torch.Tensor] = {}
    """Per-objective scalar losses (empty for single-loss models); the trainer logs their interval means as ``loss/<name>``."""


class Evaluator(Protocol):
    """One pass over an evaluation split: ``update`` per batch, then ``compute`` once."""

    def update(self, model: nn.Module, batch: Any) -> None:
        """Score ``batch`` with ``model`` (in eval mode, under ``no_grad``) and keep what the metrics need."""

    def compute(self) -> dict[str, float]:
        """The split's metrics over every rank's rows (a collective: every rank calls it and gets the same)."""

    # optional: def save_details(self, path) -> None  (per-row results of the pass; called on every rank)


@dataclass(frozen=True)
class Task:
    """A model family: how to build its trainable unit, how to score it, what to monitor."""

    name: str
    data_kind: str
    """Dataset layout it reads (``metadata.json`` ``kind``): ``criteo``, ``feed``, ``sequences``."""
    build_model: Callable[..., nn.Module]
    """``(config: AppConfig, metadata: DatasetMetadata, device) -> nn.Module`` (see module docstring)."""
    make_evaluator: Callable[..., Evaluator]
    """``(config: AppConfig, metadata: DatasetMetadata) -> Evaluator``."""
    monitor: str = "logloss"
    """Validation metric that early stopping and the best state follow (a key of ``compute()``)."""
    higher_is_better: bool = False
    describe: Callable[..., dict[str, Any]] | None = None
    """``(config, metadata) -> dict``: facts about the model for ``summary.json`` (e.g. table parameters)."""
    batch_maker: Callable[..., tuple[list[str], Callable[..., Any]]] | None = None
    """Optional ``(config, metadata, data_dir) -> (columns, make_batch)``; None: the dataset kind's reader."""
    initialize: Callable[..., None] | None = None
    """Optional ``(sharded model, config, metadata) -> None``, run once after sharding, before any resume."""
    fit: Callable[..., nn.Module] | None = None
    """Optional, closed-form models (EASE): ``(config, metadata, data_dir) -> model`` with ``score(batch)``,
    solved on one process instead of trained; ``train`` then scores it with ``make_evaluator`` and writes
    the same run directory (:mod:`torchrec_app.training.closed_form`). The loop is not used."""
    planning_metadata: Callable[..., Any] | None = None
    """Optional ``(config) -> DatasetMetadata``: the family's dataset description from the recipe alone
    (``torchrec-app plan`` without ``--data``); None: a Criteo-kind one from ``sparse.num_embeddings``."""

    def improved(self, value: float, best: float | None, min_delta: float = 0.0) -> bool:
        """Whether ``value`` of the monitored metric beats ``best`` by more than ``min_delta``.

        >>> Task("t", "criteo", None, None).improved(0.40, 0.45), Task("t", "criteo", None, None, "auc", True).improved(0.70, 0.71)
        (True, False)
        """
        if best is None:
            return value == value  # not NaN
        return value > best + min_delta if self.higher_is_better else value < best - min_delta


#: model name -> its task (every registered model names the family it belongs to)
TASKS: dict[str, Task] = {}


def register_task(task: Task, *model_names: str) -> Task:
    """Make ``model.name=<name>`` build and score with ``task`` for each of ``model_names``."""
    for name in model_names:
        TASKS[name] = task
    return task


def task_for(model_name: str) -> Task:
    """The task of a registered model name (importing this module imported ``torchrec_app.models``,
    whose ``__init__`` registers every built-in family)."""
    if model_name not in TASKS:
        raise ConfigError(f"model.name={model_name!r} is not a registered model; known: {', '.join(sorted(TASKS))}")
    return TASKS[model_name]
