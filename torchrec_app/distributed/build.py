"""The one path from a model on ``meta`` to a sharded model: fused optimizer → plan → DMP.

    model = task.build_model(config, metadata, "meta")       # tables on meta, nothing allocated
    sharded, plan = build_sharded_model(model, runtime, sharding=config.sharding, optim=config.optim,
                                        batch_size=config.train.batch_size)

1. :func:`prepare_for_sharding` registers the fused table optimizer on every embedding
   collection of the model (``EmbeddingBagCollection`` and ``EmbeddingCollection``) with
   ``apply_optimizer_in_backward``, *before* sharding, so ``DistributedModelParallel``
   fuses it into FBGEMM's table-batched kernels: the update happens inside the backward
   pass and no table gradient is materialised. The planner also reads it (optimizer state
   counts in the memory it plans). It returns the tables the model holds.
2. The plan: a saved plan (``sharding.plan_file``, from ``torchrec-app plan --json``),
   checked against those tables and the world size; or TorchRec's planner, run on rank 0
   and broadcast (:func:`~torchrec_app.distributed.planning.plan_sharding`).
3. :func:`shard_model` wraps the model in ``DistributedModelParallel``: tables are
   materialised on the device shard by shard (no rank holds a table it does not own), the
   rest is replicated with DDP.

The training loop, ``torchrec-app plan`` (steps 1-2 for a cluster you do not have) and
the sharding-equivalence tests all go through these functions.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.types import ModuleSharder, ShardingEnv, ShardingPlan
from torchrec.modules.embedding_configs import BaseEmbeddingConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection
from torchrec.optim import RowWiseAdagrad
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

from torchrec_app.config.errors import ConfigError
from torchrec_app.config.schema import OptimConfig, ShardingConfig
from torchrec_app.distributed.planning import (
    build_constraints,
    build_topology,
    check_plan_matches,
    load_plan,
    plan_sharding,
)
from torchrec_app.distributed.runtime import Runtime, device_memory_gb
from torchrec_app.distributed.sharders import build_sharders

#: Table optimizers by ``optim.sparse`` (fused into FBGEMM's kernels by DMP).
SPARSE_OPTIMIZERS = {
    "adagrad": torch.optim.Adagrad,
    "rowwise_adagrad": RowWiseAdagrad,
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
}
#: Table optimizers FBGEMM's CPU kernels implement; Adam is CUDA-only there.
CPU_SPARSE_OPTIMIZERS = ("adagrad", "rowwise_adagrad", "sgd")


def check_sparse_optimizer(config: OptimConfig, device_type: str) -> None:
    """Fail at start-up, not inside FBGEMM, when the table optimizer cannot run on the device.

    >>> check_sparse_optimizer(OptimConfig(sparse="adam"), "cpu")
    Traceback (most recent call last):
    ...
    torchrec_app.config.errors.ConfigError: optim.sparse=adam has no FBGEMM kernel on cpu; use one of adagrad, rowwise_adagrad, sgd there (adam runs on cuda)
    """
    if device_type == "cpu" and config.sparse not in CPU_SPARSE_OPTIMIZERS:
        raise ConfigError(
            f"optim.sparse={config.sparse} has no FBGEMM kernel on cpu; use one of "
            f"{', '.join(CPU_SPARSE_OPTIMIZERS)} there ({config.sparse} runs on cuda)"
        )


def embedding_collections(model: nn.Module) -> list[EmbeddingBagCollection | EmbeddingCollection]:
    """Every TorchRec embedding collection in ``model`` (the modules the planner shards)."""
    return [m for m in model.modules() if isinstance(m, (EmbeddingBagCollection, EmbeddingCollection))]


def model_tables(model: nn.Module) -> list[BaseEmbeddingConfig]:
    """The table configs of every embedding collection of ``model``."""
    tables: list[BaseEmbeddingConfig] = []
    for module in embedding_collections(model):
        tables += module.embedding_bag_configs() if isinstance(module, EmbeddingBagCollection) else module.embedding_configs()
    return tables


def prepare_for_sharding(model: nn.Module, optim: OptimConfig) -> list[BaseEmbeddingConfig]:
    """Register the fused table optimizer on every embedding collection of ``model``; return its tables."""
    kwargs: dict[str, Any] = {"lr": optim.sparse_lr} if optim.sparse == "sgd" else {"lr": optim.sparse_lr, "eps": optim.eps}
    for module in embedding_collections(model):
        apply_optimizer_in_backward(SPARSE_OPTIMIZERS[optim.sparse], module.parameters(), kwargs)
    return model_tables(model)


def shard_model(
    model: nn.Module, runtime: Runtime, plan: ShardingPlan, sharders: list[ModuleSharder[nn.Module]] | None = None
) -> DistributedModelParallel:
    """Shard ``model``'s tables by ``plan`` (model-parallel) and replicate the rest (DDP)."""
    return DistributedModelParallel(
        module=model,
        env=ShardingEnv.from_process_group(dist.GroupMember.WORLD),
        device=runtime.device,
        plan=plan,
        sharders=sharders if sharders is not None else build_sharders(),
    )


def build_sharded_model(
    model: nn.Module, runtime: Runtime, *, sharding: ShardingConfig, optim: OptimConfig, batch_size: int
) -> tuple[DistributedModelParallel, ShardingPlan]:
    """``model`` (tables on ``meta``) sharded over the job's ranks, and the plan used (collective).

    The plan is ``sharding.plan_file`` when set (checked against the model's tables and the
    world size), otherwise planned for this job's devices with ``sharding``'s constraints.
    """
    check_sparse_optimizer(optim, runtime.device.type)
    tables = prepare_for_sharding(model, optim)
    if sharding.plan_file:
        plan = load_plan(sharding.plan_file, runtime.device.type, runtime.local_world_size)
        check_plan_matches(plan, tables, runtime.world_size)
    else:
        hbm_gb = sharding.hbm_gb or device_memory_gb(runtime.device)  # on CUDA, the real device's memory
        topology = build_topology(runtime.world_size, runtime.device.type, runtime.local_world_size, hbm_gb, sharding.ddr_gb)
        constraints = build_constraints(sharding, tables, runtime.device.type)
        plan, _ = plan_sharding(model, topology, batch_size, constraints, dist.GroupMember.WORLD)
    sharders = build_sharders(sharding.qcomms_forward, sharding.qcomms_backward)
    return shard_model(model, runtime, plan, sharders), plan
