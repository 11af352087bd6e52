"""Why a model does not fit a topology, and what would make it fit.

TorchRec's ``PlannerError`` says that no proposal fitted and lists generic remedies.
:func:`explain_no_fit` says which table and rank fail and by how much. It takes, for
each table, the sharding option the planner could have used that needs the least of
a rank (TorchRec's own enumeration, with the config's constraints), then

- compares each table's largest shard with what one rank has for tables (capacity
  minus the planner's margin and its reservation for dense parameters and input
  batches): such a table fits nowhere, whatever else happens;
- compares the sum over tables with what all ranks have together;
- places the shards largest first on the emptiest rank (row-wise and data-parallel
  shards go one per rank) and reports the first that does not fit, on the rank where it
  is closest to fitting;

and turns the numbers into remedies: more ranks, row-wise sharding, a UVM-caching
kernel (GPU), smaller tables (hashing with ``data.max_ind_range``, quotient-remainder).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import nn
from torchrec.distributed.planner.enumerators import EmbeddingEnumerator
from torchrec.distributed.planner.types import ParameterConstraints, ShardingOption, Storage, Topology

from torchrec_app.distributed.planning import STORAGE_MARGIN
from torchrec_app.distributed.sharders import build_sharders
from torchrec_app.tools.plan.planner_run import PlannerRun
from torchrec_app.tools.plan.units import gib

TIERS = ("hbm", "ddr")
UNIFORM_TYPES = ("data_parallel", "row_wise")  # one shard on every rank
ROW_SPLITTING_TYPES = ("row_wise", "table_row_wise", "grid_shard")


@dataclass(kw_only=True, slots=True)
class TableNeed:
    """A table's least demanding option: what its largest shard and all its shards need."""

    name: str
    rows: int
    dim: int
    sharding_type: str
    compute_kernel: str
    num_shards: int
    largest_shard: dict[str, int]
    total: dict[str, int]
    over: int
    """Bytes by which the largest shard exceeds one rank's room for tables (<= 0: fits)."""
    allowed_types: list[str]


@dataclass(kw_only=True, slots=True)
class PlacementFailure:
    """The first shard that found no rank."""

    table: str
    shard: int
    num_shards: int
    sharding_type: str
    need: dict[str, int]
    rank: int
    free: dict[str, int]
    tier: str
    short_by: int


@dataclass(kw_only=True, slots=True)
class FitExplanation:
    device: str
    world_size: int
    local_world_size: int = 1
    """Ranks per host: a world size must be a multiple of it."""
    tiers: tuple[str, ...]
    capacity: dict[str, int]
    """Per rank, device memory."""
    available: dict[str, int]
    """Per rank, left for tables after the planner's margin and reservation."""
    reserved: dict[str, int]
    required_total: dict[str, int]
    """Sum over tables of their least demanding options."""
    too_big: list[TableNeed]
    failure: PlacementFailure | None
    ranks_needed: int
    largest: list[TableNeed]
    suggestions: list[str] = field(default_factory=list)
    planner_message: str = ""


def _tiers(device: str) -> tuple[str, ...]:
    return TIERS if device == "cuda" else ("ddr",)


def _storage(s: Storage | None) -> dict[str, int]:
    return {"hbm": s.hbm, "ddr": s.ddr} if s is not None else {"hbm": 0, "ddr": 0}


def _need(option: ShardingOption, room: dict[str, int], tiers: tuple[str, ...], allowed: list[str]) -> TableNeed:
    shards = [_storage(s.storage) for s in option.shards]
    largest = {t: max(s[t] for s in shards) for t in TIERS}
    total = {t: sum(s[t] for s in shards) for t in TIERS}
    rows, dim = option.tensor.shape
    return TableNeed(
        name=option.name, rows=int(rows), dim=int(dim), sharding_type=option.sharding_type,
        compute_kernel=option.compute_kernel, num_shards=len(shards), largest_shard=largest, total=total,
        over=max(largest[t] - room[t] for t in tiers), allowed_types=allowed,
    )


