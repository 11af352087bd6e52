"""``torchrec-app generate``: data with planted signal, and its ``truth.json``.

    torchrec-app generate --rows 1000000 --out data/generated/raw               # Criteo-format TSV, click model
    torchrec-app generate --kind sequences --out data/generated/seq_raw        # MovieLens-1M-format item sequences
    torchrec-app generate --kind feed --rows 200000 --out data/generated/feed_raw  # feed impressions (Parquet or JSON Lines)
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

from torchrec_app.config import AppConfig

#: The shared flags this command uses (see torchrec_app.cli).
COMMON_FLAGS = ('recipe', 'out')

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``torchrec-app generate`` (tunables are in the ``generate`` config section)."""
    parser.add_argument("--rows", type=int, default=None, help="total rows, split 8:1:1 (default: generate.rows)")
    parser.add_argument("--seed", type=int, default=None, help="seed (default: generate.seed)")
    parser.add_argument("--multi-hot", action="store_true", help="several ids per sparse field (generate.multi_hot)")
    parser.add_argument("--kind", choices=("criteo", "sequences", "feed"), default="criteo",
                        help="criteo: click-model TSV (the generate section); sequences: item sequences in MovieLens-1M "
                             "format (the generate_sequences section); feed: home-feed impressions with histories and "
                             "five objectives (the generate_feed section)")


def run(args: argparse.Namespace, config: AppConfig) -> int:
    """Entry point of ``torchrec-app generate``."""
    if args.kind == "sequences":
        return _run_sequences(args, config)
    if args.kind == "feed":
        return _run_feed(args, config)
    from torchrec_app.data.generate import generate_dataset

    gen = config.generate
    gen = replace(gen, rows=gen.rows if args.rows is None else args.rows, seed=gen.seed if args.seed is None else args.seed,
                  multi_hot=gen.multi_hot or args.multi_hot)  # fmt: skip
    out = args.out or os.path.join("data", "generated", "criteo_synth")
    start = time.perf_counter()
    truth = generate_dataset(out, gen)
    seconds = time.perf_counter() - start
    print(f"wrote {gen.rows} rows to {out} in {seconds:.1f}s ({gen.rows / max(seconds, 1e-9):,.0f} rows/s)")
    for split, stats in truth["oracle"].items():
        if stats["rows"]:
            print(f"  {split}: {stats['rows']} rows, ctr {stats['ctr']:.3f}, oracle auc {stats['auc']:.4f}, logloss {stats['logloss']:.4f}")
    print(f"  planted crosses: {truth['crosses']}, dense x categorical: {truth['dense_crosses']}")
    return 0


def _run_sequences(args: argparse.Namespace, config: AppConfig) -> int:
    from torchrec_app.data.sequences.generate import generate_sequence_dataset

    gen = config.generate_sequences
    gen = replace(gen, seed=gen.seed if args.seed is None else args.seed)
    out = args.out or os.path.join("data", "generated", "seq_raw")
    start = time.perf_counter()
    truth = generate_sequence_dataset(out, gen)
    print(f"wrote {truth['interactions']} interactions of {gen.users} users over {truth['items_present']} items to "
          f"{out} (ratings.dat, movies.dat, truth.json) in {time.perf_counter() - start:.1f}s")
    for split, metrics in truth["oracle"].items():
        pop = truth["popularity"][split]
        print(f"  {split} (leave-one-out): oracle ndcg@10 {metrics['ndcg@10']:.4f}, recall@10 {metrics['recall@10']:.4f}; "
              f"popularity ndcg@10 {pop['ndcg@10']:.4f}")
    print(f"  next: torchrec-app preprocess --kind sequences --recipe sasrec --input {os.path.join(out, 'ratings.dat')} --out DIR")
    return 0


def _run_feed(args: argparse.Namespace, config: AppConfig) -> int:
    from torchrec_app.data.feed.generate import generate_feed_dataset

    gen = config.generate_feed
    gen = replace(gen, rows=gen.rows if args.rows is None else args.rows, seed=gen.seed if args.seed is None else args.seed)
    out = args.out or os.path.join("data", "generated", "feed_raw")
    start = time.perf_counter()
    truth = generate_feed_dataset(out, gen)
    seconds = time.perf_counter() - start
    print(f"wrote {gen.rows} impressions ({truth['model']['users']} users, {truth['model']['sessions']} sessions) to {out} "
          f"({', '.join(truth['files'].values())}, truth.json) in {seconds:.1f}s")
    for split, stats in truth["oracle"].items():
        if stats["rows"]:
            per_objective = ", ".join(f"{o} {stats[o]['rate']:.3f}/{stats[o]['auc']:.3f}" for o in truth["objectives"])
            print(f"  {split}: {stats['rows']} rows; rate/oracle auc: {per_objective}")
    files = {split: os.path.join(out, name) for split, name in truth["files"].items()}
    print(f"  next: torchrec-app preprocess --kind feed --train {files['train']} --valid {files['valid']} --test {files['test']} --out DIR")
    return 0
