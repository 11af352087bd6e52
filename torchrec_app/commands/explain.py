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
import json
from pathlib import Path

from torchrec_app.config import AppConfig
from torchrec_app.data.metadata import load_metadata
from torchrec_app.tools.explain.blocks import BlockScores, Ranked, block_scores, rank_crosses, rank_features
from torchrec_app.tools.explain.heatmap import write_heatmaps
from torchrec_app.tools.explain.trained_model import TrainedCross, find_checkpoint, read_trained_cross, run_dir_of
from torchrec_app.utils.fs import write_text_atomic

PROXIES = {
    "full": "W = kernels[l]",
    "low_rank": "W = W_kernels[l] @ V_kernels[l]",
    "mixture": "W ~ mean_k U_k[l] @ C_k[l] @ V_k[l] (ReLU as identity, uniform gates)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", default=None, help="run directory: read its newest complete checkpoint")
    parser.add_argument("--checkpoint", default=None, help="checkpoint directory (instead of --run)")
    parser.add_argument("--layer", type=int, default=0, help="cross layer to read (0: the first, x0 with x0)")
    parser.add_argument("--top", type=int, default=10, help="crosses and features to print")


def feature_order(data: str | None) -> list[str] | None:
    """The dataset's sparse feature order (``--data``), or None for Criteo's."""
    return load_metadata(data).sparse_features if data else None


def output_dir(out: str | None, trained: TrainedCross) -> Path:
    """``--out``, else ``<run>/explain`` beside the checkpoints, else ``explain``."""
    if out:
        return Path(out)
    run = run_dir_of(trained.checkpoint)
    return (run / "explain") if run else Path("explain")


def ranking_tsv(rows: list[Ranked], widths: dict[str, int]) -> str:
    """A ranking as TSV: rank by normalized score, the plain score and its own rank.

    >>> print(ranking_tsv([Ranked(("a", "b"), 2.0, 0.5), Ranked(("a", "c"), 3.0, 0.25)], {"a": 4, "b": 4, "c": 8}), end="")
    rank	names	widths	normalized	plain	plain_rank
    1	a x b	4x4	0.5	2	2
    2	a x c	4x8	0.25	3	1
    """
    plain_rank = {r.names: k for k, r in enumerate(sorted(rows, key=lambda r: -r.plain), start=1)}
    lines = ["rank\tnames\twidths\tnormalized\tplain\tplain_rank"]
    for k, r in enumerate(rows, start=1):
        lines.append(f"{k}\t{' x '.join(r.names)}\t{'x'.join(str(widths[n]) for n in r.names)}\t"
                     f"{r.normalized:.6g}\t{r.plain:.6g}\t{plain_rank[r.names]}")
    return "\n".join(lines) + "\n"


def write_explanation(trained: TrainedCross, scores: BlockScores, out: Path) -> dict[str, Path]:
    """Write blocks.json, crosses.tsv, features.tsv and heatmap.png into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    layout = scores.layout
    widths = dict(zip(layout.names, layout.widths))
    crosses, features = rank_crosses(scores), rank_features(scores)
    blocks = {
        "checkpoint": str(trained.checkpoint), "kind": trained.kind, "layer": trained.layer,
        "weight": PROXIES[trained.kind], "orientation": "row i = output feature, column j = input feature",
        "names": list(layout.names), "widths": list(layout.widths),
        "plain": scores.plain.tolist(), "normalized": scores.normalized.tolist(),
        "features": {r.names[0]: {"normalized": r.normalized, "plain": r.plain} for r in features},
    }
    paths = {name: out / name for name in ("blocks.json", "crosses.tsv", "features.tsv", "heatmap.png")}
    write_text_atomic(paths["blocks.json"], json.dumps(blocks, indent=1) + "\n")
    write_text_atomic(paths["crosses.tsv"], ranking_tsv(crosses, widths))
    write_text_atomic(paths["features.tsv"], ranking_tsv(features, widths))
    write_heatmaps(scores, paths["heatmap.png"], f"{trained.kind} cross layer {trained.layer}: {trained.checkpoint}")
    return paths


def run(args: argparse.Namespace, config: AppConfig) -> int:
    checkpoint = find_checkpoint(args.run, args.checkpoint, config.checkpoint.verify_checksums)
    trained = read_trained_cross(checkpoint, feature_order(args.data), args.layer)
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
