"""The feed model on 2 real gloo ranks trains and scores exactly like one unsharded process.

The sequence path is what is new: the candidate and the five histories read one item table
(``t_item``, an ``EmbeddingCollection`` shared by six features) placed by the planner, the
histories go through the encoders as jagged tensors, and the pooled features go through the
``EmbeddingBagCollection`` as for Criteo. The protocol is :mod:`tests.distributed.equivalence`'s:
the same initial weights and per-rank batches; the sharded side is built by
``build_sharded_model`` (meta model, fused in-backward table optimizer, plan, DMP) and stepped by
``TrainPipelineSparseDist`` (which traces the model's forward); the reference is the plain model
with ``torch.optim`` on the mean of the ranks' losses. After training, the task's evaluator on
the ranks' rows gives the metrics of the reference's predictions on all rows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
from torchrec.optim import RowWiseAdagrad

from tests.distributed.equivalence import copy_weights, max_param_diff, run_cases_on_ranks
from tests.models.feed.batches import INPUTS, feed_batch, random_rows, without_history
from torchrec_app.config.feed import FeedModelConfig
from torchrec_app.config.schema import CrossConfig, ModelConfig, OptimConfig, ShardingConfig, SparseConfig
from torchrec_app.data.feed.batch import OBJECTIVES
from torchrec_app.distributed.build import build_sharded_model
from torchrec_app.distributed.planning import sharding_types_by_table
from torchrec_app.distributed.runtime import Runtime
from torchrec_app.metrics.binary import binary_metrics
from torchrec_app.metrics.multitask import MultiTaskEvaluator
from torchrec_app.models.feed.model import build_feed_model
from torchrec_app.training.optimizers import build_optimizer

BATCH = 6
STEPS = 3
CASES = [  # (encoder, multi-task heads, t_item sharding, table optimizer)
    ("lstm", "shared_bottom", "row_wise", "sgd"),
    ("din", "mmoe", "table_wise", "rowwise_adagrad"),
    ("transformer", "ple", "row_wise", "sgd"),
    ("none", "shared_bottom", "row_wise", "sgd"),  # the no-history baseline: t_item reads the candidate only
]


def _config(encoder: str, multitask: str) -> ModelConfig:
    feed = FeedModelConfig(encoder=encoder, multitask=multitask, item_dim=4, num_heads=2, max_history=6, num_experts=2,
                           expert_dims=[8], tower_dims=[4], attention_dims=[8], loss_weights={"chat": 2.0})  # fmt: skip
    return ModelConfig(name="feed", dense_arch=[8], cross=CrossConfig(num_layers=2, low_rank=8), feed=feed)


def _case(runtime: Runtime, encoder: str, multitask: str, item_sharding: str, sparse: str) -> dict:
    world, rank = runtime.world_size, runtime.rank
    config, tables = _config(encoder, multitask), SparseConfig(embedding_dim=4)
    torch.manual_seed(0)
    reference = build_feed_model(config, tables, INPUTS, "cpu")
    initial = {k: v.clone() for k, v in reference.state_dict().items()}

    optim = OptimConfig(sparse=sparse, sparse_lr=0.1, dense="sgd", dense_lr=0.1)
    sharded, plan = build_sharded_model(build_feed_model(config, tables, INPUTS, "meta"), runtime,
                                        sharding=ShardingConfig(per_table={"t_item": item_sharding}), optim=optim, batch_size=BATCH)  # fmt: skip
    copy_weights(sharded, initial)
    pipeline = TrainPipelineSparseDist(sharded, build_optimizer(sharded, optim), runtime.device)

    embedding = [p for n, p in reference.named_parameters() if ".embeddings." in n or "embedding_bags." in n]
    dense = [p for n, p in reference.named_parameters() if not (".embeddings." in n or "embedding_bags." in n)]
    table_optimizer = torch.optim.SGD(embedding, lr=0.1) if sparse == "sgd" else RowWiseAdagrad(embedding, lr=0.1, eps=optim.eps)
    optimizers = [table_optimizer, torch.optim.SGD(dense, lr=0.1)]

    # every rank's batch: real rows with histories of 0..6 items per action, and a padding row
    make = without_history if encoder == "none" else (lambda batch: batch)
    per_rank = [[make(feed_batch(random_rows(BATCH - 1, seed=100 * r + s) + [{"item": None}])) for s in range(STEPS)] for r in range(world)]
    local = iter(per_rank[rank])
    for step in range(STEPS):
        pipeline.progress(local)
        for optimizer in optimizers:
            optimizer.zero_grad()
        (sum(reference(per_rank[r][step])[0] for r in range(world)) / world).backward()
        for optimizer in optimizers:
            optimizer.step()
    with pytest.raises(StopIteration):
        pipeline.progress(local)
    trained = pipeline.detach()
    result = {
        "types": sharding_types_by_table(plan),
        "param_diff": max_param_diff(trained, reference.state_dict()),
        "moved": max((reference.state_dict()[k] - v).abs().max().item() for k, v in initial.items() if v.is_floating_point()),
    }

    # -- scoring: the task's evaluator on each rank's rows vs the reference on all rows --
    evaluation = [[make(feed_batch(random_rows(BATCH, seed=1000 + 10 * r + s))) for s in range(2)] for r in range(world)]
    trained.eval()
    reference.eval()
    evaluator = MultiTaskEvaluator(list(OBJECTIVES))
    with torch.no_grad():
        for batch in evaluation[rank]:
            evaluator.update(trained, batch)
        outputs = [reference(batch)[1] for r in range(world) for batch in evaluation[r]]
    result["metrics"] = evaluator.compute()
    result["reference"] = {o: binary_metrics(torch.cat([out.predictions[o] for out in outputs]).numpy(),
                                             torch.cat([out.labels[o] for out in outputs]).numpy()) for o in OBJECTIVES}  # fmt: skip
    return result


@pytest.fixture(scope="module")
def results() -> dict:
    return run_cases_on_ranks(_case, CASES)


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_sharded_feed_model_trains_and_scores_like_unsharded(results, case):
    _, _, item_sharding, _ = case
    for rank, result in enumerate(results[case]):
        assert result["types"]["t_item"] == item_sharding, result["types"]
        assert {"t_user", "t_category", "t_keywords"} <= set(result["types"]), "the pooled tables are planned too"
        assert result["moved"] > 1e-3, "training did not change the weights; the comparison would be vacuous"
        assert result["param_diff"] < 1e-5, f"rank {rank}: parameters differ by {result['param_diff']}"
        for objective, expected in result["reference"].items():
            for name in ("auc", "logloss", "calibration", "rows"):
                got = result["metrics"][f"{objective}/{name}"]
                assert np.isclose(got, expected[name], atol=1e-5, equal_nan=True), (rank, objective, name, got, expected[name])
    assert results[case][0]["metrics"] == pytest.approx(results[case][1]["metrics"], nan_ok=True)
