"""Typed config sections for the data side: generation, preprocessing and reading.

Each section is owned by the component that reads it (``generate``, ``preprocess``,
``reader``); the root tree in :mod:`torchrec_app.config.schema` only gathers them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(kw_only=True, slots=True)
class ReaderConfig:
    """How training reads a preprocessed Parquet dataset into per-rank batches."""

    shuffle_buffer_rows: int = 65536
    """Rows held in the training shuffle buffer (0: read in file order)."""
    prefetch_batches: int = 4
    """Batches prepared ahead by a background thread (0: read on demand), or waiting in the
    reader process's queue (reader_process)."""
    reader_process: bool = False
    """Prepare the training batches in a separate process per rank and hand them over in shared
    memory (same batches, same order, so resume stays exact), instead of a thread of the trainer's
    process: decoding then neither holds the trainer's GIL nor adds threads to its cores.
    Evaluation keeps the thread."""
    reader_nice: int = 0
    """With reader_process: the reader process's niceness increment (os.nice; 0: the trainer's priority)."""
    max_ind_range: int = 0
    """If > 0, ids are taken modulo this and tables capped at this many rows (MLPerf)."""

    def __post_init__(self) -> None:
        if self.shuffle_buffer_rows < 0 or self.prefetch_batches < 0 or self.max_ind_range < 0:
            raise ValueError("data.shuffle_buffer_rows, data.prefetch_batches and data.max_ind_range must be >= 0")
        if not 0 <= self.reader_nice <= 19:
            raise ValueError(f"data.reader_nice must be in 0..19 (an os.nice increment), got {self.reader_nice}")


ID_STRATEGIES = ("vocab", "hash")
BAD_ROW_POLICIES = ("error", "skip")
PARQUET_COMPRESSIONS = ("none", "snappy", "zstd", "lz4")


