"""``torchrec-app suggest-dims``: per-feature embedding widths from a trained DCNv2, under a budget.

    torchrec-app suggest-dims --run runs/my-run --budget-fraction 0.6     # 60% of today's dense FLOPs
    torchrec-app suggest-dims --run runs/my-run --budget-params 2000000   # embedding parameters
    torchrec-app suggest-dims --run runs/my-run --budget-flops 400000     # dense-tower FLOPs / sample

Reads the first cross layer's per-dimension feature importance (as ``explain`` does),
reallocates widths with :func:`torchrec_app.tools.explain.suggest_dims.suggest_dims` and writes
to ``--out`` (default ``<run>/explain``):

    dims.txt          one override, ``sparse.dims=C1:16,C2:8,...``
    suggestion.json   widths, importance and costs before and after

and prints the command that retrains with them (the run's recipe, the run's own overrides
recovered from its config.json, and ``$(cat dims.txt)``): no code change.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from torchrec_app.config import AppConfig, ConfigError, build_recipe

#: Run settings that must not be carried to a retrain with other widths.
NOT_CARRIED = ("recipe", "sparse.dims", "sharding.plan_file", "checkpoint.load_from")


#: The shared flags this command uses (see torchrec_app.cli).
COMMON_FLAGS = ('data', 'out')

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", default=None, help="run directory: read its newest complete checkpoint and config.json")
    parser.add_argument("--checkpoint", default=None, help="checkpoint directory (instead of --run)")
    parser.add_argument("--layer", type=int, default=0, help="cross layer whose importance to use")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--budget-params", type=float, default=None, help="most embedding parameters (sum rows x width)")
    budget.add_argument("--budget-flops", type=float, default=None, help="most dense-tower forward FLOPs per sample")
    budget.add_argument("--budget-fraction", type=float, default=None,
                        help="most dense-tower FLOPs as a fraction of the run's (default 0.7 if no budget is given)")
    parser.add_argument("--multiple", type=int, default=4, help="every width a multiple of this (4 or 8)")
    parser.add_argument("--min-dim", type=int, default=4, help="smallest width")
    parser.add_argument("--max-dim", type=int, default=0, help="largest width (0: 4x the widest now)")
    parser.add_argument("--power", type=float, default=1.0, help="strength of the reallocation (0: scale all alike)")


def _override_text(value: Any) -> str:
    """A config value as ``section.key=`` override text.

    >>> [_override_text(v) for v in ([512, 1], {"C1": 8}, True, 0.5)]
    ['512,1', 'C1:8', 'true', '0.5']
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items())
    return str(value)


def overrides_between(base: AppConfig, target: AppConfig) -> list[str]:
    """The ``section.key=value`` overrides that turn recipe config ``base`` into ``target``.

    >>> from dataclasses import replace
    >>> tiny = build_recipe("tiny")
    >>> overrides_between(tiny, replace(tiny, train=replace(tiny.train, epochs=2, seed=3)))
    ['train.epochs=2', 'train.seed=3']
    """
    found: list[str] = []

    def walk(a: Any, b: Any, key: str) -> None:
        if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
            for f in dataclasses.fields(a):
                walk(getattr(a, f.name), getattr(b, f.name), f"{key}.{f.name}" if key else f.name)
        elif a != b and key not in NOT_CARRIED:
            found.append(f"{key}={_override_text(b)}")

    walk(base, target, "")
    return found


def budget_of(args: argparse.Namespace, flops_now: float) -> tuple[str, float]:
    """(``params`` or ``flops``, the budget) from the command line."""
    if args.budget_params is not None:
        return "params", args.budget_params
    if args.budget_flops is not None:
        return "flops", args.budget_flops
    fraction = 0.7 if args.budget_fraction is None else args.budget_fraction
    if fraction <= 0:
        raise ConfigError(f"--budget-fraction must be > 0, got {fraction}")
    return "flops", fraction * flops_now


