"""What changed between two saved plans: moved tables, new types or shapes, memory per rank.

Both inputs may be ``torchrec-app plan --json`` reports or bare plans (a run dir's
``plan.json``). Per-rank memory comes from the reports when both have it; for bare
plans it is the fp32 weights of the sharded tables' shards (data-parallel replicas are
not listed in a plan, so they are not counted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torchrec_app.tools.plan.units import collapse_ranks, gib


@dataclass(kw_only=True, slots=True)
class TableChange:
    table: str
    what: str
    """moved, type, kernel, shape, added or removed."""
    before: str
    after: str


@dataclass(kw_only=True, slots=True)
class PlanDiff:
    changes: list[TableChange] = field(default_factory=list)
    memory: list[tuple[int, int, int]] = field(default_factory=list)
    """(rank, bytes before, bytes after); a rank absent from one plan has 0 there."""
    memory_basis: str = ""

    @property
    def moved(self) -> list[str]:
        """Tables whose shards now live on other ranks."""
        return sorted({c.table for c in self.changes if c.what == "moved"})


def _tables(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    plan = data["plan"] if "format" in data else data
    return {table: entry for module in plan.values() for table, entry in module.items()}


def _shapes(entry: dict[str, Any]) -> list[list[int]]:
    return sorted(s["sizes"] for s in entry["shards"])


def _placement(entry: dict[str, Any]) -> list[tuple[int, tuple[int, ...]]]:
    """(rank, offsets) per shard: where each piece of the table lives."""
    ranks = entry.get("ranks") or []
    offsets = [tuple(s["offsets"]) for s in entry["shards"]] or [()] * len(ranks)
    return sorted(zip(ranks, offsets))


def _memory(data: dict[str, Any]) -> tuple[dict[int, int], str]:
    if "ranks" in data and data.get("tiers"):
        tier = data["tiers"][0]
        return {r["rank"]: r["used"][tier] for r in data["ranks"]}, f"{tier.upper()} used (report)"
    per_rank: dict[int, int] = {}
    for entry in _tables(data).values():
        for shard, rank in zip(entry["shards"], entry.get("ranks") or []):
            per_rank[rank] = per_rank.get(rank, 0) + shard["sizes"][0] * shard["sizes"][1] * 4
    return per_rank, "fp32 weights of sharded tables"


def diff_plans(before: dict[str, Any], after: dict[str, Any]) -> PlanDiff:
    """Compare two plans (report or bare form).

    >>> shard = lambda rank: {"offsets": [0, 0], "sizes": [10, 4], "placement": f"rank:{rank}/cpu"}
    >>> a = {"m": {"t_a": {"sharding_type": "table_wise", "compute_kernel": "fused", "ranks": [0], "shards": [shard(0)]}}}
    >>> b = {"m": {"t_a": {"sharding_type": "table_wise", "compute_kernel": "fused", "ranks": [1], "shards": [shard(1)]}}}
    >>> d = diff_plans(a, b)
    >>> d.moved, d.memory
    (['t_a'], [(0, 160, 0), (1, 0, 160)])
    """
    a, b = _tables(before), _tables(after)
    diff = PlanDiff()
    for name in sorted(set(a) | set(b)):
        if name not in b:
            diff.changes.append(TableChange(table=name, what="removed", before=a[name]["sharding_type"], after="-"))
            continue
        if name not in a:
            diff.changes.append(TableChange(table=name, what="added", before="-", after=b[name]["sharding_type"]))
            continue
        x, y = a[name], b[name]
        for key, what in (("sharding_type", "type"), ("compute_kernel", "kernel")):
            if x[key] != y[key]:
                diff.changes.append(TableChange(table=name, what=what, before=x[key], after=y[key]))
        if _shapes(x) != _shapes(y):
            diff.changes.append(TableChange(table=name, what="shape", before=_shape_text(x), after=_shape_text(y)))
        if _placement(x) != _placement(y):
            diff.changes.append(TableChange(
                table=name, what="moved", before=collapse_ranks(x.get("ranks") or []), after=collapse_ranks(y.get("ranks") or []),
            ))
    (mem_a, basis_a), (mem_b, basis_b) = _memory(before), _memory(after)
    if basis_a != basis_b:  # compare like with like
        (mem_a, basis_a), (mem_b, basis_b) = _memory(_tables_only(before)), _memory(_tables_only(after))
    diff.memory = [(r, mem_a.get(r, 0), mem_b.get(r, 0)) for r in sorted(set(mem_a) | set(mem_b))]
    diff.memory_basis = basis_a
    return diff


def _tables_only(data: dict[str, Any]) -> dict[str, Any]:
    return data["plan"] if "format" in data else data


def _shape_text(entry: dict[str, Any]) -> str:
    shapes = _shapes(entry)
    if not shapes:
        return "(replicated)"
    groups: dict[tuple[int, ...], int] = {}
    for s in shapes:
        groups[tuple(s)] = groups.get(tuple(s), 0) + 1
    return " + ".join(f"{n} x {list(s)}" for s, n in groups.items())


def format_diff(diff: PlanDiff, name_a: str, name_b: str) -> str:
    """The diff as text."""
    lines = [f"Plan diff: {name_a} -> {name_b}"]
    if not diff.changes:
        lines.append("  tables: no changes")
    else:
        lines.append(f"  tables moved: {', '.join(diff.moved) or 'none'}")
        width = max(len(c.table) for c in diff.changes)
        for c in diff.changes:
            lines.append(f"  {c.table:<{width}}  {c.what:<7} {c.before} -> {c.after}")
    lines += ["", f"Memory per rank ({diff.memory_basis}), GiB:"]
    for rank, x, y in diff.memory:
        delta = y - x
        mark = "" if delta == 0 else f"  {'+' if delta > 0 else '-'}{gib(abs(delta))}"
        lines.append(f"  rank {rank:>3}: {gib(x):>8} -> {gib(y):>8}{mark}")
    return "\n".join(lines) + "\n"
