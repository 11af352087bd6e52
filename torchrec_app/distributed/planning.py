"""Planning: which rank holds which piece of which table. No side effects.

``plan_sharding`` runs TorchRec's ``EmbeddingShardingPlanner`` on a model whose tables
live on ``meta``; with a process group it plans on rank 0 and broadcasts (every rank
must use the same plan), without one it plans locally, so the trainer and the plan
inspection CLI share this code and a plan can be made for a cluster you do not have.

Plans are saved as JSON (:func:`plan_to_dict` / :func:`plan_from_dict`), so the plan that
was inspected is the plan that trains.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch.distributed as dist
from torch import nn
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
from torchrec.distributed.planner.storage_reservations import HeuristicalStorageReservation
from torchrec.distributed.planner.types import ParameterConstraints, Stats
from torchrec.distributed.types import (
    CacheParams,
    EmbeddingModuleShardingPlan,
    EnumerableShardingSpec,
    ParameterSharding,
    ShardingPlan,
    ShardMetadata,
)
from torchrec.modules.embedding_configs import EmbeddingBagConfig

from torchrec_app.config.errors import ConfigError
from torchrec_app.config.schema import ShardingConfig
from torchrec_app.distributed.sharders import build_sharders, table_precision_problem

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
    """Per-table ``ParameterConstraints`` from config, checked against the tables and device.

    Sharding types come from ``sharding.per_table`` (else ``sharding.types``); the
    compute kernel from ``sharding.compute_kernel``, with ``CacheParams`` for
    ``fused_uvm_caching``. A type or kernel the device cannot run is a ``ConfigError``.
    A table's data type narrows its types further (``sharders.table_precision_problem``):
    fp16 / bf16 tables are never data-parallel, and bf16 tables do not train on cpu.

    >>> from torchrec.modules.embedding_configs import DataType
    >>> t = [EmbeddingBagConfig(name="t_a", feature_names=["a"], num_embeddings=10, embedding_dim=4, data_type=DataType.FP16)]
    >>> "data_parallel" in build_constraints(ShardingConfig(), t, "cpu")["t_a"].sharding_types
    False
    """
    names = [t.name for t in tables]
    unknown = sorted(set(config.per_table) - set(names))
    if unknown:
        raise ConfigError(f"sharding.per_table names tables that do not exist: {unknown}; tables are {names}")
    pooled_sharder, unpooled_sharder = build_sharders()
    constraints: dict[str, ParameterConstraints] = {}
    for table in tables:
        problem = table_precision_problem(table.data_type, None, compute_device)
        if problem:
            raise ConfigError(problem)
        pooled = isinstance(table, EmbeddingBagConfig)  # else an EmbeddingCollection's (unpooled) table: fewer types
        sharder = pooled_sharder if pooled else unpooled_sharder
        supported = sharder.sharding_types(compute_device)
        what = "" if pooled else " (an unpooled EmbeddingCollection table)"
        if table.name in config.per_table:
            allowed = config.per_table[table.name].split("|")
        else:  # sharding.types applies to every table: an unpooled table keeps the ones it supports
            allowed = [t for t in config.types if t in supported or pooled]
            if config.types and not allowed:
                raise ConfigError(f"table {table.name}{what}: none of sharding.types {list(config.types)} can run on "
                                  f"{compute_device}; supported there: {', '.join(supported)} (set sharding.per_table for it)")  # fmt: skip
        bad = [t for t in allowed if t not in supported]
        if bad:
            raise ConfigError(
                f"table {table.name}{what}: sharding type(s) {bad} cannot run on {compute_device}; "
                f"supported there: {', '.join(supported)}"
            )
        trainable = [t for t in (allowed or supported) if not table_precision_problem(table.data_type, t, compute_device)]
        if not trainable:
            raise ConfigError(f"table {table.name}: {table_precision_problem(table.data_type, (allowed or supported)[0], compute_device)}")
        if len(trainable) < len(allowed or supported):
            allowed = trainable
        kernel = config.compute_kernel
        if kernel:
            kernel_types = [t for t in (allowed or supported) if kernel in sharder.compute_kernels(t, compute_device)]
            if not kernel_types:
                kernels = sorted({k for t in (allowed or supported) for k in sharder.compute_kernels(t, compute_device)})
                raise ConfigError(
                    f"table {table.name}: sharding.compute_kernel={kernel} cannot run on {compute_device} with "
                    f"sharding types {allowed or supported}; kernels there: {', '.join(kernels)}"
                )
            allowed = kernel_types
        if not allowed and not kernel:
            continue
        cache = CacheParams(load_factor=config.cache_load_factor) if kernel == "fused_uvm_caching" else None
        constraints[table.name] = ParameterConstraints(
            sharding_types=allowed or None, compute_kernels=[kernel] if kernel else None, cache_params=cache
        )
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
    planner = build_planner(topology, batch_size, constraints)
    sharders = build_sharders()  # the planner only reads types/kernels; comms codecs do not matter here
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


# -- planner construction, plan loading and checking ---------------------------------

#: Extra storage fraction the planner keeps free per device (TorchRec's default margin).
STORAGE_MARGIN = 0.15


def build_storage_reservation() -> HeuristicalStorageReservation:
    """TorchRec's default reservation: dense parameters x 6 (optimizer, DDP), 20 copies of
    the input batch, and :data:`STORAGE_MARGIN` of HBM kept free."""
    with warnings.catch_warnings():  # "HeuristicalStorageReservation is known to cause issues": it is the default
        warnings.simplefilter("ignore", FutureWarning)
        return HeuristicalStorageReservation(percentage=STORAGE_MARGIN)


def build_planner(
    topology: Topology,
    batch_size: int,
    constraints: dict[str, ParameterConstraints] | None = None,
    stats: Sequence[Stats] | None = None,
    storage_reservation: HeuristicalStorageReservation | None = None,
) -> EmbeddingShardingPlanner:
    """The planner :func:`plan_sharding` runs, optionally reporting to ``stats``.

    ``stats`` replaces TorchRec's logging-only ``EmbeddingStats``; pass your own
    ``storage_reservation`` (from :func:`build_storage_reservation`) to read what it
    reserved afterwards.
    """
    return EmbeddingShardingPlanner(
        topology=topology,
        batch_size=batch_size,
        constraints=constraints,
        storage_reservation=storage_reservation or build_storage_reservation(),
        stats=list(stats) if stats is not None else None,
    )


def plan_tables(plan: ShardingPlan) -> dict[str, ParameterSharding]:
    """Table name -> its ``ParameterSharding``, over every module of ``plan``."""
    return {table: s for module_plan in plan.plan.values() for table, s in module_plan.items()}


def _placement_for(placement: str, device_type: str, local_world_size: int | None) -> str:
    """``rank:R/<device>`` with the device rewritten for ``device_type``.

    >>> _placement_for("rank:3/cuda:3", "cpu", None)
    'rank:3/cpu'
    >>> _placement_for("rank:9/cpu", "cuda", 8)
    'rank:9/cuda:1'
    >>> _placement_for("rank:9/cuda:1", "cuda", None)
    'rank:9/cuda:1'
    """
    rank_part, _, device = placement.partition("/")
    rank = int(rank_part.removeprefix("rank:"))
    if device_type != "cuda":
        return f"{rank_part}/{device_type}"
    if device.startswith("cuda:") and local_world_size is None:
        return placement
    return f"{rank_part}/cuda:{rank % (local_world_size or 1)}"


def load_plan(path: str | Path, device_type: str, local_world_size: int | None = None) -> ShardingPlan:
    """Read a plan JSON (``torchrec-app plan --json`` or a run dir's ``plan.json``) for ``device_type``.

    Shard placements name the device the plan was made for (``rank:3/cuda:3``); they
    are rewritten for ``device_type`` (cuda: device ``rank % local_world_size``), so a
    plan made for GPUs on a laptop can be loaded there and vice versa. Raises
    ``ConfigError`` if the file is unreadable or a table's sharding type or compute
    kernel cannot run on ``device_type`` (e.g. a UVM-caching kernel on cpu).
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read sharding plan {path}: {err}; write one with `torchrec-app plan --json FILE`") from None
    plan_data = data["plan"] if isinstance(data, dict) and "format" in data else data  # a report, or a bare plan
    if not isinstance(plan_data, dict) or not all(isinstance(v, dict) for v in plan_data.values()):
        raise ConfigError(f"{path} is not a sharding plan: expected module path -> table -> sharding (from `torchrec-app plan --json`)")
    try:
        plan_data = {
            module: {
                table: {**entry, "shards": [
                    {**shard, "placement": _placement_for(shard["placement"], device_type, local_world_size)}
                    for shard in entry["shards"]
                ]}
                for table, entry in tables.items()
            }
            for module, tables in plan_data.items()
        }
        plan = plan_from_dict(plan_data)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ConfigError(f"{path}: malformed sharding plan entry ({err!r}); regenerate it with `torchrec-app plan --json`") from None
    sharder = build_sharders()[0]
    types = sharder.sharding_types(device_type)
    for table, sharding in plan_tables(plan).items():
        if sharding.sharding_type not in types:
            raise ConfigError(
                f"{path}: table {table} is {sharding.sharding_type}, which cannot run on {device_type} "
                f"(supported: {', '.join(types)}); re-plan with `torchrec-app plan --device {device_type}`"
            )
        kernels = sharder.compute_kernels(sharding.sharding_type, device_type)
        if sharding.compute_kernel not in kernels:
            raise ConfigError(
                f"{path}: table {table} uses compute kernel {sharding.compute_kernel}, which cannot run on "
                f"{device_type} (there: {', '.join(kernels)}); re-plan with `torchrec-app plan --device {device_type}`"
            )
    return plan


def check_plan_matches(plan: ShardingPlan, tables: Sequence[EmbeddingBagConfig], world_size: int,
                       replan: str = "") -> None:  # fmt: skip
    """Raise ``ConfigError`` naming every way ``plan`` does not fit ``tables`` on ``world_size`` ranks.

    Checks: the plan shards exactly these tables; every shard lies inside its table and
    the shards cover its rows x dim once; every rank is < ``world_size``; data-parallel
    and row-wise tables span exactly ranks 0..world_size-1 (TorchRec needs one replica /
    one row block per rank); no fp16 / bf16 table is data-parallel (it would train to NaN,
    see ``sharders.table_precision_problem``).

    >>> from torchrec.modules.embedding_configs import EmbeddingBagConfig
    >>> t = [EmbeddingBagConfig(name="t_a", feature_names=["a"], num_embeddings=10, embedding_dim=4)]
    >>> plan = plan_from_dict({"m": {"t_a": {"sharding_type": "table_wise", "compute_kernel": "fused", "ranks": [1],
    ...     "shards": [{"offsets": [0, 0], "sizes": [10, 4], "placement": "rank:1/cpu"}]}}})
    >>> check_plan_matches(plan, t, world_size=2)
    >>> check_plan_matches(plan, t, world_size=1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    torchrec_app.config.errors.ConfigError: the sharding plan does not match this run: t_a: placed on rank(s) [1], but the world size is 1; re-plan ...
    """
    problems: list[str] = []
    planned = plan_tables(plan)
    expected = {t.name: t for t in tables}
    missing, extra = sorted(set(expected) - set(planned)), sorted(set(planned) - set(expected))
    if missing:
        problems.append(f"tables missing from the plan: {missing}")
    if extra:
        problems.append(f"the plan shards tables this model does not have: {extra}")
    beyond = sorted((n for n in set(expected) & set(planned) if any(r >= world_size for r in planned[n].ranks or [])),
                    key=lambda n: (len(n), n))  # fmt: skip
    if len(beyond) > 1:  # one cause, said once: the plan was made for more ranks
        highest = max(r for n in beyond for r in planned[n].ranks or [])
        shown = ", ".join(beyond[:4]) + (f" and {len(beyond) - 4} more" if len(beyond) > 4 else "")
        problems.append(f"it places tables on ranks up to {highest} ({shown}) but this run has {world_size} "
                        f"rank{'s' if world_size > 1 else ''}: it was made for another world size")  # fmt: skip
    for name in sorted(set(expected) & set(planned)):
        problems += [p for p in _table_problems(name, planned[name], expected[name], world_size)
                     if not (len(beyond) > 1 and name in beyond)]  # fmt: skip
    if problems:
        fix = f"re-plan for this config and world size: `{replan or f'torchrec-app plan --world-size {world_size} --json FILE'}`"
        if len(problems) == 1:
            raise ConfigError(f"the sharding plan does not match this run: {problems[0]}; {fix}")
        listed = "".join(f"\n  - {p}" for p in problems)
        raise ConfigError(f"the sharding plan does not match this run:{listed}\n{fix}")


def _table_problems(name: str, sharding: ParameterSharding, table: EmbeddingBagConfig, world_size: int) -> list[str]:
    problems = []
    ranks = list(sharding.ranks or [])
    bad_ranks = sorted({r for r in ranks if r >= world_size})
    if bad_ranks:
        problems.append(f"{name}: placed on rank(s) {bad_ranks}, but the world size is {world_size}")
    precision = table_precision_problem(table.data_type, sharding.sharding_type, None)
    if precision:
        problems.append(f"{name}: {precision}")
    if sharding.sharding_type in ("data_parallel", "row_wise") and sorted(ranks) != list(range(world_size)) and not bad_ranks:
        problems.append(
            f"{name}: {sharding.sharding_type} needs one shard on each of the {world_size} ranks, "
            f"the plan has ranks {ranks} (made for another world size?)"
        )
    if not isinstance(sharding.sharding_spec, EnumerableShardingSpec):
        return problems
    rows, dim = table.num_embeddings, table.embedding_dim
    shards = sharding.sharding_spec.shards
    area = 0
    for shard in shards:
        (r0, c0), (h, w) = shard.shard_offsets, shard.shard_sizes
        area += h * w
        if r0 < 0 or c0 < 0 or r0 + h > rows or c0 + w > dim:
            problems.append(
                f"{name}: shard at offset {[r0, c0]} of size {[h, w]} lies outside the table's {rows} x {dim}"
            )
        if shard.placement is not None and shard.placement.rank() >= world_size and not bad_ranks:
            problems.append(f"{name}: a shard is placed on {shard.placement}, but the world size is {world_size}")
    overlaps = [
        (a, b) for i, a in enumerate(shards) for b in shards[i + 1:]
        if all(a.shard_offsets[k] < b.shard_offsets[k] + b.shard_sizes[k] and b.shard_offsets[k] < a.shard_offsets[k] + a.shard_sizes[k] for k in (0, 1))
    ]
    if overlaps:
        a, b = overlaps[0]
        problems.append(f"{name}: shards at {list(a.shard_offsets)} and {list(b.shard_offsets)} overlap")
    elif area != rows * dim:
        covered = "more" if area > rows * dim else "less"
        problems.append(
            f"{name}: shards cover {area} of its {rows} x {dim} = {rows * dim} values ({covered}); "
            f"the plan was made for a table of another size"
        )
    return problems
