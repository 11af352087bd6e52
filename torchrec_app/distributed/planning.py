"""Planning: which rank holds which piece of which table. No side effects.

``plan_sharding`` runs TorchRec's ``EmbeddingShardingPlanner`` on a model whose tables
live on ``meta``; with a process group it plans on rank 0 and broadcasts (every rank
must use the same plan), without one it plans locally, so the trainer and the plan
inspection CLI share this code and a plan can be made for a cluster you do not have.

Plans are saved as JSON (:func:`plan_to_dict` / :func:`plan_from_dict`), so the plan that
was inspected is the plan that trains.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch.distributed as dist
from torch import nn
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
from torchrec.distributed.planner.types import ParameterConstraints
from torchrec.distributed.types import (
    EmbeddingModuleShardingPlan,
    EnumerableShardingSpec,
    ParameterSharding,
    ShardingPlan,
    ShardMetadata,
)
from torchrec.modules.embedding_configs import EmbeddingBagConfig

from torchrec_app.config.overrides import ConfigError
from torchrec_app.config.schema import ShardingConfig
from torchrec_app.distributed.sharders import build_sharders

GIB = 1024**3


def build_topology(
    world_size: int,
    compute_device: str,
    local_world_size: int | None = None,
    hbm_gb: float = 0.0,
    ddr_gb: float = 0.0,
    **bandwidths: float,
) -> Topology:
    """A ``Topology`` for ``world_size`` devices of type ``compute_device`` (cpu or cuda).

    Memory of 0 keeps TorchRec's default; ``bandwidths`` pass through
    (``intra_host_bw``, ``inter_host_bw``, in bytes/ms as TorchRec expects).
    """
    return Topology(
        world_size=world_size,
        compute_device=compute_device,
        local_world_size=local_world_size or world_size,
        hbm_cap=int(hbm_gb * GIB) if hbm_gb else None,
        ddr_cap=int(ddr_gb * GIB) if ddr_gb else None,
        **bandwidths,
    )


def supported_sharding_types(compute_device: str) -> list[str]:
    """Sharding types our sharders admit on ``compute_device``."""
    return build_sharders()[0].sharding_types(compute_device)


def build_constraints(
    config: ShardingConfig, tables: Sequence[EmbeddingBagConfig], compute_device: str
) -> dict[str, ParameterConstraints]:
    """Per-table ``ParameterConstraints`` from config, checked against the tables and device."""
    names = [t.name for t in tables]
    unknown = sorted(set(config.per_table) - set(names))
    if unknown:
        raise ConfigError(f"sharding.per_table names tables that do not exist: {unknown}; tables are {names}")
    supported = supported_sharding_types(compute_device)
    constraints: dict[str, ParameterConstraints] = {}
    for table in tables:
        allowed = config.per_table[table.name].split("|") if table.name in config.per_table else list(config.types)
        if not allowed:
            continue
        bad = [t for t in allowed if t not in supported]
        if bad:
            raise ConfigError(
                f"table {table.name}: sharding type(s) {bad} cannot run on {compute_device}; "
                f"supported there: {', '.join(supported)}"
            )
        constraints[table.name] = ParameterConstraints(sharding_types=allowed)
    return constraints


def plan_sharding(
    model: nn.Module,
    topology: Topology,
    batch_size: int,
    constraints: dict[str, ParameterConstraints] | None = None,
    pg: dist.ProcessGroup | None = None,
) -> tuple[ShardingPlan, EmbeddingShardingPlanner]:
    """Plan ``model``'s tables on ``topology``; collective (rank 0 plans, all receive) with ``pg``.

    Returns the plan and the planner (whose stats the inspection CLI reads).
    """
    planner = EmbeddingShardingPlanner(topology=topology, batch_size=batch_size, constraints=constraints)
    sharders = build_sharders()
    plan = planner.collective_plan(model, sharders, pg) if pg is not None else planner.plan(model, sharders)
    return plan, planner


def plan_to_dict(plan: ShardingPlan) -> dict[str, Any]:
    """JSON-able form of ``plan``: module path -> table -> type, kernel, ranks, shards."""
    out: dict[str, Any] = {}
    for module_path, module_plan in plan.plan.items():
        tables = {}
        for table, sharding in module_plan.items():
            shards = []
            if isinstance(sharding.sharding_spec, EnumerableShardingSpec):
                shards = [
                    {"offsets": list(s.shard_offsets), "sizes": list(s.shard_sizes), "placement": str(s.placement)}
                    for s in sharding.sharding_spec.shards
                ]
            tables[table] = {
                "sharding_type": sharding.sharding_type,
                "compute_kernel": sharding.compute_kernel,
                "ranks": list(sharding.ranks) if sharding.ranks is not None else None,
                "shards": shards,
            }
        out[module_path] = tables
    return out


def plan_from_dict(data: dict[str, Any]) -> ShardingPlan:
    """Inverse of :func:`plan_to_dict`."""
    plan = {}
    for module_path, tables in data.items():
        module_plan = EmbeddingModuleShardingPlan()
        for table, entry in tables.items():
            spec = None
            if entry["shards"]:
                spec = EnumerableShardingSpec(
                    [ShardMetadata(shard_offsets=s["offsets"], shard_sizes=s["sizes"], placement=s["placement"]) for s in entry["shards"]]
                )
            module_plan[table] = ParameterSharding(
                sharding_type=entry["sharding_type"], compute_kernel=entry["compute_kernel"], ranks=entry["ranks"], sharding_spec=spec
            )
        plan[module_path] = module_plan
    return ShardingPlan(plan)


def sharding_types_by_table(plan: ShardingPlan) -> dict[str, str]:
    """Table name -> sharding type chosen by ``plan``."""
    return {table: s.sharding_type for module_plan in plan.plan.values() for table, s in module_plan.items()}
