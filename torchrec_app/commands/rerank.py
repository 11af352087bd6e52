"""``torchrec-app rerank``: a LightGBM LambdaRank re-ranker over generator runs' candidates, trained on validation.

    torchrec-app rerank --runs runs/ease runs/sasrec --data DIR --out runs/rerank [fusion.candidates=100]

Candidates: the union of each run's top ``fusion.candidates``; features: the runs' ranks
and scores, item popularity and side information, user statistics; labels: the *valid*
targets (test targets are never seen before the final evaluation). ``--data`` is the
user-item dataset of the runs' protocol (``preprocess --kind user_items``), for popularity,
side information and each user's input items. Scored on test against the run best on
validation, paired (:mod:`torchrec_app.tools.fusion.rerank`).
"""

from __future__ import annotations

import argparse

from torchrec_app.config import AppConfig, ConfigError

#: The shared flags this command uses (see torchrec_app.cli).
COMMON_FLAGS = ("data", "out")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", nargs="+", required=True, help="run directories of the generator models")


def run(args: argparse.Namespace, config: AppConfig) -> int:
    from torchrec_app.commands.ensemble import print_comparisons
    from torchrec_app.tools.fusion.rerank import run_rerank

    if not args.out or not args.data:
        raise ConfigError("rerank needs --data DIR (the runs' user-item dataset) and --out DIR")
    try:
        summary = run_rerank(args.runs, args.data, args.out, config.fusion, config.ranking.ks, config.ranking.save_top_k)
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(str(err)) from None
    metric = config.fusion.fit_metric
    print(f"re-ranker over {len(args.runs)} runs' top {config.fusion.candidates}: {summary['best_iteration']} rounds "
          f"(early stopping on held-out valid users); best single on valid: {summary['best_single_run']}")  # fmt: skip
    print(f"  test {metric}: best single {summary['test_best_single'][metric]:.4f} | rerank {summary['test'][metric]:.4f}")
    print_comparisons("rerank", summary["test_vs_best_single"])
    print(f"  written: {args.out}/summary.json, {args.out}/details/test.parquet, {args.out}/reranker.txt")
    return 0