def least_demanding(
    options: list[ShardingOption], room: dict[str, int], tiers: tuple[str, ...], world_size: int
) -> dict[str, TableNeed]:
    """Per table, the option whose largest shard best fits ``room``, then the one taking the
    smallest share of the ranks' room in its fullest tier (so a UVM-caching option, mostly
    in DDR, wins over a fused one when HBM is scarce)."""
    by_table: dict[str, list[ShardingOption]] = {}
    for option in options:
        by_table.setdefault(option.name, []).append(option)
    result = {}
    for name, table_options in by_table.items():
        allowed = sorted({o.sharding_type for o in table_options})
        needs = [_need(o, room, tiers, allowed) for o in table_options]
        share = lambda n: max(n.total[t] / max(room[t] * world_size, 1) for t in tiers)  # noqa: E731
        result[name] = min(needs, key=lambda n: (max(n.over, 0), share(n)))
    return result


def simulate_placement(
    needs: list[TableNeed], options: dict[tuple[str, str, str], ShardingOption], room: dict[str, int],
    world_size: int, tiers: tuple[str, ...],
) -> PlacementFailure | None:
    """Largest-first placement on the emptiest rank; the first shard that fits nowhere."""
    free = [dict(room) for _ in range(world_size)]
    items = []
    for need in needs:
        option = options[(need.name, need.sharding_type, need.compute_kernel)]
        for i, shard in enumerate(option.shards):
            items.append((need, i, _storage(shard.storage)))
    items.sort(key=lambda x: (x[0].sharding_type not in UNIFORM_TYPES, -max(x[2][t] for t in tiers)))
    for need, i, size in items:
        if need.sharding_type in UNIFORM_TYPES and need.num_shards == world_size:
            candidates = [i]
        else:
            candidates = list(range(world_size))
        shortfall = {r: max(size[t] - free[r][t] for t in tiers) for r in candidates}
        fitting = [r for r in candidates if shortfall[r] <= 0]
        if fitting:
            rank = min(fitting, key=lambda r: shortfall[r])  # the emptiest
            for t in TIERS:
                free[rank][t] -= size[t]
            continue
        rank = min(candidates, key=lambda r: shortfall[r])
        tier = max(tiers, key=lambda t: size[t] - free[rank][t])
        return PlacementFailure(
            table=need.name, shard=i, num_shards=need.num_shards, sharding_type=need.sharding_type, need=size,
            rank=rank, free=dict(free[rank]), tier=tier, short_by=shortfall[rank],
        )
    return None


