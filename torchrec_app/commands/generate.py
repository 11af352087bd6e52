"""``torchrec-app generate``: Criteo-format TSV with a planted click model, and its ``truth.json``."""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

from torchrec_app.config import AppConfig

#: The shared flags this command uses (see torchrec_app.cli).
COMMON_FLAGS = ('out',)

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``torchrec-app generate`` (tunables are in the ``generate`` config section)."""
    parser.add_argument("--rows", type=int, default=None, help="total rows, split 8:1:1 (default: generate.rows)")
    parser.add_argument("--seed", type=int, default=None, help="seed (default: generate.seed)")
    parser.add_argument("--multi-hot", action="store_true", help="several ids per sparse field (generate.multi_hot)")


def run(args: argparse.Namespace, config: AppConfig) -> int:
    """Entry point of ``torchrec-app generate``."""
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
