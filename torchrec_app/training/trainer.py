"""The training loop: build the sharded model, step through the data, evaluate, report.

    load metadata -> build model on meta -> register fused table optimizer
      -> plan (collective) -> DistributedModelParallel -> dense optimizer + schedule
      -> for each epoch: step through train batches (TrainPipelineSparseDist),
         validating every ``train.eval_every`` steps -> validate and test -> summary

Every rank runs the same number of steps: the reader pads the tail of each split
(weight-0 rows) instead of dropping or repeating rows. Evaluation covers every real
row of a split exactly once across ranks, and metrics are computed over all of them.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import resource
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
import torch.distributed as dist
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

from torchrec_app.config.schema import AppConfig
from torchrec_app.data.batch import Batch
from torchrec_app.data.metadata import load_metadata
from torchrec_app.data.reader import read_batches, table_sizes
from torchrec_app.data.truth import load_truth
from torchrec_app.distributed.build import shard_model
from torchrec_app.distributed.planning import (
    build_constraints,
    build_topology,
    check_plan_matches,
    load_plan,
    plan_sharding,
    plan_to_dict,
    sharding_types_by_table,
)
from torchrec_app.distributed.runtime import Runtime, device_memory_gb
from torchrec_app.distributed.sharders import build_sharders
from torchrec_app.metrics.binary import EvalAccumulator
from torchrec_app.models.ctr import StepOutput, build_model
from torchrec_app.models.sparse import build_tables, parameters_by_table
from torchrec_app.tools.bench.step_profile import StepProfiler
from torchrec_app.training.checkpoint import latest_checkpoint, load_checkpoint, newest_valid_checkpoint, save_checkpoint
from torchrec_app.training.early_stopping import EarlyStopping
from torchrec_app.training.optimizers import LRSchedule, apply_sparse_optimizer, build_optimizer, check_sparse_optimizer
from torchrec_app.training.run_dir import RunDir


def _all_reduce(values: list[float], runtime: Runtime, op: dist.ReduceOp = dist.ReduceOp.SUM) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64, device=runtime.device)
    dist.all_reduce(tensor, op=op)
    return tensor.tolist()


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Trainer:
    """Owns the sharded model, its optimizers and the loop over one dataset."""

    def __init__(self, config: AppConfig, runtime: Runtime, data_dir: Path, run_dir: RunDir) -> None:
        self.config = config
        self.runtime = runtime
        self.data_dir = Path(data_dir)
        self.run_dir = run_dir
        self.metadata = load_metadata(self.data_dir)
        self.table_sizes = table_sizes(self.metadata, config.data)

        torch.manual_seed(config.train.seed)
        model = build_model(config, self.metadata.dense_features, self.metadata.sparse_features, self.table_sizes, "meta")
        check_sparse_optimizer(config.optim, runtime.device.type)
        apply_sparse_optimizer(model.model.sparse_arch.embedding_bag_collection, config.optim)
        self.plan = self._make_plan(model)
        sharders = build_sharders(config.sharding.qcomms_forward, config.sharding.qcomms_backward)
        self.model = shard_model(model, runtime, self.plan, sharders)
        if runtime.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = config.train.tf32
            torch.backends.cudnn.allow_tf32 = config.train.tf32
        self.optimizer = build_optimizer(self.model, config.optim)
        self.schedule = LRSchedule(self.optimizer, config.optim)
        self.pipeline = (
            TrainPipelineSparseDist(self.model, self.optimizer, runtime.device) if config.train.pipeline else None
        )
        # Position and counters: all of it is checkpointed, so a resumed run continues exactly.
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.samples = 0  # real rows trained on by this rank since this process started
        self.samples_before = 0  # global rows trained on before a resume
        self.train_seconds = 0.0
        self.history: list[dict[str, Any]] = []
        self.resumed_from: str | None = None
        self.early_stopping = EarlyStopping(config.train.early_stop_patience)

    # -- set-up ---------------------------------------------------------------------
    def _make_plan(self, model: torch.nn.Module):
        cfg, rt = self.config, self.runtime
        tables = build_tables(cfg.sparse, self.metadata.sparse_features, self.table_sizes)
        if cfg.sharding.plan_file:  # the plan that `torchrec-app plan --json` showed, checked against our tables
            plan = load_plan(cfg.sharding.plan_file, rt.device.type, rt.local_world_size)
            check_plan_matches(plan, tables, rt.world_size)
            return plan
        hbm_gb = cfg.sharding.hbm_gb or device_memory_gb(rt.device)  # on CUDA, the real device's memory
        topology = build_topology(rt.world_size, rt.device.type, rt.local_world_size, hbm_gb, cfg.sharding.ddr_gb)
        constraints = build_constraints(cfg.sharding, tables, rt.device.type)
        plan, _ = plan_sharding(model, topology, cfg.train.batch_size, constraints, dist.GroupMember.WORLD)
        return plan

    def _batches(self, split: str, train: bool, epoch: int = 0) -> Iterable[Batch]:
        cfg = self.config
        batch_size = cfg.train.batch_size if train else (cfg.train.eval_batch_size or cfg.train.batch_size)
        return read_batches(
            self.data_dir, split, batch_size=batch_size, rank=self.runtime.rank, world_size=self.runtime.world_size,
            config=cfg.data, shuffle=train, seed=cfg.train.seed, epoch=epoch,
        )

    # -- stepping -------------------------------------------------------------------
    def _step_without_pipeline(self, batches: Iterator[Batch]) -> StepOutput:
        batch = next(batches).to(self.runtime.device)
        self.optimizer.zero_grad()
        loss, output = self.model(batch)
        loss.backward()
        self.optimizer.step()
        return output

    def _autocast(self):
        """bf16 autocast of the forward when ``train.amp=bf16``; a no-op context otherwise."""
        return torch.autocast(self.runtime.device.type, dtype=torch.bfloat16, enabled=self.config.train.amp == "bf16")

    def _train_steps(self, batches: Iterator[Batch], on_step) -> None:
        """Step until ``batches`` is exhausted (the pipeline drains its in-flight batches)."""
        while True:
            try:
                with self._autocast():
                    output = self.pipeline.progress(batches) if self.pipeline else self._step_without_pipeline(batches)
            except StopIteration:
                return
            self.schedule.step()
            self.step += 1
            on_step(output)

    def evaluate(self, split: str) -> dict[str, float]:
        """AUC / logloss over every row of ``split``, across all ranks."""
        model = self.pipeline.detach() if self.pipeline else self.model
        model.eval()
        accumulator = EvalAccumulator()
        with torch.no_grad(), self._autocast():
            for batch in self._batches(split, train=False):
                _, output = model(batch.to(self.runtime.device))
                accumulator.add(output.logits, output.labels, output.weights)
        model.train()
        return accumulator.compute()

    # -- checkpoints ----------------------------------------------------------------
    @property
    def checkpoint_root(self) -> Path:
        return self.run_dir.path / "checkpoints"

    def _global_samples(self) -> int:
        return self.samples_before + int(_all_reduce([float(self.samples)], self.runtime)[0])

    def _checkpoint_state(self) -> dict[str, Any]:
        # Plain values are stored once (DCP de-duplicates them), so they must be global.
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "train": {
                "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "samples": self._global_samples(), "train_seconds": self.train_seconds,
                "schedule_step": self.schedule.step_count, "history": json.dumps(self.history),
            },
        }

    def save_checkpoint(self) -> Path:
        """Save the full training state as a checkpoint of the current step (collective)."""
        return save_checkpoint(self.checkpoint_root, self.step, self._checkpoint_state(), self.config.checkpoint.keep)

    def load_checkpoint(self, path: Path, restore_position: bool, verify_checksums: bool | None = None) -> None:
        """Load a checkpoint's model and optimizer state (and, to resume, its position)."""
        checksums = self.config.checkpoint.verify_checksums if verify_checksums is None else verify_checksums
        state, skipped = load_checkpoint(Path(path), self._checkpoint_state(), checksums)
        self.model.load_state_dict(state["model"])
        if skipped:  # the rest of the optimizer state was filled in place
            if self.runtime.is_main:
                print(f"warning: {len(skipped)} optimizer state tensor(s) in {path} do not fit this plan's layout "
                      f"and start fresh, e.g. {skipped[0]}", flush=True)
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        if restore_position:
            train = state["train"]
            self.step, self.epoch, self.batch_in_epoch = int(train["step"]), int(train["epoch"]), int(train["batch_in_epoch"])
            self.samples_before, self.samples = int(train["samples"]), 0
            self.train_seconds = float(train["train_seconds"])
            self.history = json.loads(train["history"])
            self.schedule.step_count = int(train["schedule_step"])
            self.schedule.step_count -= 1
            self.schedule.step()  # re-applies the learning rates of the restored step
        self.resumed_from = str(path)

    def _restore(self) -> None:
        ckpt = self.config.checkpoint
        latest = newest_valid_checkpoint(self.checkpoint_root, ckpt.verify_checksums) if ckpt.resume else None
        if latest is not None:  # just verified, checksums included: load checks sizes only
            self.load_checkpoint(latest, restore_position=True, verify_checksums=False)
        elif ckpt.load_from:
            self.load_checkpoint(Path(ckpt.load_from), restore_position=False)
        if self.resumed_from and self.runtime.is_main:
            print(f"resumed from {self.resumed_from} at step {self.step}", flush=True)

    # -- the loop -------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Train to the end of the configured epochs / steps, then evaluate and summarise."""
        cfg, rt = self.config, self.runtime
        self._write_setup_files()
        self._restore()
        steps_per_epoch = len(self._batches("train", train=True))
        total_steps = steps_per_epoch * cfg.train.epochs
        if cfg.train.max_steps:
            total_steps = min(total_steps, cfg.train.max_steps)
        progress = _progress_bar(total_steps, self.step, enabled=rt.is_main and cfg.train.progress_bar)
        interval = {"loss": 0.0, "steps": 0, "samples": 0, "start": time.perf_counter()}
        profiler = StepProfiler(cfg.train.profile_steps)  # bench hook; a no-op at 0

        def on_step(output: StepOutput) -> None:
            real = float(output.weights.sum())
            self.samples += int(real)
            interval["loss"] += float(output.loss)
            interval["steps"] += 1
            interval["samples"] += real
            progress.update(1)
            profiler.step()
            if self.step % cfg.train.log_every == 0 or self.step == total_steps:
                self._log_interval(interval, progress)

        has_valid = "valid" in self.metadata.split_rows
        eval_every, save_every = cfg.train.eval_every, cfg.checkpoint.every
        profiler.start()
        while self.step < total_steps:
            batches = iter(self._batches("train", train=True, epoch=self.epoch))
            for _ in itertools.islice(batches, self.batch_in_epoch):
                pass  # resuming mid-epoch: skip the batches already trained on
            if cfg.train.in_memory:  # bench hook: read this epoch's remaining steps now, untimed
                batches = iter(list(itertools.islice(batches, total_steps - self.step)))
            batches = profiler.wrap(batches)
            while self.step < total_steps:
                stop_at = min(total_steps, self.step - self.batch_in_epoch + steps_per_epoch,
                              *(_next_multiple(self.step, n) for n in (eval_every, save_every) if n))
                before = self.step
                start = time.perf_counter()
                self._train_steps(itertools.islice(batches, stop_at - self.step), on_step)
                self.train_seconds += time.perf_counter() - start
                self.batch_in_epoch += self.step - before
                epoch_done = self.batch_in_epoch >= steps_per_epoch or self.step < stop_at
                if epoch_done:
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                if has_valid and (eval_every and self.step % eval_every == 0
                                  or not eval_every and epoch_done and self.step < total_steps):
                    metrics = self._record_eval("valid", self.epoch - epoch_done)
                    if cfg.train.target_auc and metrics["auc"] >= cfg.train.target_auc:
                        total_steps = self.step  # bench hook: reached the target, stop here
                    if self._early_stop_check(metrics):
                        total_steps = self.step
                if save_every and self.step % save_every == 0 and self.step < total_steps:
                    self.save_checkpoint()
                if epoch_done:
                    break
        progress.close()
        profiler.stop()
        self._write_step_profile(profiler)
        if cfg.checkpoint.at_end:
            self.save_checkpoint()
        self._restore_best()
        return self._finish()

    # -- early stopping -------------------------------------------------------------
    @property
    def best_root(self) -> Path:
        return self.run_dir.path / "best"

    def _early_stop_check(self, validation: dict[str, float]) -> bool:
        """Record a validation; keep its state if it is the best; True when training should stop."""
        improved = self.early_stopping.update(self.step, validation["logloss"])
        if improved and self.early_stopping.patience and self.config.train.restore_best:
            save_checkpoint(self.best_root, self.step, self._checkpoint_state(), keep=1)
        return self.early_stopping.should_stop

    def _restore_best(self) -> None:
        """With early stopping, go back to the best validation's weights for the final evaluation."""
        best = self.early_stopping.best_step
        if not (self.early_stopping.patience and self.config.train.restore_best) or best in (None, self.step):
            return
        state, _ = load_checkpoint(latest_checkpoint(self.best_root), self._checkpoint_state(),
                                   self.config.checkpoint.verify_checksums)
        self.model.load_state_dict(state["model"])
        if self.runtime.is_main:
            print(f"restored the best validation state (step {best}, logloss {self.early_stopping.best_logloss:.4f})", flush=True)

    def _log_interval(self, interval: dict[str, Any], progress) -> None:
        loss_sum, samples = _all_reduce([interval["loss"], interval["samples"]], self.runtime)
        elapsed = time.perf_counter() - interval["start"]
        record = {
            "step": self.step,
            "loss": loss_sum / max(1, interval["steps"] * self.runtime.world_size),
            "samples_per_second": samples / elapsed if elapsed > 0 else 0.0,
            "lr": self.schedule.last_lr,
        }
        self.run_dir.log_metrics(record)
        progress.set_postfix(loss=f"{record['loss']:.4f}", sps=f"{record['samples_per_second']:.0f}")
        interval.update(loss=0.0, steps=0, samples=0, start=time.perf_counter())

    def _record_eval(self, split: str, epoch: int) -> dict[str, float]:
        metrics = self.evaluate(split)
        record = {"step": self.step, "epoch": epoch, f"{split}_auc": metrics["auc"], f"{split}_logloss": metrics["logloss"],
                  "samples": self._global_samples(), "train_seconds": self.train_seconds}  # fmt: skip
        self.history.append(record)
        self.run_dir.log_metrics(record)
        if self.runtime.is_main:
            print(f"[step {self.step}] {split}: auc={metrics['auc']:.4f} logloss={metrics['logloss']:.4f} ({metrics['rows']} rows)", flush=True)
        return metrics

    def _write_step_profile(self, profiler: StepProfiler) -> None:
        """Bench hook: every rank's step-time split (``train.profile_steps``) into ``step_profile.json``."""
        if not self.config.train.profile_steps:
            return
        per_rank = [profiler.result]
        if self.runtime.world_size > 1:
            per_rank = [None] * self.runtime.world_size
            dist.all_gather_object(per_rank, profiler.result)
        self.run_dir.write_json("step_profile.json", {"profile_steps": self.config.train.profile_steps, "ranks": per_rank})

    def _write_setup_files(self) -> None:
        self.run_dir.write_json("config.json", dataclasses.asdict(self.config))
        self.run_dir.write_text("plan.txt", str(self.plan) + "\n")
        self.run_dir.write_json("plan.json", plan_to_dict(self.plan))

    def _finish(self) -> dict[str, Any]:
        rt = self.runtime
        samples = self._global_samples()
        (train_seconds, rss) = _all_reduce([self.train_seconds, peak_rss_mb()], rt, dist.ReduceOp.MAX)
        summary: dict[str, Any] = {
            "recipe": self.config.recipe,
            "model": self.config.model.name,
            "world_size": rt.world_size,
            "backend": rt.backend,
            "device": str(rt.device.type),
            "steps": self.step,
            "samples": int(samples),
            "train_seconds": train_seconds,
            "samples_per_second": samples / train_seconds if train_seconds > 0 else 0.0,
            "peak_rss_mb": rss,
            "sharding_types": sharding_types_by_table(self.plan),
            "restarts": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")),
            "resumed_from": self.resumed_from,
            "early_stopped": self.early_stopping.should_stop,
            "best_step": self.early_stopping.best_step,
            "in_memory": self.config.train.in_memory,
        }
        target = self.config.train.target_auc
        if target:  # bench hook: the first validation that reached the target, if any
            summary["target_auc"] = target
            summary["target_reached"] = next((r for r in self.history if r.get("valid_auc", 0.0) >= target), None)
        truth = load_truth(self.data_dir) or {}
        for split in ("valid", "test"):
            metrics = self._record_eval(split, self.config.train.epochs - 1) if split in self.metadata.split_rows else None
            summary[f"{split}_auc"] = metrics["auc"] if metrics else None
            summary[f"{split}_logloss"] = metrics["logloss"] if metrics else None
            summary[f"{split}_rows"] = metrics["rows"] if metrics else 0
            oracle = _oracle(truth, split)
            if metrics and oracle:
                summary[f"{split}_oracle_auc"] = oracle["auc"]
                summary[f"{split}_oracle_logloss"] = oracle["logloss"]
                summary[f"{split}_auc_gap_to_oracle"] = oracle["auc"] - metrics["auc"]
        if rt.device.type == "cuda":
            summary["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(rt.device) / 2**20
        summary["parameters_by_table"] = parameters_by_table(self.config.sparse, self.metadata.sparse_features, self.table_sizes)
        summary["history"] = self.history
        self.run_dir.write_json("summary.json", summary)
        return summary


def _oracle(truth: dict[str, Any], split: str) -> dict[str, float] | None:
    """The oracle metrics of ``split`` from a generator's truth.json, if it has them."""
    entry = truth.get("oracle", {}).get(split) or {}
    return {"auc": entry["auc"], "logloss": entry["logloss"]} if entry.get("auc") is not None else None


class _NoProgress:
    def update(self, n: int) -> None: ...
    def set_postfix(self, **kwargs: Any) -> None: ...
    def close(self) -> None: ...


def _next_multiple(step: int, every: int) -> int:
    """The first multiple of ``every`` after ``step``."""
    return (step // every + 1) * every


def _progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return _NoProgress()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)
