"""Sequential recommenders on 2 real gloo ranks train and score exactly like one unsharded process.

Training (the protocol of :mod:`tests.distributed.equivalence`): the same initial weights,
the same per-rank batches; the sharded side is planned and stepped as the trainer does it
(meta model, fused in-backward table optimizer, ``TrainPipelineSparseDist``, which has to
trace the model's forward), the reference is the plain model with ``torch.optim`` on the
mean of the ranks' losses (each rank's loss is the mean over its own positions; DDP and
TorchRec's all-to-all backward both average gradients over ranks).

Scoring: after training, every rank scores its evaluation users with the sharded table
(:mod:`torchrec_app.models.sequential.scoring`: no rank holds the whole table) and the
ranks and top-K lists equal those of a full score matrix computed from the reference.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
from torchrec.optim import RowWiseAdagrad

from tests.distributed.equivalence import copy_weights, max_param_diff, run_cases_on_ranks
from torchrec_app.config.errors import ConfigError
from torchrec_app.config.schema import OptimConfig, ShardingConfig
from torchrec_app.config.sequences import RankingEvalConfig, SequenceModelConfig
from torchrec_app.data.sequences.batches import ItemSide, iter_batches
from torchrec_app.distributed.build import build_sharded_model
from torchrec_app.distributed.planning import sharding_types_by_table
from torchrec_app.distributed.runtime import Runtime
from torchrec_app.metrics.ranking import rank_full_scores
from torchrec_app.models.sequential.model import batcher_for, build_sequential_model
from torchrec_app.models.sequential.scoring import NextItemEvaluator
from torchrec_app.training.optimizers import build_optimizer

NUM_ITEMS = 40
BATCH = 4
STEPS = 3
CASES = [  # (model, item table sharding, loss, table optimizer, side information)
    ("sasrec", "row_wise", "full", "sgd", False),
    ("sasrec", "row_wise", "sampled", "rowwise_adagrad", False),
    ("sasrec", "table_wise", "in_batch", "sgd", False),
    ("sasrec", "column_wise", "full", "sgd", False),  # trains; scoring refuses partial rows
    ("sasrec", "row_wise", "full", "sgd", True),  # side tables placed freely (never data-parallel on CPU)
    ("bert4rec", "row_wise", "full", "sgd", False),
    ("gru4rec", "row_wise", "sampled", "sgd", False),
]


def _side() -> ItemSide:
    rng = np.random.default_rng(0)
    genres = rng.integers(0, 4, size=(NUM_ITEMS + 1, 2))
    genres[0] = 0
    return ItemSide(genre_ids=genres, year_ids=rng.integers(0, 5, size=NUM_ITEMS + 1))


def _rows(kind: str, count: int, seed: int) -> pa.Table:
    """Random training rows (target 0) or evaluation rows (history + target)."""
    rng = np.random.default_rng(seed)
    items = [rng.choice(np.arange(1, NUM_ITEMS + 1), size=int(rng.integers(1, 9)), replace=False) for _ in range(count)]
    targets = [0] * count if kind == "train" else [int(rng.integers(1, NUM_ITEMS + 1)) for _ in range(count)]
    if kind == "train":
        items = [x if len(x) > 1 else np.append(x, (x[0] % NUM_ITEMS) + 1) for x in items]
    return pa.table({"user": pa.array(np.arange(count) + 100 * seed, pa.int32()),
                     "items": pa.array([x.tolist() for x in items], pa.list_(pa.int32())),
                     "target": pa.array(targets, pa.int32())})


def _case(runtime: Runtime, name: str, sharding_type: str, loss: str, sparse: str, side_info: bool) -> dict:
    world, rank = runtime.world_size, runtime.rank
    dim = 256 if sharding_type == "column_wise" else 8  # TorchRec cuts columns in blocks of >= 128
    config = SequenceModelConfig(max_len=6, embedding_dim=dim, num_blocks=1, num_heads=2, dropout=0.0, loss=loss,
                                 num_negatives=7, mask_prob=0.3, side_info=side_info)
    side = _side() if side_info else None
    side_sizes = (4, 5)
    torch.manual_seed(0)
    reference = build_sequential_model(name, config, NUM_ITEMS, 2, side_sizes, device="cpu")
    initial = {k: v.clone() for k, v in reference.state_dict().items()}

    model = build_sequential_model(name, config, NUM_ITEMS, 2, side_sizes, device="meta")
    optim = OptimConfig(sparse=sparse, sparse_lr=0.1, dense="sgd", dense_lr=0.1)
    sharded, plan = build_sharded_model(model, runtime, sharding=ShardingConfig(per_table={"t_item": sharding_type}),
                                        optim=optim, batch_size=BATCH)
    copy_weights(sharded, initial)
    pipeline = TrainPipelineSparseDist(sharded, build_optimizer(sharded, optim), runtime.device)

    tables = [p for n, p in reference.named_parameters() if n.startswith("embeddings.")]
    dense = [p for n, p in reference.named_parameters() if not n.startswith("embeddings.")]
    sparse_optimizer = torch.optim.SGD(tables, lr=0.1) if sparse == "sgd" else RowWiseAdagrad(tables, lr=0.1, eps=optim.eps)
    optimizers = [sparse_optimizer, torch.optim.SGD(dense, lr=0.1)]

    batcher = batcher_for(name, config, NUM_ITEMS, side, seed=5)
    train = _rows("train", BATCH * world * STEPS, seed=1)
    per_rank = [list(iter_batches(train, batcher, BATCH, r, world)) for r in range(world)]
    local = iter(per_rank[rank])
    for step in range(STEPS):
        pipeline.progress(local)
        for optimizer in optimizers:
            optimizer.zero_grad()
        losses = []
        for r in range(world):  # bert4rec's masks follow a step counter that every rank advances once per step
            if not reference.tower.causal:
                reference.tower.mask_step.fill_(step)
            losses.append(reference(per_rank[r][step])[0])
        (sum(losses) / world).backward()
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

    # -- scoring with the sharded table vs a full score matrix from the reference --
    evaluation = _rows("eval", BATCH * world + 3, seed=2)
    trained.eval()
    reference.eval()
    evaluator = NextItemEvaluator(RankingEvalConfig(save_top_k=5, item_block=16))
    try:
        for batch in iter_batches(evaluation, batcher, BATCH, rank, world):
            evaluator.update(trained, batch)
    except ConfigError as err:
        return {**result, "scoring_error": str(err)}
    table = evaluator.metrics.per_user_table()
    weights = reference.embeddings.embeddings["t_item"].weight.detach()
    users, targets, seen, vectors = [], [], [], []
    with torch.no_grad():
        for batch in iter_batches(evaluation, batcher, 64):
            real = batch.weights > 0
            vectors.append(reference.user_vectors(batch)[real])
            users += batch.users[real].tolist()
            targets += batch.targets[real].tolist()
            offsets = batch.seen_offsets.tolist()
            seen += [batch.seen_values[offsets[i]:offsets[i + 1]].tolist() for i in range(int(real.sum()))]
    ranks, top, _ = rank_full_scores(torch.cat(vectors) @ weights.t(), torch.tensor(targets)[:, None], seen, k=5, min_item=1)
    order = np.argsort(users, kind="stable")
    result["ranks"] = (table.column("ranks").to_pylist(), [[ranks[i, 0].item()] for i in order])
    result["top"] = (table.column("top_k").to_pylist(), [top[i].tolist() for i in order])
    result["metrics"] = evaluator.compute()
    return result


@pytest.fixture(scope="module")
def results() -> dict:
    return run_cases_on_ranks(_case, CASES)


@pytest.mark.parametrize("case", CASES, ids=["-".join(str(x) for x in c) for c in CASES])
def test_sharded_sequential_model_trains_and_scores_like_unsharded(results, case):
    _, sharding_type, _, _, _ = case
    for rank, result in enumerate(results[case]):
        assert result["types"]["t_item"] == sharding_type, result["types"]
        assert "data_parallel" not in result["types"].values(), result["types"]
        assert result["moved"] > 1e-3, "training did not change the weights; the comparison would be vacuous"
        assert result["param_diff"] < 1e-5, f"rank {rank}: parameters differ by {result['param_diff']}"
        if sharding_type == "column_wise":
            assert "t_item is sharded by columns" in result["scoring_error"] and "row_wise" in result["scoring_error"]
            continue
        sharded_ranks, reference_ranks = result["ranks"]
        assert sharded_ranks == reference_ranks, f"rank {rank}: ranks differ"
        sharded_top, reference_top = result["top"]
        assert sharded_top == reference_top, f"rank {rank}: top-K lists differ"
    if sharding_type != "column_wise":
        assert results[case][0]["metrics"] == results[case][1]["metrics"]