@dataclass(kw_only=True, slots=True)
class PreprocessConfig:
    """How ``torchrec-app preprocess`` turns Criteo TSV/CSV files into Parquet."""

    id_strategy: str = "vocab"
    """Default id strategy of every sparse feature: vocab (frequency-thresholded vocabulary
    built on the train split) or hash (raw id modulo hash_size, MLPerf's max_ind_range)."""
    feature_strategies: dict[str, str] = field(default_factory=dict)
    """Per-feature overrides of id_strategy, e.g. {"C3": "hash"}."""
    hash_size: int = 0
    """Table size for hash features (must be > 0 when any feature uses hash; checked when the
    run starts, so overrides may set id_strategy and hash_size in either order)."""
    min_frequency: int = 1
    """vocab: ids seen fewer times than this in train map to the reserved index 0."""
    multi_hot: bool = False
    """Sparse fields hold several ids separated by multi_hot_separator (Parquet list columns)."""
    multi_hot_separator: str = ","
    """Separator of the ids inside one multi-hot field."""
    on_bad_rows: str = "error"
    """error: stop at the first bad row, naming file, line and field; skip: drop and count them."""
    max_bad_rows: int = 1000
    """skip: still fail once more than this many rows were skipped in total."""
    split_seed: int = 0
    """Seed of the random split policy."""
    block_bytes: int = 16 << 20
    """Bytes of text parsed at a time per worker (bounds memory)."""
    row_group_rows: int = 131072
    """Rows per Parquet row group (the unit a rank reads)."""
    compression: str = "lz4"
    """Parquet compression: none, snappy, zstd or lz4."""
    workers: int = 0
    """Worker processes (0: one per CPU core)."""

    def __post_init__(self) -> None:
        for name, value in (("id_strategy", self.id_strategy), *((f"feature_strategies.{k}", v) for k, v in self.feature_strategies.items())):
            if value not in ID_STRATEGIES:
                raise ValueError(f"preprocess.{name}={value!r} is not one of {', '.join(ID_STRATEGIES)}")
        if self.on_bad_rows not in BAD_ROW_POLICIES:
            raise ValueError(f"preprocess.on_bad_rows={self.on_bad_rows!r} is not one of {', '.join(BAD_ROW_POLICIES)}")
        if self.compression not in PARQUET_COMPRESSIONS:
            raise ValueError(f"preprocess.compression={self.compression!r} is not one of {', '.join(PARQUET_COMPRESSIONS)}")
        for name in ("min_frequency", "block_bytes", "row_group_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"preprocess.{name} must be >= 1, got {getattr(self, name)}")
        if self.hash_size < 0 or self.max_bad_rows < 0 or self.workers < 0:
            raise ValueError("preprocess.hash_size, preprocess.max_bad_rows and preprocess.workers must be >= 0")
        if len(self.multi_hot_separator) != 1 or self.multi_hot_separator in "\t\n\r":
            raise ValueError(f"preprocess.multi_hot_separator must be one character other than tab/newline, got {self.multi_hot_separator!r}")

    def check_hash_size(self) -> None:
        """Raise ValueError when a feature uses hash but ``hash_size`` is not set.

        >>> PreprocessConfig(id_strategy="hash").check_hash_size()
        Traceback (most recent call last):
        ...
        ValueError: preprocess.hash_size must be > 0 when a feature uses the hash id strategy (e.g. preprocess.hash_size=40000000)
        """
        if (self.id_strategy == "hash" or "hash" in self.feature_strategies.values()) and self.hash_size <= 0:
            raise ValueError("preprocess.hash_size must be > 0 when a feature uses the hash id strategy (e.g. preprocess.hash_size=40000000)")

    def strategy_of(self, feature: str) -> str:
        """The id strategy of ``feature``.

        >>> PreprocessConfig(feature_strategies={"C3": "hash"}, hash_size=10).strategy_of("C3")
        'hash'
        """
        return self.feature_strategies.get(feature, self.id_strategy)


#: MLPerf DLRM-DCNv2's multi-hot sizes (ids per sample) of the 26 Criteo tables.
MLPERF_MULTI_HOT_SIZES = [3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1]


@dataclass(kw_only=True, slots=True)
class GeneratorConfig:
    """How ``torchrec-app generate`` writes Criteo-format TSV from a planted click model."""

    rows: int = 1_000_000
    """Total rows over train/valid/test (8:1:1)."""
    seed: int = 0
    """Seed of the click model and of the rows (same seed and rows: same files)."""
    base_ctr: float = 0.25
    """Mean click probability."""
    logit_std: float = 1.25
    """Standard deviation of the logit around the intercept (sets the oracle AUC, ~0.78)."""
    cross_share: float = 0.45
    """Share of the logit variance from the planted categorical x categorical crosses."""
    dense_cross_share: float = 0.1
    """Share of the logit variance from the dense x categorical cross."""
    crosses: list[str] = field(default_factory=lambda: ["C1:C2", "C5:C8", "C14:C17", "C3:C7"])
    """Planted categorical x categorical crosses, written A:B."""
    dense_cross: str = "I5:C6"
    """Planted dense x categorical cross, written I:C."""
    zipf_exponent: float = 1.1
    """Exponent of the long-tailed (Zipf-like) id distribution of each field."""
    max_cardinality: int = 200_000
    """Cap on the number of distinct ids of one field."""
    multi_hot: bool = False
    """Write several ids per sparse field (MLPerf DLRM-DCNv2 synthetic shape)."""
    multi_hot_sizes: list[int] = field(default_factory=lambda: list(MLPERF_MULTI_HOT_SIZES))
    """Ids per sample of each of the 26 sparse fields in multi-hot mode."""
    multi_hot_separator: str = ","
    """Separator of the ids inside one multi-hot field."""
    chunk_rows: int = 500_000
    """Rows generated at a time (bounds memory)."""

    def __post_init__(self) -> None:
        if self.rows < 0:
            raise ValueError(f"generate.rows must be >= 0, got {self.rows}")
        if not 0.0 < self.base_ctr < 1.0:
            raise ValueError(f"generate.base_ctr must be in (0, 1), got {self.base_ctr}")
        if self.logit_std <= 0 or self.zipf_exponent <= 0 or self.max_cardinality < 2 or self.chunk_rows < 1:
            raise ValueError("generate.logit_std and generate.zipf_exponent must be > 0, generate.max_cardinality >= 2, generate.chunk_rows >= 1")
        if self.cross_share < 0 or self.dense_cross_share < 0 or self.cross_share + self.dense_cross_share >= 1:
            raise ValueError("generate.cross_share and generate.dense_cross_share must be >= 0 and sum to < 1")
        for text in [*self.crosses, self.dense_cross]:
            if len(text.split(":")) != 2:
                raise ValueError(f"generate.crosses/dense_cross: expected A:B, got {text!r}")
        if len(self.multi_hot_sizes) != 26 or min(self.multi_hot_sizes) < 1:
            raise ValueError(f"generate.multi_hot_sizes must be 26 values >= 1, got {self.multi_hot_sizes}")
        if len(self.multi_hot_separator) != 1 or self.multi_hot_separator in "\t\n\r":
            raise ValueError(f"generate.multi_hot_separator must be one character other than tab/newline, got {self.multi_hot_separator!r}")