def hash_cap_that_fits(needs: list[TableNeed], budget: int, tier: str) -> int | None:
    """Largest row cap N (ids modulo N) whose tables need at most ``budget`` bytes of ``tier``.

    Bytes per row of each table are taken from its least demanding option.

    >>> n = TableNeed(name="t", rows=1000, dim=4, sharding_type="table_wise", compute_kernel="fused", num_shards=1,
    ...     largest_shard={"hbm": 0, "ddr": 8000}, total={"hbm": 0, "ddr": 8000}, over=0, allowed_types=[])
    >>> hash_cap_that_fits([n], 4000, "ddr")
    500
    """
    per_row = [(n.rows, n.total[tier] / n.rows) for n in needs if n.rows]
    fixed = sum(n.total[tier] for n in needs if not n.rows)

    def need_at(cap: int) -> float:
        return fixed + sum(min(rows, cap) * b for rows, b in per_row)

    lo, hi = 0, max((rows for rows, _ in per_row), default=0)
    if need_at(1) > budget:
        return None
    lo = 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if need_at(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def explain_no_fit(
    run: PlannerRun, model: nn.Module, batch_size: int, constraints: dict[str, ParameterConstraints] | None,
    message: str = "",
) -> FitExplanation:
    """Explain a failed planner run (see the module docstring)."""
    topology: Topology = run.topology
    device, world = topology.compute_device, topology.world_size
    tiers = _tiers(device)
    capacity = _storage(topology.devices[0].storage)
    reserved = _storage(run.reserved)
    if run.available:
        available = _storage(run.available[0])
    else:  # the reservation itself failed
        available = {
            "hbm": int(capacity["hbm"] * (1 - STORAGE_MARGIN)) - reserved["hbm"],
            "ddr": capacity["ddr"] - reserved["ddr"],
        }
    search_space = EmbeddingEnumerator(topology=topology, batch_size=batch_size, constraints=constraints).enumerate(
        module=model, sharders=build_sharders()
    )
    room = {t: max(available[t], 0) for t in TIERS}
    needs = least_demanding(search_space, room, tiers, world)
    by_key = {(o.name, o.sharding_type, o.compute_kernel): o for o in search_space}
    ordered = sorted(needs.values(), key=lambda n: -sum(n.total[t] for t in tiers))
    required = {t: sum(n.total[t] for n in ordered) for t in TIERS}
    too_big = [n for n in ordered if n.over > 0]
    failure = simulate_placement(ordered, by_key, room, world, tiers)
    ranks_needed = max(
        [math.ceil(required[t] / room[t]) if room[t] > 0 else world * 2 for t in tiers if required[t]] or [world]
    )
    explanation = FitExplanation(
        device=device, world_size=world, local_world_size=topology.local_world_size, tiers=tiers, capacity=capacity, available=available, reserved=reserved,
        required_total=required, too_big=too_big, failure=failure, ranks_needed=ranks_needed, largest=ordered[:5],
        planner_message=message.strip().splitlines()[0] if message.strip() else "",
    )
    explanation.suggestions = suggest(explanation, ordered)
    return explanation


def valid_world_size(ranks: int, local_world_size: int) -> int:
    """The smallest world size >= ``ranks`` made of whole hosts of ``local_world_size`` ranks.

    >>> valid_world_size(13, 8), valid_world_size(13, 1), valid_world_size(16, 8)
    (16, 13, 16)
    """
    return -(-ranks // max(1, local_world_size)) * max(1, local_world_size)


def suggest(ex: FitExplanation, needs: list[TableNeed]) -> list[str]:
    """Remedies, most direct first."""
    tiers, world = ex.tiers, ex.world_size
    binding = max(tiers, key=lambda t: ex.required_total[t] / max(ex.available[t], 1))
    out = []
    if any(ex.available[t] <= 0 for t in tiers):
        out.append(
            "more memory per rank or a smaller batch: the planner's margin and its reservation for dense parameters "
            f"and input batches ({', '.join(f'{t.upper()} {gib(ex.reserved[t])} GiB' for t in tiers)}) leave nothing "
            "for tables (--hbm-gb / --ddr-gb, --batch-size)"
        )
    more = valid_world_size(max(ex.ranks_needed, world + 1), ex.local_world_size)
    hosts = f", {more // ex.local_world_size} hosts of {ex.local_world_size}" if ex.local_world_size > 1 else ""
    unsplittable = [n.name for n in ex.too_big if not set(n.allowed_types) & set(ROW_SPLITTING_TYPES)]
    out.append(
        f"more ranks: the tables need about {gib(ex.required_total[binding])} GiB of {binding.upper()} in total at "
        f"{gib(ex.available[binding])} GiB per rank, so at least {more} ranks (--world-size {more}{hosts}; "
        "row-wise shards shrink as ranks are added)"
        + (f"; this alone does not help {', '.join(unsplittable)}, which is not split by rows" if unsplittable else "")
    )
    restricted = [n for n in (ex.too_big or needs[:3]) if not set(n.allowed_types) & set(ROW_SPLITTING_TYPES)]
    if restricted:
        names = [n.name for n in restricted]
        overrides = ",".join(f"{n}:row_wise" for n in names)
        out.append(
            f"row-wise sharding for {', '.join(names)}, now limited to {', '.join(restricted[0].allowed_types)}: "
            f"sharding.per_table={overrides} (each rank then holds 1/{world} of the rows)"
        )
    if ex.device == "cuda":
        out.append(
            "a UVM-caching kernel: fused_uvm_caching keeps a table in host DDR and caches about 20% of its rows "
            f"in HBM; the planner uses it only if DDR has room ({gib(ex.capacity['ddr'])} GiB per rank now; raise --ddr-gb)"
        )
    else:
        out.append(
            f"more host memory per rank (--ddr-gb, {gib(ex.capacity['ddr'])} GiB now), or GPUs with a UVM-caching kernel "
            "(fused_uvm_caching: tables in host memory, hot rows cached in HBM; plan with --device cuda)"
        )
    cap = hash_cap_that_fits(needs, int(0.9 * ex.available[binding] * world), binding)
    largest = needs[0] if needs else None
    if cap and largest and cap < largest.rows:
        out.append(
            f"smaller tables: hashing ids modulo {cap:,} (data.max_ind_range={cap}) caps every table at {cap:,} rows, "
            f"which fits in 90% of the ranks' {binding.upper()}; or a quotient-remainder embedding "
            f"({largest.name}: 2 tables of {math.isqrt(largest.rows - 1) + 1:,} rows instead of {largest.rows:,})"
        )
    elif largest:
        out.append(
            "smaller tables: hashing (data.max_ind_range=N) or a quotient-remainder embedding "
            f"({largest.name}: 2 tables of {math.isqrt(largest.rows - 1) + 1:,} rows instead of {largest.rows:,})"
        )
    return out


def format_no_fit(ex: FitExplanation, recipe: str) -> str:
    """The explanation as text."""
    tiers = ex.tiers
    per = lambda d: ", ".join(f"{t.upper()} {gib(d[t])} GiB" for t in tiers)  # noqa: E731
    lines = [
        f"DOES NOT FIT: recipe {recipe} on {ex.world_size} x {ex.device} ({per(ex.capacity)} per rank)",
        "",
        f"Room for tables per rank: {per(ex.available)} (after "
        + (f"keeping {STORAGE_MARGIN:.0%} of HBM free and " if ex.device == "cuda" else "")
        + f"reserving {per(ex.reserved)} for dense parameters x6 and input batches)",
        f"Tables need at least {per(ex.required_total)} in total (each in its least demanding allowed sharding); "
        f"{ex.world_size} ranks have {per({t: ex.available[t] * ex.world_size for t in TIERS})}",
    ]
    short = {t: ex.required_total[t] - ex.available[t] * ex.world_size for t in tiers}
    if any(v > 0 for v in short.values()):
        lines.append("  short by " + ", ".join(f"{t.upper()} {gib(v)} GiB" for t, v in short.items() if v > 0) + " overall")
    if ex.too_big:
        lines += ["", "Tables that fit on no rank even in their least demanding allowed sharding:"]
        for n in ex.too_big:
            lines.append(
                f"  {n.name} ({n.rows:,} x {n.dim}, allowed {'/'.join(n.allowed_types)}): best is {n.sharding_type}/"
                f"{n.compute_kernel} over {n.num_shards} shard(s), largest shard {per(n.largest_shard)} "
                f"-> over by {gib(n.over)} GiB"
            )
    if ex.failure:
        f = ex.failure
        lines += [
            "",
            f"First failure placing shards largest first: {f.table} shard {f.shard + 1} of {f.num_shards} "
            f"({f.sharding_type}) needs {per(f.need)}; rank {f.rank}, the closest, has {per(f.free)} left "
            f"-> short by {gib(f.short_by)} GiB of {f.tier.upper()}",
        ]
    lines += ["", "Largest tables (least demanding allowed sharding):"]
    for n in ex.largest:
        lines.append(
            f"  {n.name}: {n.rows:,} x {n.dim}, {n.sharding_type}/{n.compute_kernel}, total {per(n.total)}, "
            f"largest shard {per(n.largest_shard)}"
        )
    lines += ["", "What would fix it:"] + [f"  - {s}" for s in ex.suggestions]
    if ex.planner_message:
        lines += ["", f"TorchRec: {ex.planner_message.strip()}"]
    return "\n".join(lines) + "\n"
