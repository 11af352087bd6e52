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

from tests.distributed.equivalence import assert_equivalent, train_sharded_and_reference
from tests.multiprocess import run_on_ranks
from torchrec_app.config import build_recipe
from torchrec_app.distributed.runtime import Runtime

FEATURES = ["a", "b", "c"]
NUM_EMBEDDINGS = {"a": 100, "b": 64, "c": 12}
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
    return train_sharded_and_reference(
        runtime, _config(sharding_type, spec), FEATURES, NUM_EMBEDDINGS,
        lambda reference: [torch.optim.SGD(reference.parameters(), lr=0.1)], STEPS,
    )


@pytest.fixture(scope="module")
def results() -> dict:
    """All cases in one 2-rank job: case -> per-rank results."""
    per_rank = run_on_ranks(_run_cases, 2)
    return {case: [rank_results[i] for rank_results in per_rank] for i, case in enumerate(CASES)}


def _run_cases(runtime: Runtime) -> list:
    return [train_both(runtime, *case) for case in CASES]


@pytest.mark.parametrize("sharding_type,spec", CASES)
def test_sharded_qr_equals_unsharded(results, sharding_type, spec):
    for result in results[(sharding_type, spec)]:
        partitions = 3 if spec.startswith("mr") else 2
        expected = sorted([f"t_{f}__p{j}" for f in ("a", "b") for j in range(partitions)] + ["t_c"])
        assert result["tables"] == expected
        assert set(result["types"]) == set(expected), "every partition table is planned like any other"
    assert_equivalent(results[(sharding_type, spec)], sharding_type)
