"""The sharder: data-parallel tables get correct gradients from FBGEMM's dense lookup
(whatever PyTorch's warning says), and plans whose table precision cannot train are
refused when they are applied, before FBGEMM fails or training turns to NaN."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from fbgemm_gpu.split_embedding_configs import SparseType
from fbgemm_gpu.split_table_batched_embeddings_ops_common import PoolingMode
from fbgemm_gpu.split_table_batched_embeddings_ops_training import DenseTableBatchedEmbeddingBagsCodegen

from tests.multiprocess import run_on_ranks
from torchrec_app.config import ConfigError, resolve_config
from torchrec_app.distributed.build import shard_model
from torchrec_app.distributed.planning import plan_from_dict
from torchrec_app.distributed.runtime import Runtime
from torchrec_app.distributed.sharders import DENSE_LOOKUP_WARNING
from torchrec_app.models.ctr import build_model

TABLES = [(10, 4), (7, 8)]  # rows x dim
FEATURE_TABLE = [0, 1, 1]  # three features, the last two share table 1
LENGTHS = [2, 1, 1, 0, 2, 3]  # feature-major bags of a batch of 2: (f0, b0), (f0, b1), (f1, b0), ...
IDS = [1, 2, 2, 6, 0, 6, 6, 3, 5]


@pytest.mark.parametrize("precision", [SparseType.FP32, SparseType.FP16])
@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_data_parallel_lookup_gradient_equals_embedding_bag(precision, pooling):
    """torchrec's data-parallel kernel (``BatchedDenseEmbeddingBag``) is FBGEMM's
    ``DenseTableBatchedEmbeddingBagsCodegen``; backward through it warns "an autograd
    kernel was not registered ... silently incorrect behavior". Its gradient is
    nevertheless FBGEMM's own autograd function's, and equals plain PyTorch's."""
    tbe = DenseTableBatchedEmbeddingBagsCodegen(
        TABLES, feature_table_map=FEATURE_TABLE, pooling_mode=PoolingMode.SUM if pooling == "sum" else PoolingMode.MEAN,
        use_cpu=True, weights_precision=precision,
    )
    ids, lengths = torch.tensor(IDS), torch.tensor(LENGTHS)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    upstream = torch.randn(2, 4 + 8 + 8, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pooled = tbe(ids, offsets)
        pooled.backward(upstream.to(pooled.dtype))
    assert "SplitLookupFunction_Dense_Op" in pooled.grad_fn.name()  # FBGEMM's autograd function, not a stub
    assert any(re.match(DENSE_LOOKUP_WARNING, str(w.message)) for w in caught), "the warning we silence has changed"

    flat = tbe.weights.detach().float()
    tables = [flat[:40].view(10, 4).clone().requires_grad_(), flat[40:].view(7, 8).clone().requires_grad_()]
    reference = torch.cat([
        torch.nn.functional.embedding_bag(ids[offsets[2 * f]:offsets[2 * f + 2]], tables[t],
                                          offsets[2 * f:2 * f + 2] - offsets[2 * f], mode=pooling)
        for f, t in enumerate(FEATURE_TABLE)
    ], dim=1)
    reference.backward(upstream)
    expected = torch.cat([t.grad.flatten() for t in tables])
    tolerance = 1e-6 if precision == SparseType.FP32 else 2e-3  # fp16 gradients: rounding of values up to ~4
    assert tbe.weights.grad.dtype == tbe.weights.dtype
    assert torch.allclose(pooled.float(), reference.detach(), atol=tolerance)
    assert torch.allclose(tbe.weights.grad.float(), expected, atol=tolerance)
    assert expected.abs().max() > 0.5  # the comparison is not vacuous


def _entry(sharding_type: str, kernel: str, rows: int, dim: int) -> dict:
    return {"sharding_type": sharding_type, "compute_kernel": kernel, "ranks": [0],
            "shards": [] if sharding_type == "data_parallel" else [{"offsets": [0, 0], "sizes": [rows, dim], "placement": "rank:0/cpu"}]}


def shard_with_plan(runtime: Runtime, data_type: str, sharding_type: str) -> str:
    """Shard the tiny model (tables stored as ``data_type``) under a hand-made plan, as
    ``--plan FILE`` would; return the error."""
    config = resolve_config("tiny", [f"sparse.data_type={data_type}"])
    sizes = dict(zip(["C1", "C2"], config.sparse.num_embeddings))
    model = build_model(config, config.sparse.num_dense, list(sizes), sizes, device="meta")
    kernel = "dense" if sharding_type == "data_parallel" else "fused"
    plan = plan_from_dict({"model.sparse_arch.embedding_bag_collection": {
        f"t_{f}": _entry(sharding_type, kernel, rows, config.sparse.embedding_dim) for f, rows in sizes.items()}})
    try:
        shard_model(model, runtime, plan)
    except ConfigError as err:
        return str(err)
    return "no error"


def _shard_cases(runtime: Runtime) -> list[str]:
    return [shard_with_plan(runtime, "fp16", "data_parallel"), shard_with_plan(runtime, "bf16", "table_wise"),
            shard_with_plan(runtime, "fp16", "table_wise")]


def test_a_plan_whose_table_precision_cannot_train_is_refused_when_applied():
    fp16_data_parallel, bf16_on_cpu, fp16_table_wise = run_on_ranks(_shard_cases, 1)[0]
    assert fp16_data_parallel.startswith("table t_C1: sparse.data_type=fp16 cannot be data_parallel"), fp16_data_parallel
    assert fp16_data_parallel.endswith("or use sparse.data_type=fp32")
    assert bf16_on_cpu.startswith("sparse.data_type=bf16 cannot train on cpu"), bf16_on_cpu
    assert "use sparse.data_type=fp16 (same size) or fp32" in bf16_on_cpu
    assert fp16_table_wise == "no error"
