"""A quotient-remainder model, sharded on 2 real gloo ranks, trains exactly like one unsharded process.

The partition tables ``t_<f>__p<j>`` are ordinary tables, so the planner places them
with the sharding type asked for (TW, RW, CW) and ``DistributedModelParallel`` shards
them; the id transform runs on each rank's batch KJT before the input all-to-all. Same
protocol as ``test_sharding_equivalence.py``: same initial weights, same global batches
(multi-hot, up to 3 ids per row, so mult's per-position lookup is exercised), sharded
side through ``TrainPipelineSparseDist`` with the fused table optimizer.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.distributed as dist
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

from tests.batches import random_batch, rank_slice
from tests.distributed.test_sharding_equivalence import _copy_weights, _max_param_diff
from tests.multiprocess import run_on_ranks
from torchrec_app.config import build_recipe
from torchrec_app.distributed.model_parallel import shard_model
from torchrec_app.distributed.planning import build_constraints, build_topology, plan_sharding, sharding_types_by_table
from torchrec_app.distributed.runtime import Runtime
from torchrec_app.models.ctr import build_model
from torchrec_app.models.sparse import build_tables
from torchrec_app.training.optimizers import apply_sparse_optimizer, build_optimizer

FEATURES = ["a", "b", "c"]
NUM_EMBEDDINGS = {"a": 100, "b": 64, "c": 12}
NUM_DENSE = 4
ROWS_PER_RANK = 16
STEPS = 3
CASES = [  # (sharding type, compression of a and b)
    ("table_wise", "qr:8:mult"),
    ("row_wise", "qr:8:mult"),
    ("column_wise", "mr:3:add"),
    ("table_wise", "qr:8:concat"),
]


def _config(sharding_type: str, spec: str):
    config = build_recipe("tiny")
    return replace(
        config,
        sparse=replace(config.sparse, embedding_dim=8, dims={}, compress={"a": spec, "b": spec}, compress_max_bag=3),
        sharding=replace(config.sharding, types=[sharding_type]),
        optim=replace(config.optim, sparse="sgd", sparse_lr=0.1, dense="sgd", dense_lr=0.1),
    )


def train_both(runtime: Runtime, sharding_type: str, spec: str) -> dict:
    config = _config(sharding_type, spec)
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
    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)

    generator = torch.Generator().manual_seed(1)
    global_batches = [random_batch(FEATURES, NUM_DENSE, NUM_EMBEDDINGS, ROWS_PER_RANK * world, generator) for _ in range(STEPS)]
    local_batches = iter([rank_slice(b, runtime.rank, world) for b in global_batches])
    worst_logit = 0.0
    for global_batch in global_batches:
        output = pipeline.progress(local_batches)
        reference_optimizer.zero_grad()
        loss, ref_out = reference(global_batch)
        loss.backward()
        reference_optimizer.step()
        mine = ref_out.logits[runtime.rank * ROWS_PER_RANK:(runtime.rank + 1) * ROWS_PER_RANK]
        worst_logit = max(worst_logit, (output.logits - mine).abs().max().item())
    return {
        "types": sharding_types_by_table(plan),
        "tables": sorted(t.name for t in tables),
        "logit_diff": worst_logit,
        "param_diff": _max_param_diff(pipeline.detach(), reference.state_dict()),
        "moved": max((reference.state_dict()[k] - v).abs().max().item() for k, v in initial.items()),
    }


@pytest.fixture(scope="module")
def results() -> dict:
    """All cases in one 2-rank job: case -> per-rank results."""
    per_rank = run_on_ranks(_run_cases, 2)
    return {case: [rank_results[i] for rank_results in per_rank] for i, case in enumerate(CASES)}


def _run_cases(runtime: Runtime) -> list:
    return [train_both(runtime, *case) for case in CASES]


@pytest.mark.parametrize("sharding_type,spec", CASES)
def test_sharded_qr_equals_unsharded(results, sharding_type, spec):
    for rank, result in enumerate(results[(sharding_type, spec)]):
        partitions = 3 if spec.startswith("mr") else 2
        expected = sorted([f"t_{f}__p{j}" for f in ("a", "b") for j in range(partitions)] + ["t_c"])
        assert result["tables"] == expected
        assert set(result["types"]) == set(expected), "every partition table is planned like any other"
        assert set(result["types"].values()) == {sharding_type}, result["types"]
        assert result["moved"] > 1e-3, "training did not change the weights; the comparison would be vacuous"
        assert result["logit_diff"] < 1e-5, f"rank {rank}: predictions differ by {result['logit_diff']}"
        assert result["param_diff"] < 1e-5, f"rank {rank}: parameters differ by {result['param_diff']}"
