"""Multi-task binary metrics: per-objective AUC / logloss / calibration and their aggregates.

:class:`~torchrec_app.metrics.binary.BinaryEvaluator` already scores every head of
``ModelOutput.predictions`` exactly over all ranks (``<head>/auc``, ``<head>/logloss``,
``<head>/calibration`` = mean predicted / observed rate, ``<head>/rows``). A multi-task model
may also carry auxiliary heads that are not objectives (the feed model's ``any`` head), and
its predictions may need a transformation before they are scored (undoing negative
downsampling). :class:`MultiTaskEvaluator` adds both:

* ``transform`` (optional) maps a batch's ``{head: logits}`` to the logits to score (e.g. the
  calibration correction for negative downsampling); applied per batch, before gathering;
* the aggregates are over the named objectives only: ``auc`` and ``logloss`` are their means
  (``auc`` is what the feed task monitors), ``min_auc`` the worst objective's AUC; the AUC
  aggregates skip an objective whose split has no positives (its AUC is NaN).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from torchrec_app.metrics.binary import BinaryEvaluator

LogitsTransform = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


class MultiTaskEvaluator:
    """Per-objective exact metrics over a whole split (all ranks), aggregated over ``objectives``.

    >>> evaluator = MultiTaskEvaluator(["a", "b"])
    >>> evaluator.add({"a": torch.tensor([2.0, -2.0]), "b": torch.tensor([1.0, -1.0]), "any": torch.zeros(2)},
    ...               {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([0.0, 1.0]), "any": torch.tensor([1.0, 1.0])}, torch.ones(2))
    >>> m = evaluator.compute()
    >>> m["a/auc"], m["b/auc"], m["auc"], m["min_auc"], "any/auc" in m
    (1.0, 0.0, 0.5, 0.0, True)
    """

    def __init__(self, objectives: list[str], transform: LogitsTransform | None = None) -> None:
        self.objectives = list(objectives)
        self.transform = transform
        self._binary = BinaryEvaluator()

    def update(self, model: torch.nn.Module, batch) -> None:
        _, output = model(batch)
        self.add(output.predictions, output.labels, output.weights)

    def add(self, predictions: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], weights: torch.Tensor) -> None:
        """Keep the real rows (weight > 0) of every head, after ``transform``."""
        if self.transform is not None:
            predictions = self.transform(predictions)
        self._binary.add(predictions, labels, weights)

    def compute(self) -> dict[str, float]:
        """Every head's metrics, then ``auc`` / ``logloss`` (means over the objectives) and ``min_auc``
        (collective: every rank calls it and gets the same)."""
        metrics = self._binary.compute()
        aucs = np.array([metrics[f"{o}/auc"] for o in self.objectives])
        scored = aucs[~np.isnan(aucs)]  # an objective without positives in the split has no AUC
        metrics["auc"] = float(scored.mean()) if scored.size else float("nan")
        metrics["min_auc"] = float(scored.min()) if scored.size else float("nan")
        metrics["logloss"] = float(np.mean([metrics[f"{o}/logloss"] for o in self.objectives]))
        metrics["rows"] = metrics[f"{self.objectives[0]}/rows"]
        return metrics
