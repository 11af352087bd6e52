"""``torchrec-app preprocess``: Criteo TSV/CSV files -> Parquet + ``metadata.json``.

    torchrec-app preprocess --train train.txt --valid valid.txt [--test test.txt] --out DIR
    torchrec-app preprocess --input train.txt --split kaggle_days --out DIR
    torchrec-app preprocess --input day_0.gz ... day_23.gz --split criteo_1tb_days --out DIR \\
        preprocess.id_strategy=hash preprocess.hash_size=40000000
    torchrec-app preprocess --input train.txt --split kaggle_days --score test.txt --out DIR

    torchrec-app preprocess --kind sequences --input ml-1m/ratings.dat --out DIR [--items ml-1m/movies.dat]
    torchrec-app preprocess --kind user_items --input SEQUENCES_DIR --out DIR user_items.protocol=general|sequential

    torchrec-app preprocess --kind feed --train train.parquet --valid valid.parquet --test test.parquet --out DIR \
        [feed_preprocess.negative_keep_rate=0.2] [feed_preprocess.coreset_rate=0.3] ...

How the conversion works: :mod:`torchrec_app.data.preprocess` (Criteo) and
:mod:`torchrec_app.data.sequences.preprocess` (interactions -> per-user sequences, ``docs/SEQUENTIAL.md``).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from torchrec_app.config import AppConfig
from torchrec_app.config.data import PreprocessConfig
from torchrec_app.data.criteo_format import DataFormatError
from torchrec_app.data.preprocess import count_rows, preprocess_dataset
from torchrec_app.data.splits import SPLITS, Source, explicit_sources, policy_sources

#: The shared flags this command uses (see torchrec_app.cli).
COMMON_FLAGS = ('recipe', 'out')

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``torchrec-app preprocess`` (tunables are in the ``preprocess`` config section)."""
    parser.add_argument("--train", nargs="+", metavar="FILE", help="files whose rows are the train split")
    parser.add_argument("--valid", nargs="+", metavar="FILE", help="files whose rows are the valid split")
    parser.add_argument("--test", nargs="+", metavar="FILE", help="files whose rows are the test split")
    parser.add_argument("--input", nargs="+", metavar="FILE", help="files split by --split")
    parser.add_argument("--split", choices=("kaggle_days", "criteo_1tb_days", "random", "leave_one_out", "time_cut"),
                        help="split policy for --input (sequences: leave_one_out or time_cut, default sequence_preprocess.split)")
    parser.add_argument("--kind", choices=("criteo", "sequences", "user_items", "feed"), default="criteo",
                        help="criteo: Criteo TSV/CSV; sequences: MovieLens ratings (u.data, ratings.dat, ratings.csv) or "
                             "user,item,timestamp[,rating] CSV/Parquet -> per-user sequences (the sequence_preprocess section); "
                             "user_items: --input SEQUENCES_DIR -> the user-item layout of EASE / Multi-VAE (the user_items "
                             "section: protocol general or sequential, docs/GENERAL.md); "
                             "feed: feed impressions, Parquet with list columns or JSON Lines (the feed_preprocess section)")
    parser.add_argument("--items", default=None, metavar="FILE",
                        help="sequences: the movies file (default: u.item / movies.dat / movies.csv beside the ratings)")
    parser.add_argument("--score", nargs="+", metavar="FILE",
                        help="unlabeled rows (e.g. Kaggle's test.txt) for prediction: a 'score' split with the same ids, "
                             "an 'id' column and no label; training ignores it")  # fmt: skip
    parser.add_argument("--on-bad-rows", choices=("error", "skip"), default=None, help="preprocess.on_bad_rows")
    parser.add_argument("--max-bad-rows", type=int, default=None, help="preprocess.max_bad_rows")
    parser.add_argument("--workers", type=int, default=None, help="preprocess.workers (0: all cores)")
    parser.add_argument("--multi-hot", action="store_true", help="sparse fields hold several ids (preprocess.multi_hot)")


def sources_from_args(args: argparse.Namespace, config: PreprocessConfig) -> tuple[str, list[Source]]:
    """The split policy and sources named on the command line."""
    explicit = {s: getattr(args, s) for s in SPLITS if getattr(args, s)}
    scoring = explicit_sources({"score": explicit.pop("score", None) or []})
    if explicit and args.input:
        raise ValueError("pass either --train/--valid/--test FILES or --input FILES --split POLICY, not both")
    if args.input:
        if not args.split:
            raise ValueError("--input needs --split kaggle_days|criteo_1tb_days|random")
        return args.split, policy_sources(args.split, args.input, config.split_seed, count_rows) + scoring
    if args.split:
        raise ValueError("--split applies to --input FILES")
    if "train" not in explicit and not (scoring and not explicit):
        raise ValueError("pass --train FILES (and --valid/--test FILES), or --input FILES --split POLICY")
    return "explicit", explicit_sources(explicit) + scoring


