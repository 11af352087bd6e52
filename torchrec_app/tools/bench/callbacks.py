"""The benchmark's hooks into the training loop (``bench.*`` config, attached by ``torchrec-app train``).

* :class:`InMemoryBatches` (``bench.in_memory``): each segment's batches are read into a
  list before its timed steps, so the same model and plan step without reading — the
  throughput ceiling a pipelined reader can at best reach.
* :class:`ProfileSteps` (``bench.profile_steps``): the step-time split of a few steps
  (:mod:`~torchrec_app.tools.bench.step_profile`), every rank's in ``step_profile.json``.
* :class:`StopAtAUC` (``bench.stop_at_auc``): stop once a validation AUC reaches the
  target; the summary gets the first validation that did and the time to quality:
  ``time_to_auc_s`` (wall-clock seconds from the first training step to the end of that
  validation: training *and* the validations before it, so a cadence that validates more
  often pays for it), ``samples_to_auc`` (global samples trained on) and ``steps_to_auc``.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import torch.distributed as dist

from torchrec_app.config.schema import BenchConfig
from torchrec_app.tools.bench.step_profile import StepProfiler
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
    def __init__(self, target: float) -> None:
        self.target = target
        self.reached: dict[str, Any] | None = None
        self.started = time.perf_counter()

    def on_train_start(self, trainer) -> None:
        self.started = time.perf_counter()  # after set-up and any resume: the clock of time to quality

    def on_validation(self, trainer, metrics: dict[str, float]) -> None:
        if self.reached is None and metrics.get("auc", 0.0) >= self.target:
            self.reached = {**metrics, "wall_seconds": time.perf_counter() - self.started}
            trainer.request_stop(f"validation AUC reached {self.target}")

    def on_train_end(self, trainer, summary: dict[str, Any]) -> None:
        summary["target_auc"] = self.target
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
    return callbacks