def run(args: argparse.Namespace, config: AppConfig) -> int:
    from torchrec_app.tools.explain.blocks import block_scores, rank_features
    from torchrec_app.tools.explain.cost import dense_tower_cost, table_params
    from torchrec_app.tools.explain.feed_cost import feed_tower_cost
    from torchrec_app.tools.explain.report import output_dir
    from torchrec_app.tools.explain.suggest_dims import DISCRIMINATING_RATIO, importance_spread, suggest_dims
    from torchrec_app.tools.explain.trained_model import find_checkpoint, read_trained_cross, run_model_inputs
    from torchrec_app.utils.fs import write_text_atomic

    checkpoint = find_checkpoint(args.run, args.checkpoint, config.checkpoint.verify_checksums)
    config, metadata = run_model_inputs(checkpoint, args.data)  # the run's own config and dataset
    trained = read_trained_cross(checkpoint, config, metadata, args.layer)
    importance = {r.names[0]: r.normalized for r in rank_features(block_scores(trained.weight, trained.layout))}
    # widths of tables only (the feed model's history blocks are encoder outputs: ranked, not resized)
    current = {n: w for n, w in zip(trained.layout.names[1:], trained.layout.widths[1:]) if n in trained.table_rows}
    spread = importance_spread(importance)
    num_dense = trained.num_dense or config.sparse.num_dense
    tower_costs: dict[tuple[int, ...], Any] = {}
    tower_cost = feed_tower_cost if config.model.name == "feed" else dense_tower_cost  # the feed tower also reads histories

    def tower(dims: dict[str, int]):
        key = tuple(dims.values())
        if key not in tower_costs:
            tower_costs[key] = tower_cost(config, num_dense, dims)
        return tower_costs[key]

    before = tower(current)
    kind, budget = budget_of(args, before.flops)
    cost = (lambda d: table_params(trained.table_rows, d)) if kind == "params" else (lambda d: tower(d).flops)
    try:
        dims = suggest_dims(importance, current, cost, budget, multiple=args.multiple, min_dim=args.min_dim,
                            max_dim=args.max_dim or None, power=args.power)
    except ValueError as err:
        raise ConfigError(f"suggest-dims: {err}") from None
    after = tower(dims)

    out = output_dir(args.out, trained)
    out.mkdir(parents=True, exist_ok=True)
    override = "sparse.dims=" + _override_text(dims)
    write_text_atomic(out / "dims.txt", override + "\n")
    report = {
        "checkpoint": str(checkpoint), "budget": {"kind": kind, "value": budget},
        "importance": importance, "importance_spread": spread, "discriminates": spread >= DISCRIMINATING_RATIO,
        "dims_before": current, "dims_after": dims,
        "before": {"table_params": table_params(trained.table_rows, current), "tower_params": before.params, "tower_flops": before.flops},
        "after": {"table_params": table_params(trained.table_rows, dims), "tower_params": after.params, "tower_flops": after.flops},
    }
    write_text_atomic(out / "suggestion.json", json.dumps(report, indent=1) + "\n")

    if spread < DISCRIMINATING_RATIO:
        print(f"warning: feature importance barely varies ({min(importance.values()):.3g} to {max(importance.values()):.3g}, "
              f"max/min {spread:.2f} < {DISCRIMINATING_RATIO}): it does not discriminate between features here, so the "
              "widths below mostly follow the budget, not the features (train longer or on more data for a ranking)")
    print(f"{'feature':<8} {'importance':>10} {'dim':>4} -> {'new':>4}")
    for f in sorted(current, key=lambda f: -importance[f]):
        print(f"{f:<8} {importance[f]:>10.4g} {current[f]:>4} -> {dims[f]:>4}")
    for name in ("table_params", "tower_params", "tower_flops"):
        print(f"{name}: {report['before'][name]:,} -> {report['after'][name]:,}")
    print(f"budget ({kind}): {budget:,.0f}; wrote {out / 'dims.txt'} and {out / 'suggestion.json'}")
    carried = overrides_between(build_recipe(config.recipe), config) if config.recipe else []
    print("retrain with:\n  torchrec-app train --recipe " + " ".join(
        [config.recipe, "--data", args.data or "DATA", *carried, f"$(cat {out / 'dims.txt'})"]))
    return 0