def run(args: argparse.Namespace, config: AppConfig) -> int:
    """Entry point of ``torchrec-app preprocess``."""
    if args.kind == "sequences":
        return _run_sequences(args, config)
    if args.kind == "user_items":
        return _run_user_items(args, config)
    if args.kind == "feed":
        return _run_feed(args, config)
    pre = config.preprocess
    pre = replace(
        pre,
        on_bad_rows=args.on_bad_rows or pre.on_bad_rows,
        max_bad_rows=pre.max_bad_rows if args.max_bad_rows is None else args.max_bad_rows,
        workers=pre.workers if args.workers is None else args.workers,
        multi_hot=pre.multi_hot or args.multi_hot,
    )
    if not args.out:
        print("torchrec-app preprocess: error: --out DIR is required", file=sys.stderr)
        return 2
    try:
        policy, sources = sources_from_args(args, pre)
        preprocess_dataset(args.out, sources, pre, split_policy=policy)
    except (DataFormatError, ValueError, OSError) as err:
        print(f"torchrec-app preprocess: error: {err}", file=sys.stderr)
        return 1
    return 0


def _run_sequences(args: argparse.Namespace, config: AppConfig) -> int:
    from torchrec_app.data.sequences.preprocess import preprocess_sequences

    pre = config.sequence_preprocess
    try:
        if not args.out:
            raise ValueError("--out DIR is required")
        if not args.input or args.train or args.valid or args.test:
            raise ValueError("--kind sequences reads --input FILES (ratings / interactions of every split); the split is made here")
        if args.split and args.split not in ("leave_one_out", "time_cut"):
            raise ValueError(f"--split {args.split} is a Criteo policy; sequences split by leave_one_out or time_cut")
        pre = replace(pre, split=args.split or pre.split, on_bad_rows=args.on_bad_rows or pre.on_bad_rows,
                      max_bad_rows=pre.max_bad_rows if args.max_bad_rows is None else args.max_bad_rows)
        meta = preprocess_sequences(args.out, args.input, pre, items_file=args.items)
    except (DataFormatError, ValueError, OSError) as err:
        print(f"torchrec-app preprocess: error: {err}", file=sys.stderr)
        return 1
    extra = meta.extra
    print(f"wrote {args.out}: {extra['users']} users, {extra['items']} items, {extra['interactions']} interactions "
          f"({extra['users_removed_by_k_core']} users / {extra['items_removed_by_k_core']} items removed by the k-core); "
          f"rows {meta.split_rows}; split {meta.split_policy}; genres {len(extra['genres'])}")
    if meta.bad_rows_skipped:
        print(f"  skipped {meta.bad_rows_skipped} bad line(s)")
    return 0


def _run_user_items(args: argparse.Namespace, config: AppConfig) -> int:
    from torchrec_app.data.user_items import derive_user_items

    try:
        if not args.out or not args.input or len(args.input) != 1:
            raise ValueError("--kind user_items needs --input SEQUENCES_DIR (one dataset from `preprocess --kind sequences`) and --out DIR")
        meta = derive_user_items(args.input[0], args.out, config.user_items)
    except (ValueError, OSError) as err:
        print(f"torchrec-app preprocess: error: {err}", file=sys.stderr)
        return 1
    extra = meta.extra
    print(f"wrote {args.out}: protocol {extra['protocol']}, {extra['num_items']} items; rows {meta.split_rows}; "
          f"{extra['train_interactions']} train interactions, {extra['valid_targets']} valid / {extra['test_targets']} test targets")
    return 0


def _run_feed(args: argparse.Namespace, config: AppConfig) -> int:
    from torchrec_app.data.feed.preprocess import preprocess_feed

    pre = config.feed_preprocess
    try:
        if not args.out:
            raise ValueError("--out DIR is required")
        if args.input or args.split or args.score:
            raise ValueError("--kind feed reads --train FILES [--valid FILES] [--test FILES] (raw Parquet or JSON Lines)")
        pre = replace(pre, on_bad_rows=args.on_bad_rows or pre.on_bad_rows,
                      max_bad_rows=pre.max_bad_rows if args.max_bad_rows is None else args.max_bad_rows)
        files = {split: getattr(args, split) for split in ("train", "valid", "test") if getattr(args, split)}
        meta = preprocess_feed(args.out, files, pre)
    except (DataFormatError, ValueError, OSError) as err:
        print(f"torchrec-app preprocess: error: {err}", file=sys.stderr)
        return 1
    sampling = meta.extra["sampling"]
    tables = ", ".join(f"{name} {rows}" for name, rows in meta.extra["feed"]["tables"].items())
    print(f"wrote {args.out}: rows {meta.split_rows}; tables {tables}")
    if sampling["rows"] != sampling["rows_before"]:
        print(f"  train sampled: {sampling['rows_before']} -> {sampling['rows']} rows (after each lever: {sampling['rows_after']}); "
              f"negative_keep_rate {sampling['negative_keep_rate']}")
    if meta.bad_rows_skipped:
        print(f"  skipped {meta.bad_rows_skipped} bad row(s)")
    return 0
