"""The one training loop, for every model family.

    trainer = Trainer(config, runtime, data_dir, run_dir, callbacks)
    summary = trainer.train()

Set-up: the dataset's ``metadata.json`` → the model family's task
(:func:`torchrec_app.models.task_for`) builds the model on ``meta`` →
:func:`~torchrec_app.distributed.build.build_sharded_model` (fused table optimizer, plan,
``DistributedModelParallel``) → dense optimizer and LR schedule → the train reader, the
validator and the checkpointer. Then the loop::

    restore (resume / load_from)
    while step < max_steps and not stopping:
        train until the next validation, checkpoint or the end   (TrainPipelineSparseDist)
        check for non-finite values                             (all ranks)
        validate if due                                         (Validator)
        save if due                                             (Checkpointer)
    save, restore the best state, final metrics, summary

Training runs in *segments* that end where something reads or saves the state: each
feeds the pipeline exactly the segment's batches, so the pipeline drains at its end and
the reader's position equals the steps taken. The trainer is ``Stateful``: its
``state_dict`` is the whole checkpoint (model, optimizers, LR schedule, reader position,
validator, counters), so resuming is one load and continues exactly.

Every rank runs the same number of steps: the reader pads the tail of each split
(weight-0 rows) instead of dropping or repeating rows.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import time
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

from torchrec_app.config.schema import AppConfig
from torchrec_app.data.metadata import METADATA_FILE, load_metadata
from torchrec_app.data.reader import TrainBatches, read_batches
from torchrec_app.data.truth import load_truth
from torchrec_app.distributed.build import build_sharded_model
from torchrec_app.distributed.planning import plan_to_dict, sharding_types_by_table
from torchrec_app.distributed.runtime import Runtime
from torchrec_app.models import task_for
from torchrec_app.models.task import ModelOutput
from torchrec_app.training.callbacks import Callback, Callbacks
from torchrec_app.training.checkpointer import Checkpointer
from torchrec_app.training.guard import NonFiniteGuard
from torchrec_app.training.optimizers import build_lr_scheduler, build_optimizer
from torchrec_app.training.progress import ProgressReporter
from torchrec_app.training.run_dir import RunDir
from torchrec_app.training.validator import Validator


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Trainer:
    """Owns the sharded model, its optimizers and the loop over one dataset (see the module docstring)."""

    def __init__(self, config: AppConfig, runtime: Runtime, data_dir: Path, run_dir: RunDir,
                 callbacks: list[Callback] | tuple[Callback, ...] = ()) -> None:  # fmt: skip
        self.config, self.runtime, self.data_dir, self.run_dir = config, runtime, Path(data_dir), run_dir
        self.callbacks = Callbacks(callbacks)
        self.metadata = load_metadata(str(self.data_dir))
        self.task = task_for(config.model.name)
        if self.metadata.kind != self.task.data_kind:
            raise ValueError(f"{self.data_dir}: a {self.metadata.kind!r} dataset, but model.name={config.model.name} "
                             f"trains on {self.task.data_kind!r} data")  # fmt: skip
        torch.manual_seed(config.train.seed)
        self._batch_maker = self.task.batch_maker(config, self.metadata, str(self.data_dir)) if self.task.batch_maker else None
        # First, so that a reader process (data.reader_process) starts while the model is built and planned.
        self.train_batches = TrainBatches(self._reader("train", train=True))
        model = self.task.build_model(config, self.metadata, "meta")
        replan = (f"torchrec-app plan --recipe {config.recipe} --data {self.data_dir} --device {runtime.device.type} "
                  f"--world-size {runtime.world_size} --json FILE [the run's overrides]")  # fmt: skip
        self.model, self.plan = build_sharded_model(model, runtime, sharding=config.sharding, optim=config.optim,
                                                    batch_size=config.train.batch_size, replan=replan)  # fmt: skip
        if self.task.initialize is not None:  # e.g. pretrained weights; a resume below overrides them
            self.task.initialize(self.model, config, self.metadata)
        if runtime.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = config.train.tf32
            torch.backends.cudnn.allow_tf32 = config.train.tf32
        self.guard = NonFiniteGuard(self.model, runtime.device)
        data_parallel = {t for t, kind in sharding_types_by_table(self.plan).items() if kind == "data_parallel"}
        self.optimizer = build_optimizer(self.model, config.optim, data_parallel, self.guard.check_gradients)
        self.lr_scheduler = build_lr_scheduler(self.optimizer, config.optim)
        self.pipeline = TrainPipelineSparseDist(self.model, self.optimizer, runtime.device) if config.train.pipeline else None

        steps_per_epoch = self.train_batches.batches_per_epoch
        self.max_steps = steps_per_epoch * config.train.epochs
        if config.train.max_steps:
            self.max_steps = min(self.max_steps, config.train.max_steps)
        self.validator = Validator(
            self.task, config.train, lambda: self.task.make_evaluator(config, self.metadata),
            lambda split: self._reader(split, train=False), steps_per_epoch, run_dir.path / "best", self.log,
            config.checkpoint.verify_checksums, details_dir=run_dir.path / "details",
        )
        self.checkpointer = Checkpointer(run_dir.path / "checkpoints", config.checkpoint, self.log)
        if "valid" in self.metadata.split_rows and self.validator.next_due(0) > self.max_steps:
            self.log(f"warning: no validation will run: the first is due at step {self.validator.next_due(0)} of a "
                     f"{self.max_steps}-step run (train.eval_every={config.train.eval_every}, {steps_per_epoch} steps per "
                     "epoch); early stopping and the best state need validations: use train.evals_per_epoch")  # fmt: skip
        # Counters (all in the checkpoint). ``samples`` is global: updated at every segment's end.
        self.step = 0
        self.samples = 0
        self.train_seconds = 0.0
        self.resumed_from: str | None = None
        self.stop_reason: str | None = None

    # -- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The whole training state. Plain values are the same on every rank (DCP stores them once)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "train_batches": self.train_batches.state_dict(),
            "validator": self.validator.state_dict(),
            "progress": {"step": self.step, "samples": self.samples, "train_seconds": self.train_seconds},
        }

    def load_state_dict(self, state: dict[str, Any], skipped: list[str] | None = None) -> None:
        """Restore what ``state`` holds: all of :meth:`state_dict`, or only model and optimizer (``load_from``)."""
        self.model.load_state_dict(state["model"])
        if not skipped:  # else the optimizer tensors that fit were filled in place; the rest start fresh
            self.optimizer.load_state_dict(state["optimizer"])
        if "progress" in state:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
            self.train_batches.load_state_dict(state["train_batches"])
            self.validator.load_state_dict(state["validator"])
            progress = state["progress"]
            self.step, self.samples = int(progress["step"]), int(progress["samples"])
            self.train_seconds = float(progress["train_seconds"])

    # -- the loop ----------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        """Train to ``max_steps`` (or an early stop), then evaluate and write ``summary.json``.

        The train stream's reader process (``data.reader_process``) is stopped at the end,
        whether training succeeded or raised."""
        try:
            return self._train()
        finally:
            self.train_batches.close()

    def _train(self) -> dict[str, Any]:
        self._write_setup_files()
        self.resumed_from = self.checkpointer.restore(self)
        if self.resumed_from:
            self.log(f"resumed from {self.resumed_from} at step {self.step}")
            self.run_dir.drop_metrics_after(self.step)  # steps replayed after a crash are logged once
        self.progress = ProgressReporter(self.max_steps, self.step, self.train_batches.batches_per_epoch,
                                         self.runtime.is_main and self.config.train.progress_bar,
                                         self.config.train.progress_seconds)  # fmt: skip
        if self.config.data.reader_process:
            self.log(f"reader process ready (waited {self.train_batches.wait_ready():.1f}s after set-up)")
        self.callbacks.on_train_start(self)
        while self.step < self.max_steps and not self._stopping:
            until = min(self.max_steps, self.validator.next_due(self.step), self.checkpointer.next_due(self.step))
            self.train_until(int(until))
            self.guard.check()
            if self.validator.is_due(self.step):
                self._validate()
            if self.checkpointer.is_due(self.step) and self.step < self.max_steps and not self._stopping:
                self.checkpointer.save(self.step, self)
        self.progress.close()
        if self.config.checkpoint.at_end:
            self.checkpointer.save(self.step, self)
        return self.finish()

    @property
    def _stopping(self) -> bool:
        return self.stop_reason is not None or self.validator.should_stop

    def request_stop(self, reason: str) -> None:
        """Stop after the current segment (a callback's way to end training)."""
        self.stop_reason = reason

    def train_until(self, step: int) -> None:
        """Take training steps up to ``step``; the pipeline drains at the end."""
        batches = self.callbacks.wrap_batches(self.train_batches.take(step - self.step))
        interval = _Interval(self.runtime.device)
        start = time.perf_counter()
        for output in self._steps(batches):
            self.step += 1
            self.guard.observe(self.step, output.loss)
            interval.add(output)
            self.progress.advance(self.step)
            self.callbacks.on_step(self, output)
            if self.step % self.config.train.log_every == 0 or self.step == self.max_steps:
                self._log_interval(interval)
        self.train_seconds += time.perf_counter() - start
        self.samples += int(self._all_reduce(interval.segment_samples))

    def _steps(self, batches: Iterator[Any]) -> Iterator[ModelOutput]:
        """One ``ModelOutput`` per optimizer step over ``batches``."""
        amp = torch.autocast(self.runtime.device.type, dtype=torch.bfloat16, enabled=self.config.train.amp == "bf16")
        while True:
            try:
                with amp:
                    if self.pipeline is not None:
                        output = self.pipeline.progress(batches)
                    else:
                        output = self._step_without_pipeline(next(batches))
            except StopIteration:
                return
            self.lr_scheduler.step()
            yield output

    def _step_without_pipeline(self, batch: Any) -> ModelOutput:
        self.optimizer.zero_grad()
        loss, output = self.model(batch.to(self.runtime.device))
        loss.backward()
        self.optimizer.step()
        return output

    def _validate(self) -> None:
        model = self.pipeline.detach() if self.pipeline is not None else self.model
        extra = {"samples": self.samples, "train_seconds": self.train_seconds}
        with torch.autocast(self.runtime.device.type, dtype=torch.bfloat16, enabled=self.config.train.amp == "bf16"):
            record = self.validator.validate(model, self.step, self.train_batches.epoch, extra)
        self.run_dir.log_metrics(record)
        self.callbacks.on_validation(self, {k.removeprefix("valid_"): v for k, v in record.items()})

    def _log_interval(self, interval: "_Interval") -> None:
        self.guard.check()
        names = sorted(interval.losses_sum)  # per-objective losses of a multi-loss model (ModelOutput.losses), same on every rank
        loss_sum, samples, *objective_sums = self._all_reduce(interval.loss_sum, interval.samples,
                                                              *(interval.losses_sum[n] for n in names))  # fmt: skip
        elapsed = time.perf_counter() - interval.start
        steps = max(1, interval.steps * self.runtime.world_size)
        record = {
            "step": self.step,
            "loss": loss_sum / steps,
            "samples_per_second": samples / elapsed if elapsed > 0 else 0.0,
            "lr": self.lr_scheduler.get_last_lr()[0],
            **{f"loss/{name}": value / steps for name, value in zip(names, objective_sums)},
        }
        self.run_dir.log_metrics(record)
        self.progress.show(record)
        interval.reset()

    def _all_reduce(self, *values: torch.Tensor | float, op: dist.ReduceOp = dist.ReduceOp.SUM) -> Any:
        tensor = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=self.runtime.device).reshape(())
                              for v in values])  # fmt: skip
        dist.all_reduce(tensor, op=op)
        result = tensor.tolist()
        return result[0] if len(values) == 1 else result

    # -- the end -----------------------------------------------------------------------------

    def finish(self) -> dict[str, Any]:
        """Final metrics (from the best state when early stopping keeps one) and ``summary.json``."""
        rt = self.runtime
        model = self.pipeline.detach() if self.pipeline is not None else self.model
        splits = [s for s in ("valid", "test") if s in self.metadata.split_rows]
        final = self.validator.final_metrics(model, self.step, splits)
        train_seconds, rss = self._all_reduce(self.train_seconds, peak_rss_mb(), op=dist.ReduceOp.MAX)
        steps_per_epoch = self.train_batches.batches_per_epoch
        summary: dict[str, Any] = {
            "recipe": self.config.recipe,
            "model": self.config.model.name,
            "task": self.task.name,
            "world_size": rt.world_size,
            "backend": rt.backend,
            "device": str(rt.device.type),
            "steps": self.step,
            "epochs_trained": round(self.step / steps_per_epoch, 3),
            "samples": int(self.samples),
            "train_seconds": train_seconds,
            "samples_per_second": self.samples / train_seconds if train_seconds > 0 else 0.0,
            "peak_rss_mb": rss,
            "sharding_types": sharding_types_by_table(self.plan),
            "restarts": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")),
            "resumed_from": self.resumed_from,
            "early_stopped": self.validator.should_stop,
            "stop_reason": self.stop_reason or ("early stopping" if self.validator.should_stop else None),
            "best_step": self.validator.best_step,
            "best_epoch": None if self.validator.best_step is None else (self.validator.best_step - 1) // steps_per_epoch,
            "monitor": self.task.monitor,
        }
        truth = load_truth(str(self.data_dir)) or {}
        for split in ("valid", "test"):
            metrics = final.get(split)
            for name, value in (metrics or {}).items():
                summary[f"{split}_{name}"] = value
            if metrics is None:
                summary.update({f"{split}_auc": None, f"{split}_logloss": None, f"{split}_rows": 0})
            oracle = truth.get("oracle", {}).get(split) or {}
            for name, value in (metrics or {}).items():  # e.g. a generator's oracle ranking metrics
                if name not in ("auc", "logloss", "rows", "users") and isinstance(oracle.get(name), float):
                    summary[f"{split}_oracle_{name}"] = oracle[name]
            if metrics and oracle.get("auc") is not None and "auc" in metrics:
                summary[f"{split}_oracle_auc"] = oracle["auc"]
                summary[f"{split}_oracle_logloss"] = oracle["logloss"]
                summary[f"{split}_auc_gap_to_oracle"] = oracle["auc"] - metrics["auc"]
        if rt.device.type == "cuda":
            summary["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(rt.device) / 2**20
        if self.task.describe is not None:
            summary.update(self.task.describe(self.config, self.metadata))
        summary["history"] = self.validator.history
        self.callbacks.on_train_end(self, summary)
        self.run_dir.write_json("summary.json", summary)
        return summary

    # -- small things ------------------------------------------------------------------------

    def _reader(self, split: str, train: bool):
        cfg = self.config.train
        batch_size = cfg.batch_size if train else (cfg.eval_batch_size or cfg.batch_size)
        return read_batches(str(self.data_dir), split, batch_size=batch_size, rank=self.runtime.rank,
                            world_size=self.runtime.world_size, config=self.config.data, shuffle=train,
                            seed=cfg.seed, batch_maker=self._batch_maker)  # fmt: skip

    def _write_setup_files(self) -> None:
        self.run_dir.write_json("config.json", dataclasses.asdict(self.config))
        self.run_dir.write_json(METADATA_FILE, self.metadata.to_json())  # what the model was built from (explain rebuilds it)
        self.run_dir.write_text("plan.txt", str(self.plan) + "\n")
        self.run_dir.write_json("plan.json", plan_to_dict(self.plan))

    def log(self, message: str) -> None:
        """Print on the main rank."""
        if self.runtime.is_main:
            print(message, flush=True)


class _Interval:
    """Loss and sample sums of the current log interval and segment, kept on the device (no sync per step)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.segment_samples = torch.zeros((), dtype=torch.float64, device=device)
        self.reset()

    def reset(self) -> None:
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.samples = torch.zeros((), dtype=torch.float64, device=self.device)
        self.losses_sum: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.start = time.perf_counter()

    def add(self, output: ModelOutput) -> None:
        real = output.weights.sum().double()
        loss = output.loss.detach().double()
        self.loss_sum += torch.where(torch.isfinite(loss), loss, torch.zeros_like(loss))
        for name, value in output.losses.items():
            value = value.detach().double()
            self.losses_sum[name] = self.losses_sum.get(name, 0.0) + torch.where(torch.isfinite(value), value, torch.zeros_like(value))
        self.samples += real
        self.segment_samples += real
        self.steps += 1

