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

import pytest
import torch

from tests.batches import rank_slice
from tests.distributed.equivalence import assert_equivalent, train_sharded_and_reference
from tests.multiprocess import run_on_ranks
from torchrec_app.config import resolve_config
from torchrec_app.distributed.runtime import Runtime

FEATURES = ["a", "b", "c", "d"]
NUM_EMBEDDINGS = {"a": 100, "b": 64, "c": 20, "d": 12}
STEPS = 4
CASES = {  # name -> (overrides, sharding type)
    "dcnv3": (["model.name=dcnv3", "model.dcnv3.num_deep_layers=2", "model.dcnv3.num_shallow_layers=2",
               "model.dcnv3.deep_dropout=0", "model.dcnv3.shallow_dropout=0"], "row_wise"),
    "masknet_parallel": (["model.name=masknet", "model.masknet.structure=parallel", "model.masknet.num_blocks=2",
                          "model.masknet.block_dim=8"], "table_wise"),
}


def per_rank_slice_loss(reference, batch, rank: int, world: int):
    """Tri-BCE weights depend on each rank's own batch, so the reference is the mean of the
    per-rank-slice losses (equal to the global-batch loss only without auxiliary logits)."""
    per_rank = [reference(rank_slice(batch, r, world)) for r in range(world)]
    return torch.stack([loss for loss, _ in per_rank]).mean(), per_rank[rank][1].predictions["label"]


def train_both(runtime: Runtime, overrides: list[str], sharding_type: str) -> dict:
    config = resolve_config("tiny", [*overrides, "sparse.embedding_dim=8", "sparse.dims=b:16",
                                     f"sharding.types={sharding_type}", "optim.sparse=sgd", "optim.sparse_lr=0.1",
                                     "optim.dense=sgd", "optim.dense_lr=0.1"])
    return train_sharded_and_reference(
        runtime, config, FEATURES, NUM_EMBEDDINGS,
        lambda reference: [torch.optim.SGD(reference.parameters(), lr=0.1)], STEPS, per_rank_slice_loss,
    )


def _run_cases(runtime: Runtime) -> dict:
    return {name: train_both(runtime, *case) for name, case in CASES.items()}


@pytest.fixture(scope="module")
def results() -> dict:
    """Both cases in one 2-rank job: name -> per-rank results."""
    per_rank = run_on_ranks(_run_cases, 2)
    return {name: [rank_results[name] for rank_results in per_rank] for name in CASES}


@pytest.mark.parametrize("name", list(CASES))
def test_sharded_training_equals_unsharded(results, name):
    assert_equivalent(results[name], CASES[name][1])
