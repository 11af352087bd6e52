"""The built-in benchmark dataset: generated Criteo-format rows, preprocessed once and reused.

``dataset_for_bench(None, rows)`` returns ``data/generated/bench-<rows>/parquet``, making
it with the same ``generate`` and ``preprocess`` code as the README's data on first use
(about 10 s for 500k rows). A ``--data DIR`` given by the user (Criteo Kaggle or 1TB,
preprocessed) is used as is.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from torchrec_app.config.data import GeneratorConfig, PreprocessConfig
from torchrec_app.data.generate import generate_dataset
from torchrec_app.data.preprocess import preprocess_dataset
from torchrec_app.data.splits import explicit_sources

GENERATED_ROOT = Path("data/generated")


def dataset_for_bench(data: str | None, rows: int, generator: GeneratorConfig, preprocess: PreprocessConfig,
                      log=print) -> Path:  # fmt: skip
    """The Parquet dataset to benchmark on: ``data`` if given, else the generated one (made if missing)."""
    if data:
        if not (Path(data) / "metadata.json").exists():
            raise FileNotFoundError(f"--data {data}: no metadata.json there; pass a directory written by `torchrec-app preprocess`")
        return Path(data)
    root = GENERATED_ROOT / f"bench-{rows}"
    parquet = root / "parquet"
    if (parquet / "metadata.json").exists():
        return parquet
    log(f"bench: generating {rows:,} rows of planted-signal data into {root} (once; reused by later runs)")
    raw = root / "raw"
    generate_dataset(str(raw), replace(generator, rows=rows))
    sources = explicit_sources({s: [os.path.join(raw, f"{s}.txt")] for s in ("train", "valid", "test")})
    preprocess_dataset(str(parquet), sources, preprocess, log=lambda *a: None)
    return parquet
