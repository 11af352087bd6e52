"""``metadata.json``: the description of a preprocessed dataset that training builds from.

``preprocess`` writes it last, atomically, so a directory holding it is a complete
dataset. Schema (``format_version`` 1)::

    {
      "format_version": 1,
      "kind": "criteo",                        # the layout of rows: which batch reader reads them
      "label": "label",
      "dense_features": ["I1", ..., "I13"],
      "sparse_features": ["C1", ..., "C26"],
      "multi_hot": false,                      # true: sparse columns are list<int>
      "num_embeddings": {"C1": 1461, ...},     # rows of each feature's table
      "id_strategies": {"C1": "vocab", ...},   # vocab or hash
      "min_frequency": 1, "hash_size": 0,
      "split_policy": "explicit",              # explicit | kaggle_days | criteo_1tb_days | random
      "split_rows": {"train": N, "valid": M, "test": K},
      "files": {"train": [{"path": "train/part-00000.parquet", "rows": n}, ...], ...},
      "sources": [{"path": "/abs/train.txt", "bytes": 123, "split": "train"}, ...],
      "bad_rows_skipped": 0,
      "dense_transform": "log(1 + max(x, 0)), missing -> 0",
      "vocab_dir": "vocab",                    # per-feature vocabularies and counts
      "extra": {}                              # the kind's own schema (e.g. sequence features)
    }

Parquet columns: ``label`` (int8), ``I1..I13`` (float32, transformed), ``C1..C26``
(int32/int64 ids, or lists of them when multi-hot).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from torchrec_app.utils.fs import write_json_atomic

METADATA_FILE = "metadata.json"
FORMAT_VERSION = 1


@dataclass(kw_only=True, slots=True)
class SplitFile:
    """One Parquet file of a split, relative to the dataset directory."""

    path: str
    rows: int


@dataclass(kw_only=True, slots=True)
class DatasetMetadata:
    """What ``metadata.json`` holds (see the module docstring for the meaning of each field)."""

    kind: str = "criteo"
    label: str = "label"
    dense_features: list[str]
    sparse_features: list[str]
    multi_hot: bool = False
    num_embeddings: dict[str, int]
    id_strategies: dict[str, str] = field(default_factory=dict)
    min_frequency: int = 1
    hash_size: int = 0
    split_policy: str = "explicit"
    split_rows: dict[str, int] = field(default_factory=dict)
    files: dict[str, list[SplitFile]] = field(default_factory=dict)
    sources: list[dict] = field(default_factory=list)
    bad_rows_skipped: int = 0
    dense_transform: str = "log(1 + max(x, 0)), missing -> 0"
    vocab_dir: str = "vocab"
    extra: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict:
        return asdict(self)


def save_metadata(data_dir: str, meta: DatasetMetadata) -> str:
    """Write ``data_dir/metadata.json`` atomically (temporary name, then rename)."""
    path = os.path.join(data_dir, METADATA_FILE)
    write_json_atomic(path, meta.to_json())
    return path


def load_metadata(data_dir: str) -> DatasetMetadata:
    """The metadata of the dataset in ``data_dir``.

    Raises:
        FileNotFoundError: no ``metadata.json`` (not preprocessed, or preprocessing did not
            finish); names the path.
        ValueError: the file is corrupt or of another format version; names the path.
    """
    path = os.path.join(data_dir, METADATA_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} not found: {data_dir} is not a complete preprocessed dataset; run "
            f"`torchrec-app preprocess ... --out {data_dir}` (a run that was interrupted leaves no metadata.json)"
        )
    try:
        with open(path) as f:
            raw = json.load(f)
        if raw.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format_version {raw.get('format_version')!r}, expected {FORMAT_VERSION}")
        raw["files"] = {split: [SplitFile(**entry) for entry in entries] for split, entries in raw.get("files", {}).items()}
        meta = DatasetMetadata(**raw)
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{path}: corrupt or unsupported dataset metadata ({err}); rerun `torchrec-app preprocess`") from None
    missing = [f for f in meta.sparse_features if f not in meta.num_embeddings]
    if missing:
        raise ValueError(f"{path}: num_embeddings lacks {missing}; rerun `torchrec-app preprocess`")
    return meta
