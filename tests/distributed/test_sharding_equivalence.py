"""Every sharding type, on 2 real gloo ranks, trains exactly like one unsharded process.

Both sides start from the same weights and see the same global batches (each rank the
rows of its slice). The sharded side steps through ``TrainPipelineSparseDist`` with the
fused in-backward table optimizer, as the trainer does; the reference is the plain
model with ``torch.optim`` optimizers on the whole global batch.

Gradient semantics, which this test pins down: DDP averages dense gradients over ranks
(the gradient of the mean loss over the global batch), and TorchRec's all-to-all
backward divides table gradients by the world size (its default ``gradient_division``),
so every table, whatever its sharding, also gets the global-mean gradient. The reference
is therefore plain training on the global batch, with no rescaling.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.distributed as dist
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
from torchrec.optim import RowWiseAdagrad

from tests.batches import random_batch, rank_slice
from tests.multiprocess import run_on_ranks
from torchrec_app.config import build_recipe
from torchrec_app.distributed.model_parallel import shard_model
from torchrec_app.distributed.planning import build_constraints, build_topology, plan_sharding, sharding_types_by_table
from torchrec_app.distributed.runtime import Runtime
from torchrec_app.models.ctr import build_model
from torchrec_app.models.sparse import build_tables
from torchrec_app.training.optimizers import apply_sparse_optimizer, build_optimizer

FEATURES = ["a", "b", "c", "d"]
NUM_EMBEDDINGS = {"a": 100, "b": 64, "c": 20, "d": 12}
NUM_DENSE = 4
ROWS_PER_RANK = 16
STEPS = 4
REFERENCE_OPTIMIZERS = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad, "rowwise_adagrad": RowWiseAdagrad}
CASES = [  # (sharding type, table optimizer)
    ("data_parallel", "sgd"),
    ("table_wise", "sgd"),
    ("row_wise", "sgd"),
    ("column_wise", "sgd"),
    ("table_row_wise", "sgd"),
    ("row_wise", "rowwise_adagrad"),
    ("table_wise", "adagrad"),
]


def _config(sharding_type: str, sparse_optimizer: str):
    config = build_recipe("tiny")
    return replace(
        config,
        sparse=replace(config.sparse, embedding_dim=8, dims={"b": 16}),
        sharding=replace(config.sharding, types=[sharding_type]),
        optim=replace(config.optim, sparse=sparse_optimizer, sparse_lr=0.1, dense="sgd", dense_lr=0.1),
    )


def _copy_weights(sharded: torch.nn.Module, full_state: dict[str, torch.Tensor]) -> None:
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


def _max_param_diff(sharded: torch.nn.Module, full_state: dict[str, torch.Tensor]) -> float:
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


def train_both(runtime: Runtime, sharding_type: str, sparse_optimizer: str) -> dict:
    config = _config(sharding_type, sparse_optimizer)
    world = runtime.world_size
    torch.manual_seed(0)
    reference = build_model(config, NUM_DENSE, FEATURES, NUM_EMBEDDINGS, device="cpu")
    initial = {k: v.clone() for k, v in reference.state_dict().items()}

    model = build_model(config, NUM_DENSE, FEATURES, NUM_EMBEDDINGS, device="meta")
    apply_sparse_optimizer(model.model.sparse_arch.embedding_bag_collection, config.optim)
    tables = build_tables(config.sparse, FEATURES, NUM_EMBEDDINGS)
    plan, _ = plan_sharding(
        model, build_topology(world, "cpu"), ROWS_PER_RANK,
        build_constraints(config.sharding, tables, "cpu"), dist.GroupMember.WORLD,
    )
    sharded = shard_model(model, runtime, plan)
    _copy_weights(sharded, initial)
    pipeline = TrainPipelineSparseDist(sharded, build_optimizer(sharded, config.optim), runtime.device)

    table_params = [p for n, p in reference.named_parameters() if "embedding_bags" in n]
    dense_params = [p for n, p in reference.named_parameters() if "embedding_bags" not in n]
    sparse_kwargs = {"lr": 0.1} if sparse_optimizer == "sgd" else {"lr": 0.1, "eps": config.optim.eps}
    reference_optimizers = [REFERENCE_OPTIMIZERS[sparse_optimizer](table_params, **sparse_kwargs),
                            torch.optim.SGD(dense_params, lr=0.1)]

    generator = torch.Generator().manual_seed(1)
    global_batches = [random_batch(FEATURES, NUM_DENSE, NUM_EMBEDDINGS, ROWS_PER_RANK * world, generator) for _ in range(STEPS)]
    local_batches = iter([rank_slice(b, runtime.rank, world) for b in global_batches])
    worst_logit = 0.0
    for global_batch in global_batches:
        output = pipeline.progress(local_batches)
        for opt in reference_optimizers:
            opt.zero_grad()
        loss, ref_out = reference(global_batch)
        loss.backward()
        for opt in reference_optimizers:
            opt.step()
        mine = ref_out.logits[runtime.rank * ROWS_PER_RANK:(runtime.rank + 1) * ROWS_PER_RANK]
        worst_logit = max(worst_logit, (output.logits - mine).abs().max().item())
    with pytest.raises(StopIteration):
        pipeline.progress(local_batches)  # every batch was executed, none left behind
    return {
        "types": sharding_types_by_table(plan),
        "logit_diff": worst_logit,
        "param_diff": _max_param_diff(pipeline.detach(), reference.state_dict()),
        "moved": max((reference.state_dict()[k] - v).abs().max().item() for k, v in initial.items()),
    }


@pytest.fixture(scope="module")
def results() -> dict:
    """All cases in one 2-rank job (process start-up dominates a case's cost): case -> per-rank results."""
    per_rank = run_on_ranks(_run_cases, 2)
    return {case: [rank_results[i] for rank_results in per_rank] for i, case in enumerate(CASES)}


def _run_cases(runtime: Runtime) -> list:
    return [train_both(runtime, *case) for case in CASES]


@pytest.mark.parametrize("sharding_type,sparse_optimizer", CASES)
def test_sharded_training_equals_unsharded(results, sharding_type, sparse_optimizer):
    for rank, result in enumerate(results[(sharding_type, sparse_optimizer)]):
        assert set(result["types"].values()) == {sharding_type}, result["types"]
        assert result["moved"] > 1e-3, "training did not change the weights; the comparison would be vacuous"
        assert result["logit_diff"] < 1e-5, f"rank {rank}: predictions differ by {result['logit_diff']}"
        assert result["param_diff"] < 1e-5, f"rank {rank}: parameters differ by {result['param_diff']}"
