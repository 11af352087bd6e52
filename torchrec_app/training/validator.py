"""Validation: when to evaluate, whether to stop early, which state was best, the final metrics.

The :class:`Validator` owns everything about evaluation during training:

* **Cadence**: every ``train.eval_every`` steps; or, when that is 0, ``train.evals_per_epoch``
  times per epoch at evenly spaced steps; or, when both are 0, at the end of each epoch.
  With ``train.eval_adaptive`` that is only the starting interval: once the curve flattens
  the interval halves, down to ``train.eval_min_every`` (:class:`AdaptiveCadence`), so the
  validations crowd around the best step — which is then located more finely — and the
  ``early_stop_patience`` validations after it take fewer steps: the run stops sooner.
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


class AdaptiveCadence:
    """Validation steps that get denser as the monitored curve flattens (``train.eval_adaptive``).

    The first validation comes after ``interval`` steps. After each one, the interval halves
    (never below ``min_interval``) when that validation did not improve on the best, or when
    its gain per step since the previous validation fell below half the previous gain per
    step (the curve flattening; per step, so that halving the interval alone does not trigger
    another halving). It never grows back. The cadence is a function of the validations
    seen, so a resumed run rebuilds it by replaying its history (:meth:`observe`).

    >>> c, due = AdaptiveCadence(interval=40, min_interval=10), []
    >>> for step, gain in ((40, None), (80, 0.08), (120, 0.05), (160, 0.01), (180, 0.0), (190, 0.0)):
    ...     c.observe(step, gain)
    ...     due.append(c.next_due(step))
    >>> due  # gains 0.08 then 0.05 per 40 steps: still steep; 0.01: flattening; then no gain
    [80, 120, 160, 180, 190, 200]
    """

    def __init__(self, interval: int, min_interval: int) -> None:
        self.interval, self.min_interval = max(1, interval), max(1, min(min_interval, interval))
        self.last_step = 0
        self._last_rate: float | None = None

    def observe(self, step: int, gain: float | None) -> None:
        """Record the validation at ``step``; ``gain``: its improvement on the best before it
        (> 0: improved; <= 0: not; None: the first validation, nothing to compare)."""
        if gain is not None:
            rate = gain / max(1, step - self.last_step)
            if gain <= 0 or (self._last_rate is not None and rate < 0.5 * self._last_rate):
                self.interval = max(self.min_interval, self.interval // 2)
            if gain > 0:
                self._last_rate = rate
        self.last_step = step

    def is_due(self, step: int) -> bool:
        return step > 0 and step == self.next_due(step - 1)

    def next_due(self, step: int) -> int:
        """The first step after ``step`` at which a validation runs."""
        return max(self.last_step + self.interval, step + 1)


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
        self.adaptive = self._new_adaptive_cadence() if config.eval_adaptive else None

    def _new_adaptive_cadence(self) -> AdaptiveCadence:
        """Starting at the fixed cadence's interval (its first gap), down to ``eval_min_every`` (0: a quarter of it)."""
        start = self.config.eval_every or self.epoch_steps[0]
        return AdaptiveCadence(start, self.config.eval_min_every or max(1, start // 4))

    # -- cadence ---------------------------------------------------------------------------

    def is_due(self, step: int) -> bool:
        """Whether a validation runs after step ``step``."""
        if step <= 0:
            return False
        if self.adaptive is not None:
            return self.adaptive.is_due(step)
        if self.config.eval_every:
            return step % self.config.eval_every == 0
        within = step % self.steps_per_epoch or self.steps_per_epoch
        return within in self.epoch_steps

    def next_due(self, step: int) -> int:
        """The first step after ``step`` at which a validation runs."""
        if self.adaptive is not None:
            return self.adaptive.next_due(step)
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
        if self.adaptive is not None:
            self.adaptive.observe(step, self._gain(value, self.best_value))
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

    def _gain(self, value: float, best: float | None) -> float | None:
        """How much ``value`` improves on ``best`` in the monitored direction (None: no best yet; NaN: no gain)."""
        if best is None:
            return None
        if value != value:
            return 0.0
        return value - best if self.task.higher_is_better else best - value

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
        if self.config.eval_adaptive:  # the cadence is a function of the validations seen: replay them
            self.adaptive, best = self._new_adaptive_cadence(), None
            for record in self.history:
                value = record.get(f"valid_{self.task.monitor}", math.nan)
                self.adaptive.observe(int(record["step"]), self._gain(value, best))
                if self.task.improved(value, best, 0.0):
                    best = value
