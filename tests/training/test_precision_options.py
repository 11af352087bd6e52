"""Memory/precision options meant for GPUs, exercised where they run on CPU too:
fp16 tables, quantized all-to-alls (fp16 forward, bf16 backward), bf16 autocast; and the
UVM-caching kernel, which is planned for CUDA without a GPU and refused on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.multiprocess import run_on_ranks
from torchrec_app.config import ConfigError, resolve_config
from torchrec_app.distributed.planning import build_constraints, build_topology, plan_sharding, plan_tables
from torchrec_app.distributed.runtime import Runtime
from torchrec_app.models.ctr import build_model
from torchrec_app.models.sparse import build_tables
from torchrec_app.training.run_dir import RunDir
from torchrec_app.training.trainer import Trainer

OPTIONS = ["sparse.data_type=fp16", "sharding.qcomms_forward=fp16", "sharding.qcomms_backward=bf16",
           "train.amp=bf16", "sharding.types=row_wise", "train.epochs=2", "train.batch_size=256"]


def train_with_options(runtime: Runtime, data: str, out: str) -> dict:
    trainer = Trainer(resolve_config("tiny", OPTIONS), runtime, Path(data), RunDir(Path(out), enabled=runtime.is_main))
    dtypes = {str(shard.tensor.dtype) for name, value in trainer.model.state_dict().items()
              if "embedding_bags" in name for shard in value.local_shards()}
    summary = trainer.train()
    return {"dtypes": dtypes, "valid_auc": summary["valid_auc"], "steps": summary["steps"]}


def test_fp16_tables_quantized_comms_and_bf16_autocast_train(tiny_dataset, tmp_path):
    result, _ = run_on_ranks(train_with_options, 2, str(tiny_dataset), str(tmp_path / "run"))
    assert result["dtypes"] == {"torch.float16"}
    assert result["steps"] > 0 and result["valid_auc"] > 0.6, result


def test_uvm_caching_kernel_is_refused_on_cpu():
    config = resolve_config("tiny", ["sharding.compute_kernel=fused_uvm_caching"])
    tables = build_tables(config.sparse, ["C1", "C2"], {"C1": 100, "C2": 50})
    with pytest.raises(ConfigError, match="compute_kernel=fused_uvm_caching cannot run on cpu .* kernels there: .*fused"):
        build_constraints(config.sharding, tables, "cpu")


def test_uvm_caching_kernel_is_planned_for_cuda_without_a_gpu():
    config = resolve_config("tiny", ["sharding.compute_kernel=fused_uvm_caching", "sharding.cache_load_factor=0.1",
                                     "sharding.types=table_wise,row_wise"])
    features, sizes = ["C1", "C2"], {"C1": 100_000, "C2": 50_000}
    constraints = build_constraints(config.sharding, build_tables(config.sparse, features, sizes), "cuda")
    assert constraints["t_C1"].cache_params.load_factor == 0.1
    model = build_model(config, 4, features, sizes, device="meta")
    plan, _ = plan_sharding(model, build_topology(4, "cuda", 4, hbm_gb=16), 1024, constraints)
    assert {s.compute_kernel for s in plan_tables(plan).values()} == {"fused_uvm_caching"}


@pytest.mark.parametrize("override,message", [
    ("sparse.data_type=int8", "sparse.data_type='int8' is not one of fp32, fp16, bf16"),
    ("train.amp=fp16", "train.amp='fp16' is not one of , bf16"),
    ("sharding.cache_load_factor=1.5", "sharding.cache_load_factor must be in"),
    ("sharding.qcomms_forward=int4", "sharding.qcomms_forward='int4' is not one of"),
])
def test_bad_precision_options(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        resolve_config("tiny", [override])
