"""Score raw Criteo rows with an exported model: a TSV line in, a click probability out.

    torchrec-app train --recipe default --data data/generated/parquet --out runs/demo
    torchrec-app export --run runs/demo --out runs/demo/model.pt
    python examples/score_criteo_rows.py --model runs/demo/model.pt --run runs/demo \\
        --data data/generated/parquet < data/generated/raw/test.txt

Prints one probability per input row (labeled 40-field rows or unlabeled 39-field ones).
Everything between the text and the probability is the training path's own code
(:mod:`torchrec_app.tools.scoring`): the same parsing, vocabularies, batch layout and model.
"""

from __future__ import annotations

import argparse
import itertools
import sys

from torchrec_app.tools.scoring import CTRScorer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the exported model (torchrec-app export --out FILE)")
    parser.add_argument("--run", required=True, help="the run directory it came from (config.json, metadata.json)")
    parser.add_argument("--data", required=True, help="the dataset it trained on (its vocabularies)")
    parser.add_argument("--batch", type=int, default=4096, help="rows scored at a time")
    args = parser.parse_args(argv)
    scorer = CTRScorer.load(args.model, args.run, args.data)
    lines = iter(sys.stdin)
    while batch := list(itertools.islice(lines, args.batch)):
        for probability in scorer.score_lines(batch):
            print(f"{probability:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
