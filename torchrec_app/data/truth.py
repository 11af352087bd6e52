"""``truth.json``: what the generator planted, and the oracle metrics a model can approach.

``torchrec-app generate`` writes it beside the TSV files; ``preprocess`` copies it next
to the Parquet; training reads it with :func:`load_truth` to print how far a model is
from the oracle (the metrics of the true click probabilities), computed with the same
functions as the trainer's (:mod:`torchrec_app.metrics.binary`).
"""

from __future__ import annotations

import json
import os

from torchrec_app.utils.fs import write_json_atomic

TRUTH_FILE = "truth.json"


def load_truth(data_dir: str) -> dict | None:
    """The parsed ``truth.json`` of ``data_dir``, or None when there is none.

    Raises:
        ValueError: the file exists but is not valid JSON (names the path).
    """
    path = os.path.join(data_dir, TRUTH_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); regenerate it with `torchrec-app generate`") from None


def write_truth(out_dir: str, truth: dict) -> str:
    """Write ``truth`` as ``out_dir/truth.json`` (atomically) and return its path."""
    path = os.path.join(out_dir, TRUTH_FILE)
    write_json_atomic(path, truth)
    return path
