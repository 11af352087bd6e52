"""The benchmark's hooks into the training loop (``bench.*`` config, attached by ``torchrec-app train``).

* :class:`InMemoryBatches` (``bench.in_memory``): each segment's batches are read into a
  list before its timed steps, so the same model and plan step without reading — the
  throughput ceiling a pipelined reader can at best reach.
* :class:`ProfileSteps` (``bench.profile_steps``): the step-time split of a few steps
  (:mod:`~torchrec_app.tools.bench.step_profile`), every rank's in ``step_profile.json``.
* :class:`StopAtAUC` (``bench.stop_at_auc``, or per objective ``bench.target_aucs`` within
  ``bench.target_tolerance``): stop once a validation reaches the target(s); the summary gets
  the first validation that did (time and samples to target;
  :mod:`~torchrec_app.tools.bench.time_to_target`); ``time_to_auc_s`` (wall-clock seconds from the first training step to the end of
  that validation, the validations before it included), ``samples_to_auc`` and ``steps_to_auc``.
"""

from __future__ import annotations

import time
from typing import Any, Iterator, Mapping

import torch.distributed as dist

from torchrec_app.config.schema import BenchConfig
from torchrec_app.tools.bench.step_profile import StepProfiler
from torchrec_app.tools.bench.time_to_target import shortfalls, targets_met
from torchrec_app.training.callbacks import Callback


class InMemoryBatches(Callback):
    def wrap_batches(self, batches: Iterator[Any]) -> Iterator[Any]:
        return iter(list(batches))

    def on_train_end(self, trainer, summary: dict[str, Any]) -> None:
        summary["in_memory"] = True


class ProfileSteps(Callback):
    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.profiler = StepProfiler(steps)

    def on_train_start(self, trainer) -> None:
        self.profiler.start()

    def wrap_batches(self, batches: Iterator[Any]) -> Iterator[Any]:
        return self.profiler.wrap(batches)

    def on_step(self, trainer, output) -> None:
        self.profiler.step()

    def on_train_end(self, trainer, summary: dict[str, Any]) -> None:
        self.profiler.stop()
        per_rank = [self.profiler.result]
        if dist.is_initialized() and dist.get_world_size() > 1:
            per_rank = [None] * dist.get_world_size()
            dist.all_gather_object(per_rank, self.profiler.result)
        trainer.run_dir.write_json("step_profile.json", {"profile_steps": self.steps, "ranks": per_rank})


class StopAtAUC(Callback):
    """Stop at the first validation whose AUCs meet ``targets`` (``{objective: auc}``; ``"auc"``: the
    evaluator's headline AUC), each within ``tolerance``; record it (with the wall clock since the
    loop started, validation included) in ``summary.json``'s ``target_reached``."""

    def __init__(self, targets: float | Mapping[str, float], tolerance: float = 0.0) -> None:
        self.targets = {"auc": float(targets)} if isinstance(targets, (int, float)) else dict(targets)
        self.tolerance = tolerance
        self.reached: dict[str, Any] | None = None
        self.started = time.perf_counter()

    def on_train_start(self, trainer) -> None:
        self.started = time.perf_counter()  # after set-up and any resume: the clock of time to quality

    def on_validation(self, trainer, metrics: dict[str, float]) -> None:
        if self.reached is None and targets_met(metrics, self.targets, self.tolerance):
            self.reached = {**metrics, "wall_seconds": time.perf_counter() - self.started}
            trainer.request_stop(f"validation AUC reached {self._describe()}")

    def _describe(self) -> str:
        within = f" (within {self.tolerance:g})" if self.tolerance else ""
        return ", ".join(f"{k} {v:.4f}" for k, v in self.targets.items()) + within

    def on_train_end(self, trainer, summary: dict[str, Any]) -> None:
        if list(self.targets) == ["auc"] and not self.tolerance:
            summary["target_auc"] = self.targets["auc"]
        else:
            summary["target_aucs"] = self.targets
            summary["target_tolerance"] = self.tolerance
            last = trainer.validator.history[-1] if trainer.validator.history else {}
            summary["target_shortfalls"] = shortfalls(last, self.targets, "valid_")
        summary["target_reached"] = self.reached
        reached = self.reached or {}
        summary["time_to_auc_s"] = reached.get("wall_seconds")
        summary["samples_to_auc"] = reached.get("samples")
        summary["steps_to_auc"] = reached.get("step")


def bench_callbacks(config: BenchConfig) -> list[Callback]:
    """The callbacks ``config`` asks for (none by default)."""
    callbacks: list[Callback] = []
    if config.in_memory:
        callbacks.append(InMemoryBatches())
    if config.profile_steps:
        callbacks.append(ProfileSteps(config.profile_steps))
    if config.stop_at_auc:
        callbacks.append(StopAtAUC(config.stop_at_auc))
    if config.target_aucs:
        callbacks.append(StopAtAUC(config.target_aucs, config.target_tolerance))
    return callbacks
