"""``torchrec-app explain``: feature-cross and feature importance from a trained DCNv2's cross layer.

    torchrec-app explain --run runs/my-run [--data DIR] [--layer 0] [--out DIR]

Reads cross layer ``--layer`` (default the first, which crosses ``x0`` with itself) from
the run's newest checkpoint (only its dense tensors, no tables, no process group), splits
``W`` into feature blocks (:mod:`torchrec_app.tools.explain.blocks`) and writes to ``--out``
(default ``<run>/explain``):

    blocks.json    layout (names, widths) and both B x B block-score matrices
    crosses.tsv    every cross {i, j}, ranked by normalized score, with both scores
    features.tsv   every feature (and "dense"), ranked by normalized importance, both scores
    heatmap.png    plain vs normalized block scores side by side
"""

from __future__ import annotations

import argparse

from torchrec_app.config import AppConfig

#: The shared flags this command uses (see torchrec_app.cli).
COMMON_FLAGS = ('data', 'out')

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", default=None, help="run directory: read its newest complete checkpoint")
    parser.add_argument("--checkpoint", default=None, help="checkpoint directory (instead of --run)")
    parser.add_argument("--layer", type=int, default=0, help="cross layer to read (0: the first, x0 with x0)")
    parser.add_argument("--top", type=int, default=10, help="crosses and features to print")


def run(args: argparse.Namespace, config: AppConfig) -> int:
    from torchrec_app.tools.explain.blocks import block_scores, rank_crosses, rank_features
    from torchrec_app.tools.explain.report import PROXIES, output_dir, write_explanation
    from torchrec_app.tools.explain.trained_model import find_checkpoint, read_trained_cross, run_model_inputs

    checkpoint = find_checkpoint(args.run, args.checkpoint, config.checkpoint.verify_checksums)
    trained = read_trained_cross(checkpoint, *run_model_inputs(checkpoint, args.data), args.layer)
    scores = block_scores(trained.weight, trained.layout)
    out = output_dir(args.out, trained)
    write_explanation(trained, scores, out)
    print(f"{trained.checkpoint}: {trained.kind} cross layer {trained.layer}, {PROXIES[trained.kind]}, "
          f"N = {trained.layout.total} ({len(trained.layout.names) - 1} features + dense {trained.layout.widths[0]})")
    for title, rows in (("crosses", rank_crosses(scores)), ("features", rank_features(scores))):
        print(f"top {title} by normalized score (plain norm in brackets):")
        for r in rows[: args.top]:
            print(f"  {' x '.join(r.names):<16} {r.normalized:.4g}  [{r.plain:.4g}]")
    print(f"wrote {out}/blocks.json, crosses.tsv, features.tsv, heatmap.png")
    return 0
