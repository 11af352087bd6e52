"""A plan JSON from `torchrec-app plan` is the plan 2 real gloo ranks shard and train with.

The plan is made by the CLI (no process group), saved, loaded on each rank with the
trainer's loader and checks, and handed to ``DistributedModelParallel``; each rank's
local shards must be exactly the JSON's shards for that rank, and a pipelined training
step must run on them.
"""

from __future__ import annotations

import json

import torch

from tests.batches import random_batch, rank_slice
from tests.multiprocess import run_on_ranks
from torchrec_app.cli import main
from torchrec_app.config import resolve_config
from torchrec_app.distributed.build import build_sharded_model
from torchrec_app.distributed.runtime import Runtime
from torchrec_app.models import task_for
from torchrec_app.tools.plan.model import recipe_metadata
from torchrec_app.training.optimizers import build_optimizer

OVERRIDES = ["sharding.per_table=t_C1:row_wise,t_C2:table_wise,t_C3:data_parallel"]
ROWS_PER_RANK = 8


def shard_and_step(runtime: Runtime, plan_path: str) -> dict:
    from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

    config = resolve_config("tiny", [*OVERRIDES, f"sharding.plan_file={plan_path}"])
    meta = recipe_metadata(config)
    model = task_for(config.model.name).build_model(config, meta, "meta")
    sharded, _ = build_sharded_model(model, runtime, sharding=config.sharding, optim=config.optim,
                                     batch_size=ROWS_PER_RANK)  # the trainer's path: the file's plan, checked
    pipeline = TrainPipelineSparseDist(sharded, build_optimizer(sharded, config.optim), runtime.device)
    generator = torch.Generator().manual_seed(0)
    batches = [random_batch(meta.sparse_features, len(meta.dense_features), meta.num_embeddings,
                            ROWS_PER_RANK * runtime.world_size, generator) for _ in range(2)]
    local = iter([rank_slice(b, runtime.rank, runtime.world_size) for b in batches])
    losses = [pipeline.progress(local).loss.item() for _ in range(2)]  # ModelOutput.loss
    shards = {}
    for name, value in pipeline.detach().state_dict().items():
        if "embedding_bags" in name and hasattr(value, "local_shards"):
            table = name.split(".")[-2]
            shards[table] = sorted((list(s.metadata.shard_offsets), list(s.metadata.shard_sizes)) for s in value.local_shards())
    return {"losses": losses, "shards": shards}


def test_plan_json_round_trips_into_two_rank_gloo_training(tmp_path):
    path = tmp_path / "plan.json"
    assert main(["plan", "--recipe", "tiny", "--device", "cpu", "--world-size", "2", "--no-stats",
                 "--json", str(path), *OVERRIDES]) == 0
    report = json.loads(path.read_text())
    planned = report["plan"]["model.sparse_arch.embedding_bag_collection"]
    assert planned["t_C1"]["sharding_type"] == "row_wise" and planned["t_C2"]["sharding_type"] == "table_wise"

    results = run_on_ranks(shard_and_step, 2, str(path))

    for rank, result in enumerate(results):
        assert all(torch.isfinite(torch.tensor(result["losses"])))
        for table, entry in planned.items():
            if entry["sharding_type"] == "data_parallel":
                continue
            expected = sorted((s["offsets"], s["sizes"]) for s in entry["shards"] if s["placement"].startswith(f"rank:{rank}/"))
            assert result["shards"].get(table, []) == expected, (rank, table)
