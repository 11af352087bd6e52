"""``torchrec-app ensemble``: combine ranking runs' top-K lists; weights fitted on validation, scored on test.

    torchrec-app ensemble --runs runs/ease runs/sasrec [runs/multivae] --out runs/ensemble [fusion.candidates=100]

Two ensembles of the same candidates (each run's top ``fusion.candidates``): the priority
heuristic (items proposed by more runs first, then by the runs' order on the command line)
and weighted reciprocal-rank fusion with weights fitted on the valid split. Both are scored
on test and compared, user by user, with the run that is best on validation
(:mod:`torchrec_app.tools.fusion.ensemble`). The runs must hold the same users and targets
(the same dataset and protocol) and ``details/{valid,test}.parquet``.
"""

from __future__ import annotations

import argparse

from torchrec_app.config import AppConfig, ConfigError

#: The shared flags this command uses (see torchrec_app.cli).
COMMON_FLAGS = ("out",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", nargs="+", required=True, help="run directories (first = highest priority for the priority heuristic)")


def print_comparisons(label: str, results: list[dict]) -> None:
    """One line per metric: best single, the combination, difference and its paired interval."""
    print(f"  {label} vs best single (test, paired bootstrap 95%):")
    for r in results:
        print(f"    {r['metric']:<10} {r['mean_a']:.4f} -> {r['mean_b']:.4f}  {r['diff']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]  p={r['p_value']:.4f}")


def run(args: argparse.Namespace, config: AppConfig) -> int:
    from torchrec_app.tools.fusion.ensemble import run_ensemble

    if not args.out:
        raise ConfigError("ensemble needs --out DIR (where its summary.json and details/ go)")
    try:
        summary = run_ensemble(args.runs, args.out, config.fusion, config.ranking.ks, config.ranking.save_top_k)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    metric = config.fusion.fit_metric
    weights = ", ".join(f"{w:.2f}" for w in summary["rrf_weights"])
    print(f"ensemble of {len(args.runs)} runs; best single on valid: {summary['best_single_run']}; RRF weights fitted on valid: [{weights}]")
    print(f"  test {metric}: best single {summary['test_best_single'][metric]:.4f} | priority {summary['test_priority'][metric]:.4f} "
          f"| rrf {summary['test_rrf'][metric]:.4f}")  # fmt: skip
    for method in ("priority", "rrf"):
        print_comparisons(method, summary["test_vs_best_single"][method])
    print(f"  written: {args.out}/summary.json, {args.out}/details/")
    return 0
