"""Validation: when to evaluate, whether to stop early, which state was best, the final metrics.

The :class:`Validator` owns everything about evaluation during training:

* **Cadence**: every ``train.eval_every`` steps; or, when that is 0, ``train.evals_per_epoch``
  times per epoch at evenly spaced steps; or, when both are 0, at the end of each epoch.
* **Metrics**: a fresh evaluator from the task (:meth:`Task.make_evaluator`) over every real
  row of the split, on every rank; the monitored metric is ``task.monitor``.
* **Early stopping** (``train.early_stop_patience`` > 0): stop after that many validations
  in a row without improving the monitored metric. CTR models on Criteo-like data overfit
  after about one epoch (rare ids are memorised), and when depends on the data; stopping on
  validation lets one recipe serve different datasets.
* **Best state** (``train.restore_best``): the model at the best validation is saved (under
  ``<run>/best``, through the same atomic checkpoint code) and restored before the final
  evaluation, whose validation metrics are then the recorded ones — the split is not scored
  twice.

Its state (best value and step, validations since, history) is part of the trainer's
checkpoint, so a resumed run keeps its patience count.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from torchrec_app.config.schema import TrainConfig
from torchrec_app.models.task import Task
from torchrec_app.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


def validation_steps_in_epoch(steps_per_epoch: int, evals_per_epoch: int) -> list[int]:
    """The steps of an epoch (1-based, within the epoch) after which ``evals_per_epoch`` validations run.

    >>> validation_steps_in_epoch(15, 2), validation_steps_in_epoch(10, 4), validation_steps_in_epoch(3, 5)
    ([8, 15], [2, 5, 8, 10], [1, 2, 3])
    """
    n = max(1, min(evals_per_epoch, steps_per_epoch))
    return sorted({max(1, round(steps_per_epoch * (j + 1) / n)) for j in range(n)})


class Validator:
    """Evaluation cadence, early stopping and the best state (see the module docstring).

    Args:
        task: the model family (its evaluator and monitored metric).
        config: the ``train`` section (cadence, patience, best-state switch).
        make_evaluator: a fresh evaluator per evaluation.
        eval_batches: ``split -> batches`` of that split on this rank (every rank the same count).
        steps_per_epoch: training steps of one epoch.
        best_root: where the best state is kept.
        log: prints on the main rank.
        verify_checksums: verify the best state's checksums before restoring it (``checkpoint.verify_checksums``).
        details_dir: where an evaluator with ``save_details(path)`` writes ``valid.parquet`` (the
            validation of the weights training ends with: the best one when the best state is kept,
            else the latest) and ``<split>.parquet`` of the final evaluations; None: nowhere.
    """

    def __init__(self, task: Task, config: TrainConfig, make_evaluator: Callable[[], Any],
                 eval_batches: Callable[[str], Iterable[Any]], steps_per_epoch: int, best_root: Path,
                 log: Callable[[str], None], verify_checksums: bool = True, details_dir: Path | None = None) -> None:  # fmt: skip
        self.task, self.config = task, config
        self.make_evaluator, self.eval_batches = make_evaluator, eval_batches
        self.steps_per_epoch, self.best_root, self.log = steps_per_epoch, Path(best_root), log
        self.verify_checksums = verify_checksums
        self.details_dir = Path(details_dir) if details_dir is not None else None
        self._last_evaluator: Any = None
        self.epoch_steps = validation_steps_in_epoch(steps_per_epoch, config.evals_per_epoch or 1)
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.since_best = 0
        self.history: list[dict[str, Any]] = []

    # -- cadence ---------------------------------------------------------------------------

    def is_due(self, step: int) -> bool:
        """Whether a validation runs after step ``step``."""
        if step <= 0:
            return False
        if self.config.eval_every:
            return step % self.config.eval_every == 0
        within = step % self.steps_per_epoch or self.steps_per_epoch
        return within in self.epoch_steps

    def next_due(self, step: int) -> int:
        """The first step after ``step`` at which a validation runs."""
        if self.config.eval_every:
            return (step // self.config.eval_every + 1) * self.config.eval_every
        epoch_start = step - step % self.steps_per_epoch
        for within in self.epoch_steps:
            if epoch_start + within > step:
                return epoch_start + within
        return epoch_start + self.steps_per_epoch + self.epoch_steps[0]

    @property
    def should_stop(self) -> bool:
        """True once ``patience`` validations in a row brought no improvement (never with patience 0)."""
        patience = self.config.early_stop_patience
        return patience > 0 and self.since_best >= patience

    # -- evaluating ------------------------------------------------------------------------

    def evaluate(self, model: nn.Module, split: str, details: bool = False) -> dict[str, float]:
        """The task's metrics of ``model`` over every real row of ``split`` (collective); with
        ``details``, also the evaluator's per-row results (:meth:`save_details`)."""
        evaluator = self.make_evaluator()
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for batch in self.eval_batches(split):
                evaluator.update(model, batch)
        model.train(was_training)
        metrics = evaluator.compute()
        if details:
            self.save_details(evaluator, split)
        self._last_evaluator = evaluator
        return metrics

    def save_details(self, evaluator: Any, split: str) -> None:
        """``<details_dir>/<split>.parquet`` from an evaluator that keeps per-row results (collective)."""
        if self.details_dir is not None and hasattr(evaluator, "save_details"):
            evaluator.save_details(self.details_dir / f"{split}.parquet")

    def validate(self, model: nn.Module, step: int, epoch: int, extra: dict[str, Any]) -> dict[str, Any]:
        """Evaluate the valid split now, record it, and keep the state if it is the best so far."""
        metrics = self.evaluate(model, "valid")
        record = {"step": step, "epoch": epoch, **{f"valid_{k}": v for k, v in metrics.items()}, **extra}
        self.history.append(record)
        value = metrics.get(self.task.monitor, math.nan)
        improved = self.task.improved(value, self.best_value, 0.0)
        if improved:
            self.best_value, self.best_step, self.since_best = value, step, 0
            if self._keeps_best:
                save_checkpoint(self.best_root, step, {"model": model.state_dict()}, keep=1)
        else:
            self.since_best += 1
        if improved or not self._keeps_best:  # the valid details of the weights training will end with
            self.save_details(self._last_evaluator, "valid")
        shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if "/" not in k and k != "rows" and isinstance(v, float))
        self.log(f"[step {step}, epoch {epoch}] valid: {shown} ({int(metrics.get('rows', 0))} rows)"
                 + (" (best)" if self.best_step == step else f" (best: step {self.best_step})"))  # fmt: skip
        return record

    @property
    def _keeps_best(self) -> bool:
        return self.config.early_stop_patience > 0 and self.config.restore_best

    def restore_best(self, model: nn.Module, step: int) -> bool:
        """Load the best validation's weights into ``model`` if they differ from the current ones."""
        if not self._keeps_best or self.best_step in (None, step):
            return False
        best = latest_checkpoint(self.best_root)
        state, _ = load_checkpoint(best, {"model": model.state_dict()}, self.verify_checksums)
        model.load_state_dict(state["model"])
        self.log(f"restored the best validation state (step {self.best_step}, {self.task.monitor} {self.best_value:.4f})")
        return True

    def final_metrics(self, model: nn.Module, step: int, splits: list[str]) -> dict[str, dict[str, float]]:
        """Metrics of the model training ends with, per split: the recorded validation of the
        step whose weights these are when there is one, else a fresh evaluation."""
        restored = self.restore_best(model, step)
        weights_step = self.best_step if restored else step
        recorded = next((r for r in reversed(self.history) if r["step"] == weights_step), None)
        results = {}
        for split in splits:
            if split == "valid" and recorded is not None:
                results[split] = {k.removeprefix("valid_"): v for k, v in recorded.items() if k.startswith("valid_")}
            else:
                results[split] = self.evaluate(model, split, details=True)
        return results

    # -- checkpointed state ----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"best_value": self.best_value if self.best_value is not None else math.nan,
                "best_step": -1 if self.best_step is None else self.best_step,
                "since_best": self.since_best, "history": json.dumps(self.history)}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        value, step = float(state["best_value"]), int(state["best_step"])
        self.best_value = None if math.isnan(value) else value
        self.best_step = None if step < 0 else step
        self.since_best = int(state["since_best"])
        self.history = json.loads(state["history"])
