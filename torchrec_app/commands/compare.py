"""``torchrec-app compare``: two runs' per-user ranking results, paired, with a confidence interval.

    torchrec-app compare --a runs/sasrec-1 --b runs/bert4rec-1 [--split test] [--metric ndcg@10] [--method bootstrap|t]

Each run of a ranking model writes ``<run>/details/<split>.parquet`` (one row per user:
targets, ranks, Recall@K, NDCG@K, MRR, top-K; :mod:`torchrec_app.metrics.ranking`). The
comparison matches users, checks both runs held out the same targets, and reports the
mean per-user difference ``b - a`` with its paired t or bootstrap interval and p-value.
"""

from __future__ import annotations

import argparse
import json
import os

from torchrec_app.config import AppConfig, ConfigError

#: The shared flags this command uses (see torchrec_app.cli): none; runs are named by --a and --b.
COMMON_FLAGS = ()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--a", required=True, help="run directory (or per-user .parquet file) of model A")
    parser.add_argument("--b", required=True, help="run directory (or per-user .parquet file) of model B")
    parser.add_argument("--split", default="test", help="split whose per-user results to compare (default test)")
    parser.add_argument("--metric", default=None, help="per-user metric (default: every metric of the files)")
    parser.add_argument("--method", choices=("bootstrap", "t"), default="bootstrap", help="interval method")
    parser.add_argument("--confidence", type=float, default=0.95, help="confidence level of the interval")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def details_file(path: str, split: str) -> str:
    """The per-user file of a run directory's split, or ``path`` itself if it is a file."""
    if os.path.isfile(path):
        return path
    candidate = os.path.join(path, "details", f"{split}.parquet")
    if not os.path.isfile(candidate):
        raise ConfigError(f"{candidate} not found: {path} is not a run of a ranking model (next-item / general), "
                          f"or its {split} split was not evaluated")
    return candidate


def run(args: argparse.Namespace, config: AppConfig) -> int:
    from torchrec_app.metrics.ranking import paired_comparison, read_per_user

    try:
        a, b = (read_per_user(details_file(p, args.split)) for p in (args.a, args.b))
        metrics = [args.metric] if args.metric else [c for c in a.column_names if "@" in c or c == "mrr"]
        results = [paired_comparison(a, b, m, args.method, args.confidence) for m in metrics]
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{args.split}: b - a over {results[0]['users']} users ({args.method}, {args.confidence:.0%} interval)")
    print(f"{'metric':<12}{'a':>9}{'b':>9}{'b - a':>10}{'interval':>22}{'p':>9}")
    for r in results:
        interval = f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
        p = f"{r['p_value']:.4f}" if r["p_value"] > 0 else "<1e-4"  # bootstrap: none of 10,000 resamples crossed 0
        print(f"{r['metric']:<12}{r['mean_a']:>9.4f}{r['mean_b']:>9.4f}{r['diff']:>+10.4f}{interval:>22}{p:>9}")
    return 0
