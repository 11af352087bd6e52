"""Multi-VAE on 2 real gloo ranks (item table row-wise) trains and scores like one unsharded process.

The protocol of :mod:`tests.distributed.equivalence`: the same initial weights, the same
per-rank batches, the sharded side built by ``build_sharded_model`` and stepped by
``TrainPipelineSparseDist``; the reference is the plain model with ``torch.optim`` on the mean
of the ranks' losses. The reparameterisation noise is drawn from the same seed on both
sides (seeded before each step's forward), and the annealing clock of the reference is set
to the step, as each rank's advances once per step.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

from tests.distributed.equivalence import copy_weights, max_param_diff
from tests.multiprocess import run_on_ranks
from torchrec_app.config.general import MultiVaeConfig
from torchrec_app.config.schema import OptimConfig, ShardingConfig
from torchrec_app.config.sequences import RankingEvalConfig
from torchrec_app.data.user_items import UserItemsBatcher
from torchrec_app.distributed.build import build_sharded_model
from torchrec_app.distributed.planning import sharding_types_by_table
from torchrec_app.distributed.runtime import Runtime
from torchrec_app.metrics.ranking import metrics_from_ranks
from torchrec_app.models.general.multivae import MultiVae
from torchrec_app.models.general.scoring import UserItemsEvaluator
from torchrec_app.training.optimizers import build_optimizer

NUM_ITEMS, BATCH, STEPS = 30, 4, 3


def _rows(count: int, seed: int, targets: bool) -> pa.Table:
    rng = np.random.default_rng(seed)
    items = [rng.choice(np.arange(1, NUM_ITEMS + 1), size=int(rng.integers(1, 8)), replace=False).tolist() for _ in range(count)]
    held = [[int(x) for x in rng.choice(np.setdiff1d(np.arange(1, NUM_ITEMS + 1), i), size=2, replace=False)] if targets else []
            for i in items]  # fmt: skip
    return pa.table({"user": pa.array(np.arange(count), pa.int32()), "items": pa.array(items, pa.list_(pa.int32())),
                     "targets": pa.array(held, pa.list_(pa.int32()))})  # fmt: skip


def _batches(table: pa.Table, rank: int, world: int) -> list:
    """This rank's slice of each global batch of ``BATCH * world`` rows."""
    batcher, out = UserItemsBatcher(), []
    for start in range(0, table.num_rows, BATCH * world):
        out.append(batcher(table.slice(start + rank * BATCH, BATCH), BATCH))
    return out


def _case(runtime: Runtime) -> dict:
    world, rank = runtime.world_size, runtime.rank
    config = MultiVaeConfig(hidden_dim=8, latent_dim=4, input_dropout=0.0, anneal_cap=0.5, total_anneal_steps=2)
    torch.manual_seed(0)
    reference = MultiVae(NUM_ITEMS, config, device="cpu")
    initial = {k: v.clone() for k, v in reference.state_dict().items()}
    optim = OptimConfig(sparse="sgd", sparse_lr=0.5, dense="sgd", dense_lr=0.5)
    sharded, plan = build_sharded_model(MultiVae(NUM_ITEMS, config, device="meta"), runtime,
                                        sharding=ShardingConfig(per_table={"t_item": "row_wise"}), optim=optim, batch_size=BATCH)  # fmt: skip
    copy_weights(sharded, initial)
    pipeline = TrainPipelineSparseDist(sharded, build_optimizer(sharded, optim), runtime.device)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)

    train = _rows(BATCH * world * STEPS, seed=1, targets=False)
    per_rank = [_batches(train, r, world) for r in range(world)]
    local = iter(per_rank[rank])
    for step in range(STEPS):
        torch.manual_seed(100 * step + rank)  # the noise of this step's forward
        pipeline.progress(local)
        optimizer.zero_grad()
        losses = []
        for r in range(world):
            torch.manual_seed(100 * step + r)
            reference.tower.step.fill_(step)
            losses.append(reference(per_rank[r][step])[0])
        (sum(losses) / world).backward()
        optimizer.step()
    trained = pipeline.detach()
    result = {"types": sharding_types_by_table(plan), "param_diff": max_param_diff(trained, reference.state_dict()),
              "moved": max((reference.state_dict()[k] - v).abs().max().item() for k, v in initial.items() if v.is_floating_point())}  # fmt: skip

    trained.eval(), reference.eval()
    evaluation = _rows(BATCH * world, seed=2, targets=True)
    sharded_eval, reference_eval = UserItemsEvaluator(RankingEvalConfig(save_top_k=5)), UserItemsEvaluator(RankingEvalConfig(save_top_k=5))
    for batch in _batches(evaluation, rank, world):
        sharded_eval.update(trained, batch)
    for r in range(world):
        for batch in _batches(evaluation, r, world):
            reference_eval.update(reference, batch)
    result["sharded"] = sharded_eval.compute()
    ranks = torch.cat([r for r in reference_eval.metrics._ranks])  # every user, scored on this process: no collective
    result["reference"] = {name: float(v.mean()) for name, v in metrics_from_ranks(ranks, (10, 20)).items()}
    return result


def test_sharded_multivae_trains_and_scores_like_unsharded():
    for rank, result in enumerate(run_on_ranks(_case, 2)):
        assert result["types"]["t_item"] == "row_wise"
        assert result["moved"] > 1e-3, "training did not change the weights; the comparison would be vacuous"
        assert result["param_diff"] < 1e-5, f"rank {rank}: parameters differ by {result['param_diff']}"
        assert result["sharded"]["users"] == 2 * BATCH
        for name, value in result["reference"].items():
            assert abs(result["sharded"][name] - value) < 1e-12, (name, result["sharded"][name], value)
