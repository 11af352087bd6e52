"""Every sharding type, on 2 real gloo ranks, trains exactly like one unsharded process.

The protocol is :mod:`tests.distributed.equivalence`'s: same weights, same global
batches, the sharded side stepped as the trainer steps it, the reference plain.

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
from torchrec.optim import RowWiseAdagrad

from tests.distributed.equivalence import assert_equivalent, train_sharded_and_reference
from tests.multiprocess import run_on_ranks
from torchrec_app.config import build_recipe
from torchrec_app.distributed.runtime import Runtime

FEATURES = ["a", "b", "c", "d"]
NUM_EMBEDDINGS = {"a": 100, "b": 64, "c": 20, "d": 12}
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
    ("data_parallel", "adagrad"),  # a replicated table gets the table optimizer, not the towers' (SGD here)
]


def _config(sharding_type: str, sparse_optimizer: str):
    config = build_recipe("tiny")
    return replace(
        config,
        sparse=replace(config.sparse, embedding_dim=8, dims={"b": 16}),
        sharding=replace(config.sharding, types=[sharding_type]),
        optim=replace(config.optim, sparse=sparse_optimizer, sparse_lr=0.1, dense="sgd", dense_lr=0.1),
    )


def train_both(runtime: Runtime, sharding_type: str, sparse_optimizer: str) -> dict:
    config = _config(sharding_type, sparse_optimizer)
    sparse_kwargs = {"lr": 0.1} if sparse_optimizer == "sgd" else {"lr": 0.1, "eps": config.optim.eps}

    def reference_optimizers(reference):
        tables = [p for n, p in reference.named_parameters() if "embedding_bags" in n]
        dense = [p for n, p in reference.named_parameters() if "embedding_bags" not in n]
        return [REFERENCE_OPTIMIZERS[sparse_optimizer](tables, **sparse_kwargs), torch.optim.SGD(dense, lr=0.1)]

    return train_sharded_and_reference(runtime, config, FEATURES, NUM_EMBEDDINGS, reference_optimizers, STEPS)


@pytest.fixture(scope="module")
def results() -> dict:
    """All cases in one 2-rank job (process start-up dominates a case's cost): case -> per-rank results."""
    per_rank = run_on_ranks(_run_cases, 2)
    return {case: [rank_results[i] for rank_results in per_rank] for i, case in enumerate(CASES)}


def _run_cases(runtime: Runtime) -> list:
    return [train_both(runtime, *case) for case in CASES]


@pytest.mark.parametrize("sharding_type,sparse_optimizer", CASES)
def test_sharded_training_equals_unsharded(results, sharding_type, sparse_optimizer):
    assert_equivalent(results[(sharding_type, sparse_optimizer)], sharding_type)
