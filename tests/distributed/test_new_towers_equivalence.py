"""DCNv3 and MaskNet, sharded on 2 real gloo ranks, train exactly like one unsharded process.

Same protocol as :mod:`tests.distributed.test_sharding_equivalence` (same weights, same
global batches, ``TrainPipelineSparseDist`` with the fused table optimizer on the sharded
side), with one difference in the reference loss: it is the *mean over the ranks' slices*
of the per-slice loss, which is what data parallelism optimises. For plain BCE with
equal slices that is the global-batch loss; for DCNv3's Tri-BCE it is not, because each
rank weights its branch terms by its own ``max(0, BCE_k - BCE)`` (like batch-norm
statistics, the weights are per rank). Dropout is off so both sides draw no random masks.
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
from torchrec_app.config import resolve_config
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
CASES = {  # name -> (overrides, sharding type)
    "dcnv3": (["model.name=dcnv3", "model.dcnv3.num_deep_layers=2", "model.dcnv3.num_shallow_layers=2",
               "model.dcnv3.deep_dropout=0", "model.dcnv3.shallow_dropout=0"], "row_wise"),
    "masknet_parallel": (["model.name=masknet", "model.masknet.structure=parallel", "model.masknet.num_blocks=2",
                          "model.masknet.block_dim=8"], "table_wise"),
}


def train_both(runtime: Runtime, overrides: list[str], sharding_type: str) -> dict:
    config = resolve_config("tiny", [*overrides, "sparse.embedding_dim=8", "sparse.dims=b:16",
                                     f"sharding.types={sharding_type}", "optim.sparse=sgd", "optim.sparse_lr=0.1",
                                     "optim.dense=sgd", "optim.dense_lr=0.1"])
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
        per_rank = [reference(rank_slice(global_batch, r, world)) for r in range(world)]
        torch.stack([loss for loss, _ in per_rank]).mean().backward()
        reference_optimizer.step()
        worst_logit = max(worst_logit, (output.logits - per_rank[runtime.rank][1].logits).abs().max().item())
    with pytest.raises(StopIteration):
        pipeline.progress(local_batches)
    return {
        "types": sharding_types_by_table(plan),
        "logit_diff": worst_logit,
        "param_diff": _max_param_diff(pipeline.detach(), reference.state_dict()),
        "moved": max((reference.state_dict()[k] - v).abs().max().item() for k, v in initial.items()),
    }


def _run_cases(runtime: Runtime) -> dict:
    return {name: train_both(runtime, *case) for name, case in CASES.items()}


@pytest.fixture(scope="module")
def results() -> dict:
    """Both cases in one 2-rank job: name -> per-rank results."""
    per_rank = run_on_ranks(_run_cases, 2)
    return {name: [rank_results[name] for rank_results in per_rank] for name in CASES}


@pytest.mark.parametrize("name", list(CASES))
def test_sharded_training_equals_unsharded(results, name):
    sharding_type = CASES[name][1]
    for rank, result in enumerate(results[name]):
        assert set(result["types"].values()) == {sharding_type}, result["types"]
        assert result["moved"] > 1e-3, "training did not change the weights; the comparison would be vacuous"
        assert result["logit_diff"] < 1e-5, f"rank {rank}: predictions differ by {result['logit_diff']}"
        assert result["param_diff"] < 1e-5, f"rank {rank}: parameters differ by {result['param_diff']}"
