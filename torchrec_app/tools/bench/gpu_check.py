"""GPU check: what a freshly lent single-GPU host should measure first, in under 5 minutes.

    bash launch/gpu_check.sh                                   # GPU host: install carried wheels, run, write runs/gpu_check/
    python -m torchrec_app.tools.bench.gpu_check --out DIR     # torchrec and fbgemm-gpu already importable
    python -m torchrec_app.tools.bench.gpu_check --dry-run --out DIR   # any CPU host: same code, tiny shapes

Four parts, each on the one path training uses (a model built on ``meta``, the fused table
optimizer, plan, ``DistributedModelParallel`` by
:func:`~torchrec_app.distributed.build.build_sharded_model`, stepped by
``TrainPipelineSparseDist``), in a world of one process (nccl on CUDA, gloo on CPU):

1. ``sharded_equivalence``: the sharded model (table-wise, FBGEMM's fused SGD) and the
   plain unsharded model, from the same weights on the same batches, give the same logits
   and weights after a few steps (tolerance 1e-4; TF32 off).
2. ``dcnv2_mlperf``: the ``criteo_1tb_dcnv2_mlperf`` recipe's shape (dim 128, 3 low-rank
   cross layers of rank 512, over-arch 1024-1024-512-256-1, Adagrad) with each table
   capped at ``--rows-cap`` rows, on synthetic multi-hot batches with MLPerf's bag sizes:
   samples/s, peak memory and the step-time split (device time per category of
   :mod:`.step_profile`, from ``torch.profiler``).
3. ``uvm_caching``: one table of ``--uvm-gb`` GiB on the ``fused_uvm_caching`` kernel,
   planned for an HBM share (``--hbm-share-gb``) smaller than the table, so only the cache
   (``sharding.cache_load_factor``) lives in HBM: the plan's kernel and placement, and
   samples/s on uniformly drawn ids (mostly cache misses: a floor, not a typical figure).
   Refused, not run, if the table is over half the device's free memory (UVM is managed
   memory: asking for more than the card has free can hang the GPU).
4. ``fp16_tables``: the same model with ``sparse.data_type=fp16`` and fp32, from the same
   weights on the same batches: table bytes (fp16 must be half), losses finite, how far
   the fp16 logits drift from fp32.

Each part prints one line ``gpu_check <part>: <status> <figures>`` and writes
``<out>/<part>.json`` (status, figures, device name, versions, shapes); a part that fails
is recorded and the next one runs. Part 3, the one that asks for managed memory, runs
last, so a hang there (cut by the launch script's time limit) loses no other result.
Status is ``pass``, ``fail`` (ran, check not met), ``error`` (raised), or ``needs a
GPU`` (``--dry-run`` for a CUDA-only kernel). Exit status: 1 if any part failed or
raised, else 0.

``--dry-run`` runs the same functions on the CPU with tiny shapes (a test runs it), and
plans the GPU shapes of parts 2 and 3 for one CUDA device (planning needs no device), so
only what truly needs CUDA is untested before a GPU is at hand. Code here must run on
the GPU hosts' torchrec 1.6 (``../shared/gpu/README.md``): nothing newer is used.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import resource
import sys
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, replace
from importlib import metadata as importlib_metadata
from typing import Any, Callable, Sequence

PARTS = ("sharded_equivalence", "dcnv2_mlperf", "fp16_tables", "uvm_caching")  # the riskiest (managed memory) last
NEEDS_GPU = "needs a GPU"
#: MLPerf DLRM-DCNv2's multi-hot bag size of each of the 26 Criteo features (synthetic multi-hot Criteo 1TB).
MLPERF_BAG_SIZES = (3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1)


@dataclass(frozen=True, slots=True)
class Shapes:
    """Sizes of every part: :meth:`full` on a GPU, :meth:`tiny` for ``--dry-run``."""

    batch_size: int
    """Rows per step (per GPU) of the DCNv2 and UVM parts."""
    rows_cap: int
    """Largest table of the DCNv2 part (Criteo 1TB's 40M-row tables are capped to it)."""
    warmup_steps: int
    timed_steps: int
    profiled_steps: int
    uvm_gb: float
    """Size of the UVM-cached table, GiB."""
    hbm_share_gb: float
    """HBM the planner may use for it (smaller than the table)."""
    scale_towers: bool = False
    """Shrink the DCNv2 towers and dim (dry-run only)."""

    @staticmethod
    def full() -> "Shapes":
        return Shapes(batch_size=8192, rows_cap=2_000_000, warmup_steps=10, timed_steps=30, profiled_steps=5,
                      uvm_gb=8.0, hbm_share_gb=2.0)  # fmt: skip

    @staticmethod
    def tiny() -> "Shapes":
        return Shapes(batch_size=64, rows_cap=1000, warmup_steps=2, timed_steps=2, profiled_steps=1, uvm_gb=0.05,
                      hbm_share_gb=0.03, scale_towers=True)  # fmt: skip


# --- synthetic data and weights -------------------------------------------------------


def synthetic_batch(features: Sequence[str], num_dense: int, num_embeddings: dict[str, int], rows: int,
                    generator, bag_sizes: Sequence[int] | None = None):  # fmt: skip
    """A :class:`~torchrec_app.data.batch.Batch` of ``rows`` random rows: dense ``rows x num_dense``
    uniform, ids uniform over each table, bags of ``bag_sizes[f]`` ids (or 0-3 at random)."""
    import torch
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    from torchrec_app.data.batch import Batch

    if bag_sizes is None:
        lengths = torch.randint(0, 4, (len(features), rows), generator=generator)
    else:
        lengths = torch.tensor(list(bag_sizes), dtype=torch.long)[:, None].expand(len(features), rows)
    values = torch.cat([torch.randint(0, num_embeddings[f], (int(lengths[i].sum()),), generator=generator) for i, f in enumerate(features)])
    return Batch(
        dense_features=torch.rand(rows, num_dense, generator=generator),
        sparse_features=KeyedJaggedTensor.from_lengths_sync(keys=list(features), values=values, lengths=lengths.flatten().int()),
        labels=torch.randint(0, 2, (rows,), generator=generator).float(),
        weights=torch.ones(rows),
    )


def _local_shards(value) -> list[tuple[tuple[int, int], Any]]:
    """(row, column offset) and tensor of each local shard of a state-dict value (one for a plain tensor)."""
    if hasattr(value, "local_shards"):
        return [(tuple(s.metadata.shard_offsets), s.tensor) for s in value.local_shards()]
    return [((0, 0), value)]


def copy_weights(sharded, full_state: dict) -> None:
    """Load unsharded weights into a sharded model: each local shard takes its slice (cast to its dtype)."""
    import torch

    with torch.no_grad():
        for name, value in sharded.state_dict().items():
            for (r, c), tensor in _local_shards(value):
                full = full_state[name]
                piece = full[r : r + tensor.shape[0], c : c + tensor.shape[1]] if tensor.dim() == 2 else full
                tensor.copy_(piece.to(tensor.device, tensor.dtype))


def max_param_diff(sharded, full_state: dict) -> float:
    """Largest difference between any local shard (or replica) and its slice of ``full_state``."""
    worst = 0.0
    for name, value in sharded.state_dict().items():
        for (r, c), tensor in _local_shards(value):
            full = full_state[name].to(tensor.device)
            piece = full[r : r + tensor.shape[0], c : c + tensor.shape[1]] if tensor.dim() == 2 else full
            worst = max(worst, (tensor.float() - piece.float()).abs().max().item())
    return worst


def table_bytes(sharded) -> int:
    """Bytes of the embedding table shards this rank holds."""
    return sum(t.numel() * t.element_size() for n, v in sharded.state_dict().items() if "embedding" in n for _, t in _local_shards(v))


# --- building and stepping the sharded model ---------------------------------------------


def _sharded(config, runtime, features: Sequence[str], num_dense: int, num_embeddings: dict[str, int], batch_size: int):
    """(DMP model, plan, pipeline): the model built on ``meta`` and sharded as the trainer does it."""
    from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

    from torchrec_app.distributed.build import build_sharded_model
    from torchrec_app.distributed.planning import sharding_types_by_table
    from torchrec_app.models.ctr import build_model
    from torchrec_app.training.optimizers import build_optimizer

    model = build_model(config, num_dense, list(features), num_embeddings, device="meta")
    sharded, plan = build_sharded_model(model, runtime, sharding=config.sharding, optim=config.optim, batch_size=batch_size)
    data_parallel = {t for t, kind in sharding_types_by_table(plan).items() if kind == "data_parallel"}
    pipeline = TrainPipelineSparseDist(sharded, build_optimizer(sharded, config.optim, data_parallel), runtime.device)
    return sharded, plan, pipeline


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_gb(device) -> float:
    """Peak GPU memory allocated (CUDA), or this process's peak resident memory (CPU), GiB."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _reset_peak_memory(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def time_steps(pipeline, batches, device, warmup: int, steps: int) -> float:
    """Seconds per step over ``steps`` steps after ``warmup`` (device synchronised)."""
    for _ in range(warmup):
        pipeline.progress(batches)
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        pipeline.progress(batches)
    _synchronize(device)
    return (time.perf_counter() - start) / steps


_STEP = "## gpu_check:step ##"  # (a name starting "ProfilerStep#" would be renamed by the profiler)


def step_split(pipeline, batches, device, steps: int) -> dict[str, Any]:
    """Milliseconds per step by :mod:`.step_profile` category: device time on CUDA (kernels
    charged to the op that launched them), CPU time on the CPU."""
    import torch

    from torchrec_app.tools.bench.step_profile import CATEGORIES, category_of

    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            with torch.profiler.record_function(_STEP):
                pipeline.progress(batches)
        _synchronize(device)
    if device.type == "cuda":
        self_time = lambda e: getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0))  # noqa: E731
    else:
        self_time = lambda e: e.self_cpu_time_total  # noqa: E731
    totals = dict.fromkeys(CATEGORIES, 0.0)
    roots = [e for e in prof.events() if e.name == _STEP]
    for root in roots:
        stack = [(child, None) for child in root.cpu_children]
        while stack:
            event, inherited = stack.pop()
            category = category_of(event.name) or inherited
            totals[category or "dense_fwd_bwd"] += self_time(event)
            stack.extend((child, category) for child in event.cpu_children)
    n = max(1, len(roots))
    return {"time": "device" if device.type == "cuda" else "cpu", "ms_per_step": {k: round(v / n / 1e3, 3) for k, v in totals.items() if v}}


# --- the parts -------------------------------------------------------------------------


def _small_config(sparse_optimizer: str = "sgd", data_type: str = "fp32"):
    from torchrec_app.config import build_recipe

    config = build_recipe("tiny")
    return replace(
        config,
        sparse=replace(config.sparse, embedding_dim=16, data_type=data_type),
        sharding=replace(config.sharding, types=["table_wise"]),
        optim=replace(config.optim, sparse=sparse_optimizer, sparse_lr=0.1, dense="sgd", dense_lr=0.1),
    )


SMALL_FEATURES = ("a", "b", "c", "d")
SMALL_TABLES = {"a": 1000, "b": 640, "c": 200, "d": 120}
SMALL_DENSE = 4


def check_sharded_equivalence(runtime, shapes: Shapes) -> dict[str, Any]:
    """Sharded (table-wise, fused SGD) vs the plain model: same logits and weights after 4 steps."""
    import torch

    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # exact fp32 on both sides
    try:
        return _sharded_vs_plain(runtime)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def _sharded_vs_plain(runtime) -> dict[str, Any]:
    import torch

    from torchrec_app.models.ctr import build_model

    config = _small_config()
    torch.manual_seed(0)
    reference = build_model(config, SMALL_DENSE, list(SMALL_FEATURES), SMALL_TABLES, device=runtime.device)
    initial = {k: v.detach().clone() for k, v in reference.state_dict().items()}
    sharded, plan, pipeline = _sharded(config, runtime, SMALL_FEATURES, SMALL_DENSE, SMALL_TABLES, 128)
    copy_weights(sharded, initial)
    generator = torch.Generator().manual_seed(1)
    batches = [synthetic_batch(SMALL_FEATURES, SMALL_DENSE, SMALL_TABLES, 128, generator) for _ in range(4)]
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    feed = iter(batches)
    worst_logit = 0.0
    for batch in batches:
        output = pipeline.progress(feed)
        optimizer.zero_grad()
        loss, expected = reference(batch.to(runtime.device))
        loss.backward()
        optimizer.step()
        worst_logit = max(worst_logit, (output.predictions["label"] - expected.predictions["label"]).abs().max().item())
    param_diff = max_param_diff(pipeline.detach(), reference.state_dict())
    moved = max((reference.state_dict()[k] - v).abs().max().item() for k, v in initial.items())
    kernels = sorted({p.compute_kernel for module in plan.plan.values() for p in module.values()})
    ok = worst_logit < 1e-4 and param_diff < 1e-4 and moved > 1e-3
    return {"status": "pass" if ok else "fail", "logit_diff": worst_logit, "param_diff": param_diff, "weights_moved": moved,
            "tolerance": 1e-4, "kernels": kernels, "steps": len(batches)}  # fmt: skip


def dcnv2_config(shapes: Shapes):
    """The ``criteo_1tb_dcnv2_mlperf`` recipe with tables capped at ``shapes.rows_cap`` rows
    (towers and dim shrunk for a dry run); its 26 table sizes."""
    from torchrec_app.config import build_recipe
    from torchrec_app.config.recipes import CRITEO_1TB_NUM_EMBEDDINGS
    from torchrec_app.data.criteo_format import SPARSE_FEATURES

    config = build_recipe("criteo_1tb_dcnv2_mlperf")
    if shapes.scale_towers:
        config = replace(
            config,
            model=replace(config.model, dense_arch=[32, 16], over_arch=[32, 16, 1], cross=replace(config.model.cross, low_rank=8)),
            sparse=replace(config.sparse, embedding_dim=16),
        )
    sizes = {f: min(n, shapes.rows_cap) for f, n in zip(SPARSE_FEATURES, CRITEO_1TB_NUM_EMBEDDINGS)}
    return config, sizes


def check_dcnv2_mlperf(runtime, shapes: Shapes) -> dict[str, Any]:
    """Samples/s, peak memory and step split of the MLPerf DLRM-DCNv2 shape on synthetic multi-hot batches."""
    import torch

    from torchrec_app.data.criteo_format import DENSE_FEATURES, SPARSE_FEATURES

    config, sizes = dcnv2_config(shapes)
    _reset_peak_memory(runtime.device)
    sharded, plan, pipeline = _sharded(config, runtime, SPARSE_FEATURES, len(DENSE_FEATURES), sizes, shapes.batch_size)
    generator = torch.Generator().manual_seed(0)
    pool = [synthetic_batch(SPARSE_FEATURES, len(DENSE_FEATURES), sizes, shapes.batch_size, generator, MLPERF_BAG_SIZES) for _ in range(4)]
    batches = itertools.cycle(pool)
    seconds = time_steps(pipeline, batches, runtime.device, shapes.warmup_steps, shapes.timed_steps)
    split = step_split(pipeline, batches, runtime.device, shapes.profiled_steps)
    gpu_plan = {}
    if runtime.device.type != "cuda":  # a dry run: also check that the GPU shape plans for one 80 GiB device
        gpu_config, gpu_sizes = dcnv2_config(Shapes.full())
        planned = plan_for_one_gpu(gpu_config, len(DENSE_FEATURES), gpu_sizes, Shapes.full().batch_size, 80.0)
        gpu_plan = {"gpu_shape_plan": dict(sorted(Counter(planned.values()).items()))}
    return {
        **gpu_plan,
        "status": "pass",
        "samples_per_second": shapes.batch_size / seconds,
        "step_ms": seconds * 1e3,
        "peak_memory_gb": _peak_memory_gb(runtime.device),
        "table_gb": table_bytes(sharded) / 2**30,
        "step_split": split,
        "batch_size": shapes.batch_size,
        "rows_cap": shapes.rows_cap,
        "embedding_dim": config.sparse.embedding_dim,
        "ids_per_sample": sum(MLPERF_BAG_SIZES),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "kernels": sorted({p.compute_kernel for module in plan.plan.values() for p in module.values()}),
    }


def uvm_config(shapes: Shapes):
    """One big table (``shapes.uvm_gb`` GiB at dim 128, fp32) on ``fused_uvm_caching``, planned
    for an HBM share of ``shapes.hbm_share_gb``; its table sizes."""
    from torchrec_app.config import build_recipe

    config = build_recipe("tiny")
    rows = int(shapes.uvm_gb * 2**30 // (128 * 4))
    config = replace(
        config,
        sparse=replace(config.sparse, embedding_dim=128),
        sharding=replace(
            config.sharding,
            types=["table_wise"],
            compute_kernel="fused_uvm_caching",
            cache_load_factor=0.1,
            hbm_gb=shapes.hbm_share_gb,
            ddr_gb=max(64.0, 4 * shapes.uvm_gb),
        ),  # fmt: skip
        optim=replace(config.optim, sparse="rowwise_adagrad", sparse_lr=0.01, dense="sgd", dense_lr=0.01),
    )
    return config, {"big": rows, "small": 1000}


def plan_for_one_gpu(config, num_dense: int, sizes: dict[str, int], batch_size: int, hbm_gb: float) -> dict[str, str]:
    """Each table's ``sharding_type/compute_kernel`` in the plan for one CUDA device of ``hbm_gb``.

    Planning needs no device, so a dry run checks that the GPU shapes fit before a GPU is at hand.
    """
    from torchrec_app.distributed.build import prepare_for_sharding
    from torchrec_app.distributed.planning import build_constraints, build_topology, plan_sharding
    from torchrec_app.models.ctr import build_model

    model = build_model(config, num_dense, list(sizes), sizes, device="meta")
    tables = prepare_for_sharding(model, config.optim)
    topology = build_topology(1, "cuda", 1, hbm_gb, config.sharding.ddr_gb)
    plan, _ = plan_sharding(model, topology, batch_size, build_constraints(config.sharding, tables, "cuda"))
    return {t: f"{p.sharding_type}/{p.compute_kernel}" for module in plan.plan.values() for t, p in module.items()}


def check_uvm_caching(runtime, shapes: Shapes) -> dict[str, Any]:
    """A table larger than its HBM share, trained through the UVM cache: plan and samples/s."""
    import torch

    config, sizes = uvm_config(shapes)
    table_gb = sizes["big"] * 128 * 4 / 2**30
    shape = {"table_gb": table_gb, "hbm_share_gb": shapes.hbm_share_gb, "cache_load_factor": config.sharding.cache_load_factor}
    if runtime.device.type != "cuda":  # plan the GPU shape for one CUDA device (the planner needs none), run nothing
        gpu_config, gpu_sizes = uvm_config(Shapes.full())
        planned = plan_for_one_gpu(gpu_config, SMALL_DENSE, gpu_sizes, Shapes.full().batch_size, gpu_config.sharding.hbm_gb)
        return {"status": NEEDS_GPU, "why": "fused_uvm_caching is a CUDA kernel (UVM + an HBM cache)",
                "gpu_shape_plan": planned["t_big"], "gpu_shape_table_gb": gpu_sizes["big"] * 128 * 4 / 2**30,
                "gpu_shape_hbm_share_gb": gpu_config.sharding.hbm_gb, **shape}  # fmt: skip
    free, _ = torch.cuda.mem_get_info(runtime.device)
    if table_gb > free / 2**30 / 2:
        return {"status": "fail", "why": f"the table ({table_gb:.1f} GiB) is over half the free device memory "
                                         f"({free / 2**30:.1f} GiB): not asking for that much managed memory", **shape}  # fmt: skip
    _reset_peak_memory(runtime.device)
    sharded, plan, pipeline = _sharded(config, runtime, ("big", "small"), SMALL_DENSE, sizes, shapes.batch_size)
    generator = torch.Generator().manual_seed(0)
    batches = itertools.cycle(
        [synthetic_batch(("big", "small"), SMALL_DENSE, sizes, shapes.batch_size, generator, (1, 1)) for _ in range(4)]
    )
    seconds = time_steps(pipeline, batches, runtime.device, shapes.warmup_steps, shapes.timed_steps)
    kernel = {t: p.compute_kernel for module in plan.plan.values() for t, p in module.items()}.get("t_big")
    ok = kernel == "fused_uvm_caching" and table_gb > shapes.hbm_share_gb
    return {"status": "pass" if ok else "fail", "kernel": kernel, "samples_per_second": shapes.batch_size / seconds,
            "step_ms": seconds * 1e3, "peak_hbm_gb": _peak_memory_gb(runtime.device), **shape}  # fmt: skip


def check_fp16_tables(runtime, shapes: Shapes) -> dict[str, Any]:
    """fp16 vs fp32 tables from the same weights on the same batches: half the bytes, finite, close."""
    import torch

    from torchrec_app.models.ctr import build_model

    torch.manual_seed(0)
    initial = build_model(_small_config(), SMALL_DENSE, list(SMALL_FEATURES), SMALL_TABLES, device="cpu").state_dict()
    generator = torch.Generator().manual_seed(2)
    batches = [synthetic_batch(SMALL_FEATURES, SMALL_DENSE, SMALL_TABLES, 128, generator) for _ in range(6)]
    runs = {}
    for data_type in ("fp32", "fp16"):
        sharded, _, pipeline = _sharded(
            _small_config("rowwise_adagrad", data_type), runtime, SMALL_FEATURES, SMALL_DENSE, SMALL_TABLES, 128
        )
        copy_weights(sharded, initial)
        feed = iter(batches)
        outputs = [pipeline.progress(feed) for _ in batches]
        runs[data_type] = {"bytes": table_bytes(sharded), "logits": outputs[-1].predictions["label"].float(),
                           "loss": float(outputs[-1].loss)}  # fmt: skip
    ratio = runs["fp16"]["bytes"] / runs["fp32"]["bytes"]
    drift = (runs["fp16"]["logits"] - runs["fp32"]["logits"]).abs().max().item()
    finite = bool(torch.isfinite(runs["fp16"]["logits"]).all()) and bool(torch.isfinite(torch.tensor(runs["fp16"]["loss"])))
    ok = finite and abs(ratio - 0.5) < 0.01 and drift < 0.05
    return {"status": "pass" if ok else "fail", "table_bytes_fp16_over_fp32": ratio, "logit_drift_vs_fp32": drift,
            "last_loss_fp16": runs["fp16"]["loss"], "last_loss_fp32": runs["fp32"]["loss"], "finite": finite,
            "steps": len(batches), "drift_tolerance": 0.05}  # fmt: skip


CHECKS: dict[str, Callable[[Any, Shapes], dict[str, Any]]] = {
    "sharded_equivalence": check_sharded_equivalence,
    "dcnv2_mlperf": check_dcnv2_mlperf,
    "fp16_tables": check_fp16_tables,
    "uvm_caching": check_uvm_caching,
}


# --- running and reporting ---------------------------------------------------------------


def environment(device) -> dict[str, Any]:
    """Device name, versions and host: what every figure is read with."""
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    for package in ("torchrec", "fbgemm-gpu", "fbgemm-gpu-cpu"):
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            continue
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"device": name, "device_type": device.type, "versions": versions, "load_average": list(os.getloadavg())}


def summary_line(part: str, result: dict[str, Any]) -> str:
    """``gpu_check <part>: <status> key=value ...`` with the part's numeric figures.

    >>> summary_line("fp16_tables", {"status": "pass", "logit_drift_vs_fp32": 0.0012, "finite": True, "steps": 6})
    'gpu_check fp16_tables: pass logit_drift_vs_fp32=0.0012 finite=True steps=6'
    """
    figures = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()
                       if k not in ("status", "error", "why", "step_split", "kernels", "environment", "gpu_shape_plan"))  # fmt: skip
    extra = f" ({result['why']})" if "why" in result else f" ({result['error']})" if "error" in result else ""
    return f"gpu_check {part}: {result['status']} {figures}".rstrip() + extra


def run_parts(parts: Sequence[str], shapes: Shapes, out_dir: str, runtime) -> dict[str, dict[str, Any]]:
    """Run each part, print its line, write ``<out_dir>/<part>.json``; a failure does not stop the others."""
    from torchrec_app.utils.fs import write_json_atomic

    env = environment(runtime.device)
    results = {}
    for part in parts:
        start = time.perf_counter()
        try:
            result = CHECKS[part](runtime, shapes)
        except Exception as err:  # noqa: BLE001 - recorded; the next part still runs
            result = {"status": "error", "error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300],
                      "traceback": traceback.format_exc()}  # fmt: skip
        result["seconds"] = time.perf_counter() - start
        print(summary_line(part, {k: v for k, v in result.items() if k != "traceback"}), flush=True)
        write_json_atomic(os.path.join(out_dir, f"{part}.json"), {"part": part, **result, "shapes": asdict(shapes), "environment": env})
        results[part] = result
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/gpu_check", help="directory for <part>.json (created)")
    parser.add_argument("--dry-run", action="store_true", help="on the CPU with tiny shapes; CUDA-only parts report 'needs a GPU'")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    parser.add_argument("--rows-cap", type=int, default=None, help="largest DCNv2 table (default 2,000,000; dry run 1,000)")
    parser.add_argument("--batch-size", type=int, default=None, help="rows per step of the DCNv2 and UVM parts (default 8192)")
    parser.add_argument("--uvm-gb", type=float, default=None, help="size of the UVM-cached table in GiB (default 8)")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in CHECKS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    if args.dry_run:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the CPU, even on a GPU host
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run with --dry-run on a CPU host", file=sys.stderr)
        return 2
    shapes = Shapes.tiny() if args.dry_run else Shapes.full()
    overrides = {"rows_cap": args.rows_cap, "batch_size": args.batch_size, "uvm_gb": args.uvm_gb}
    shapes = replace(shapes, **{k: v for k, v in overrides.items() if v is not None})
    os.makedirs(args.out, exist_ok=True)

    from torchrec_app.distributed.runtime import init_runtime, shutdown_runtime

    runtime = init_runtime()
    try:
        results = run_parts(parts, shapes, args.out, runtime)
    finally:
        shutdown_runtime()
    return 1 if any(r["status"] in ("fail", "error") for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
