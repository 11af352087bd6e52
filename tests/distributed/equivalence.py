"""Harness for "sharded on N gloo ranks trains exactly like one unsharded process".

Both sides start from the same weights and see the same global batches (each rank the
rows of its slice). The sharded side is built, planned and stepped as the trainer does
it (``build_sharded_model``: meta model, fused in-backward table optimizer, plan, DMP;
then ``TrainPipelineSparseDist``); the
reference is the plain model with ``torch.optim`` optimizers on the whole global batch.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import pytest
import torch
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

from tests.batches import random_batch, rank_slice
from tests.multiprocess import run_on_ranks
from torchrec_app.config import AppConfig
from torchrec_app.data.batch import Batch
from torchrec_app.distributed.build import build_sharded_model, model_tables
from torchrec_app.distributed.planning import sharding_types_by_table
from torchrec_app.distributed.runtime import Runtime
from torchrec_app.models.ctr import CTRModel, build_model
from torchrec_app.training.optimizers import build_optimizer

NUM_DENSE = 4
ROWS_PER_RANK = 16


def copy_weights(sharded: torch.nn.Module, full_state: dict[str, torch.Tensor]) -> None:
    """Load unsharded weights into a sharded model: each local shard takes its slice."""
    with torch.no_grad():
        for name, value in sharded.state_dict().items():
            full = full_state[name]
            if hasattr(value, "local_shards"):
                for shard in value.local_shards():
                    (r, c), (h, w) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
                    shard.tensor.copy_(full[r:r + h, c:c + w])
            else:
                value.copy_(full)


def max_param_diff(sharded: torch.nn.Module, full_state: dict[str, torch.Tensor]) -> float:
    """Largest difference between any local shard (or replica) and its slice of the full weights."""
    worst = 0.0
    for name, value in sharded.state_dict().items():
        full = full_state[name]
        if hasattr(value, "local_shards"):
            for shard in value.local_shards():
                (r, c), (h, w) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
                worst = max(worst, (shard.tensor - full[r:r + h, c:c + w]).abs().max().item())
        else:
            worst = max(worst, (value - full).abs().max().item())
    return worst


def global_batch_loss(reference: CTRModel, batch: Batch, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference loss over the whole global batch, and this rank's rows' logits."""
    loss, output = reference(batch)
    rows = batch.labels.numel() // world
    return loss, output.predictions["label"][rank * rows:(rank + 1) * rows]


def train_sharded_and_reference(
    runtime: Runtime,
    config: AppConfig,
    features: Sequence[str],
    num_embeddings: dict[str, int],
    reference_optimizers: Callable[[CTRModel], list[torch.optim.Optimizer]],
    steps: int,
    reference_loss: Callable[[CTRModel, Batch, int, int], tuple[torch.Tensor, torch.Tensor]] = global_batch_loss,
) -> dict[str, Any]:
    """Train both sides ``steps`` steps; return the plan's types and the worst differences."""
    world = runtime.world_size
    torch.manual_seed(0)
    reference = build_model(config, NUM_DENSE, features, num_embeddings, device="cpu")
    initial = {k: v.clone() for k, v in reference.state_dict().items()}

    model = build_model(config, NUM_DENSE, features, num_embeddings, device="meta")
    tables = model_tables(model)
    sharded, plan = build_sharded_model(model, runtime, sharding=config.sharding, optim=config.optim,
                                        batch_size=ROWS_PER_RANK)  # fmt: skip
    copy_weights(sharded, initial)
    data_parallel = {t for t, kind in sharding_types_by_table(plan).items() if kind == "data_parallel"}
    pipeline = TrainPipelineSparseDist(sharded, build_optimizer(sharded, config.optim, data_parallel), runtime.device)
    optimizers = reference_optimizers(reference)

    generator = torch.Generator().manual_seed(1)
    global_batches = [random_batch(list(features), NUM_DENSE, num_embeddings, ROWS_PER_RANK * world, generator)
                      for _ in range(steps)]
    local_batches = iter([rank_slice(b, runtime.rank, world) for b in global_batches])
    worst_logit = 0.0
    for global_batch in global_batches:
        output = pipeline.progress(local_batches)
        for optimizer in optimizers:
            optimizer.zero_grad()
        loss, mine = reference_loss(reference, global_batch, runtime.rank, world)
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
        worst_logit = max(worst_logit, (output.predictions["label"] - mine).abs().max().item())
    with pytest.raises(StopIteration):
        pipeline.progress(local_batches)  # every batch was executed, none left behind
    return {
        "types": sharding_types_by_table(plan),
        "tables": sorted(t.name for t in tables),
        "logit_diff": worst_logit,
        "param_diff": max_param_diff(pipeline.detach(), reference.state_dict()),
        "moved": max((reference.state_dict()[k] - v).abs().max().item() for k, v in initial.items()),
    }


def assert_equivalent(per_rank_results: list[dict[str, Any]], sharding_type: str) -> None:
    """Every rank used ``sharding_type``, training moved the weights, and both sides agree to 1e-5."""
    for rank, result in enumerate(per_rank_results):
        assert set(result["types"].values()) == {sharding_type}, result["types"]
        assert result["moved"] > 1e-3, "training did not change the weights; the comparison would be vacuous"
        assert result["logit_diff"] < 1e-5, f"rank {rank}: predictions differ by {result['logit_diff']}"
        assert result["param_diff"] < 1e-5, f"rank {rank}: parameters differ by {result['param_diff']}"


def _run_cases(runtime: Runtime, run_case: Callable[..., Any], cases: Sequence[tuple]) -> list[Any]:
    return [run_case(runtime, *case) for case in cases]


def run_cases_on_ranks(run_case: Callable[..., Any], cases: Sequence[tuple], world_size: int = 2) -> dict[tuple, list[Any]]:
    """``run_case(runtime, *case)`` for every case, all in one group of ``world_size`` real gloo ranks
    (one process start for the whole module); ``{case: [result of rank 0, rank 1, ...]}``.
    ``run_case`` must be a module-level function (it is pickled into the spawned ranks)."""
    per_rank = run_on_ranks(_run_cases, world_size, run_case, list(cases))
    return {case: [rank_results[i] for rank_results in per_rank] for i, case in enumerate(cases)}
