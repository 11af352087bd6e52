"""Typed config sections of next-item recommendation (sequential models over item sequences).

One section per component: ``SequencePreprocessConfig`` (interactions -> per-user
sequences and splits), ``SequenceGeneratorConfig`` (planted sequences for tests and the
CPU benchmark), ``SequenceModelConfig`` (SASRec, BERT4Rec, GRU4Rec and the S3Rec-style
pretraining) and ``RankingEvalConfig`` (the full-ranking evaluator). See
``docs/SEQUENTIAL.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SEQUENCE_FORMATS = ("auto", "ml-100k", "ml-1m", "ml-csv", "interactions")
SEQUENCE_SPLITS = ("leave_one_out", "time_cut")
SEQUENCE_LOSSES = ("full", "sampled", "in_batch")
SEQUENCE_ENCODERS = ("sasrec", "bert4rec", "gru4rec")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(kw_only=True, slots=True)
class SequencePreprocessConfig:
    """How ``torchrec-app preprocess --kind sequences`` turns interactions into training rows."""

    format: str = "auto"
    """Input format: auto (from the file name), ml-100k (u.data), ml-1m (ratings.dat),
    ml-csv (ratings.csv of ML-20M/25M/32M/latest), interactions (user,item,timestamp[,rating] CSV or Parquet)."""
    rating_threshold: float = 0.0
    """Implicit feedback: keep interactions with rating >= this (0: keep all interactions)."""
    min_user_interactions: int = 5
    """k-core: users with fewer interactions are removed (iterated with min_item_interactions)."""
    min_item_interactions: int = 5
    """k-core: items with fewer interactions are removed (iterated with min_user_interactions)."""
    split: str = "leave_one_out"
    """leave_one_out (each user's last item -> test, second-last -> valid) or time_cut (global
    times: interactions before valid_time train; each user's first one in [valid_time, test_time)
    is a valid target, the first at or after test_time a test target)."""
    valid_time: float = 0.8
    """time_cut: the valid cut, a quantile of all interaction times if <= 1, else a Unix time."""
    test_time: float = 0.9
    """time_cut: the test cut, a quantile if <= 1, else a Unix time (must be after valid_time)."""
    max_len: int = 200
    """Items per training row: a user's training sequence is cut, from its end, into windows of
    max_len + 1 items overlapping by one, so every item but the first is a target exactly once."""
    row_group_rows: int = 4096
    """Rows per Parquet row group."""
    on_bad_rows: str = "error"
    """error: stop at the first bad line, naming file and line; skip: drop and count bad lines."""
    max_bad_rows: int = 1000
    """skip: still fail once more than this many lines were dropped."""

    def __post_init__(self) -> None:
        _check(self.format in SEQUENCE_FORMATS, f"sequence_preprocess.format={self.format!r} is not one of {', '.join(SEQUENCE_FORMATS)}")
        _check(self.split in SEQUENCE_SPLITS, f"sequence_preprocess.split={self.split!r} is not one of {', '.join(SEQUENCE_SPLITS)}")
        _check(self.on_bad_rows in ("error", "skip"), f"sequence_preprocess.on_bad_rows={self.on_bad_rows!r} is not one of error, skip")
        _check(self.min_user_interactions >= 1 and self.min_item_interactions >= 1,
               "sequence_preprocess.min_user_interactions and min_item_interactions must be >= 1")
        _check(self.max_len >= 1 and self.row_group_rows >= 1 and self.max_bad_rows >= 0,
               "sequence_preprocess.max_len and row_group_rows must be >= 1, max_bad_rows >= 0")
        _check(0 < self.valid_time and 0 < self.test_time, "sequence_preprocess.valid_time and test_time must be > 0")
        _check(self.valid_time < self.test_time or (self.valid_time > 1 >= self.test_time),
               f"sequence_preprocess.valid_time ({self.valid_time}) must be before test_time ({self.test_time})")


@dataclass(kw_only=True, slots=True)
class SequenceGeneratorConfig:
    """How ``torchrec-app generate --kind sequences`` plants sequential structure.

    Each next item ``j`` after item ``i`` for user ``u`` is drawn (never repeating an item
    the user already has) from the mixture ``transition * T[i, j] + taste * softmax(u . v_j /
    temperature) + popularity * p_j``; see :mod:`torchrec_app.data.sequences.generate`.
    """

    users: int = 2000
    """Number of users."""
    items: int = 1000
    """Catalog size."""
    genres: int = 12
    """Latent item clusters, written as genres (the side information)."""
    dim: int = 8
    """Dimension of the latent user tastes and item vectors."""
    min_len: int = 8
    """Shortest sequence."""
    mean_len: int = 40
    """Mean sequence length (min_len + a geometric excess)."""
    max_len: int = 200
    """Longest sequence."""
    transition: float = 0.5
    """Weight of the item-to-item transitions."""
    taste: float = 0.35
    """Weight of the user's taste."""
    popularity: float = 0.15
    """Weight of item popularity."""
    successors: int = 4
    """Items each item transitions to (mostly in its own genre)."""
    temperature: float = 0.5
    """Temperature of the taste softmax (lower: more peaked)."""
    zipf_exponent: float = 1.0
    """Exponent of the popularity distribution."""
    seed: int = 0
    """Seed of the planted model and of the sequences."""

    def __post_init__(self) -> None:
        _check(self.users >= 1 and self.items >= 2 and self.genres >= 1 and self.dim >= 1 and self.successors >= 1,
               "generate_sequences: users, genres, dim, successors must be >= 1 and items >= 2")
        _check(self.min_len >= 3, f"generate_sequences.min_len must be >= 3, got {self.min_len}")
        _check(min(self.transition, self.taste, self.popularity) >= 0 and self.transition + self.taste + self.popularity > 0,
               "generate_sequences: transition, taste, popularity must be >= 0 with a positive sum")
        _check(self.temperature > 0 and self.zipf_exponent >= 0, "generate_sequences: temperature > 0 and zipf_exponent >= 0")

    def check_lengths(self) -> None:
        """Raise ValueError unless ``min_len <= mean_len <= max_len < items`` (checked when generating,
        so overrides may set them in any order).

        >>> SequenceGeneratorConfig(items=100, max_len=200).check_lengths()
        Traceback (most recent call last):
        ...
        ValueError: generate_sequences: need min_len <= mean_len <= max_len < items, got 8, 40, 200, 100
        """
        _check(self.min_len <= self.mean_len <= self.max_len < self.items,
               f"generate_sequences: need min_len <= mean_len <= max_len < items, got {self.min_len}, {self.mean_len}, "
               f"{self.max_len}, {self.items}")


@dataclass(kw_only=True, slots=True)
class SequenceModelConfig:
    """SASRec / BERT4Rec / GRU4Rec (``model.name``) and their options."""

    max_len: int = 200
    """Items the encoder reads (the most recent ones); positions of the position embedding."""
    embedding_dim: int = 64
    """Width D of the item table (and of every side table and the encoder)."""
    num_blocks: int = 2
    """Transformer blocks (sasrec, bert4rec) or GRU layers (gru4rec)."""
    num_heads: int = 2
    """Attention heads (sasrec, bert4rec)."""
    ffn_dim: int = 0
    """Width of the transformer's feed-forward layer (0: 4 x embedding_dim for bert4rec, embedding_dim for sasrec)."""
    hidden_dim: int = 0
    """gru4rec: GRU hidden width (0: embedding_dim)."""
    dropout: float = 0.2
    """Dropout on embeddings, attention and feed-forward outputs."""
    loss: str = "full"
    """full (softmax over the whole catalog), sampled (softmax over the target and
    num_negatives shared uniform negatives) or in_batch (the batch's other targets are the negatives)."""
    num_negatives: int = 128
    """sampled: negatives per batch (shared by every position)."""
    mask_prob: float = 0.2
    """bert4rec: probability that a position is masked (cloze); at least one per sequence."""
    side_info: bool = False
    """Add genre (mean of the item's genres) and year embeddings to each input item's embedding."""
    backbone: str = "sasrec"
    """model.name=s3rec (S3Rec-style pretraining): the encoder whose weights are pretrained, sasrec or
    bert4rec; fine-tune it afterwards with model.name=<backbone> sequence.pretrained_from=<exported file>."""
    aap_weight: float = 0.2
    """s3rec: weight of associated attribute prediction (an item's genres from its position's output)."""
    mip_weight: float = 1.0
    """s3rec: weight of masked item prediction (sampled softmax over num_negatives)."""
    map_weight: float = 1.0
    """s3rec: weight of masked attribute prediction (a masked item's genres)."""
    pretrained_from: str = ""
    """Tensors of a pretraining run (``torchrec-app export --run DIR --out FILE``) whose item, genre and
    year tables and encoder initialise this model (a resumed checkpoint overrides them)."""
    mask_seed: int = 0
    """Seed of bert4rec's / pretraining's masks (a hash of seed, step, user and position, so resumable)."""

    def __post_init__(self) -> None:
        _check(self.loss in SEQUENCE_LOSSES, f"sequence.loss={self.loss!r} is not one of {', '.join(SEQUENCE_LOSSES)}")
        _check(self.max_len >= 2 and self.embedding_dim >= 1 and self.num_blocks >= 1 and self.num_heads >= 1,
               "sequence.max_len must be >= 2 and embedding_dim, num_blocks, num_heads >= 1")
        _check(self.embedding_dim % self.num_heads == 0,
               f"sequence.embedding_dim={self.embedding_dim} must be divisible by sequence.num_heads={self.num_heads}")
        _check(self.ffn_dim >= 0 and self.hidden_dim >= 0 and self.num_negatives >= 1, "sequence.ffn_dim, hidden_dim >= 0, num_negatives >= 1")
        _check(0 <= self.dropout < 1 and 0 < self.mask_prob < 1, "sequence.dropout must be in [0, 1) and mask_prob in (0, 1)")
        _check(self.backbone in ("sasrec", "bert4rec"), f"sequence.backbone={self.backbone!r} is not one of sasrec, bert4rec")
        _check(min(self.aap_weight, self.mip_weight, self.map_weight) >= 0, "sequence.aap_weight, mip_weight, map_weight must be >= 0")


@dataclass(kw_only=True, slots=True)
class RankingEvalConfig:
    """The full-ranking evaluator (:mod:`torchrec_app.metrics.ranking`)."""

    ks: list[int] = field(default_factory=lambda: [10, 20])
    """Cut-offs of Recall@K and NDCG@K."""
    mask_seen: bool = True
    """Remove the items a user has interacted with before from that user's ranking."""
    save_top_k: int = 100
    """Length of each user's saved top-K list in the per-user results (0: none)."""
    item_block: int = 65536
    """Items scored at a time (bounds memory: users x item_block scores)."""

    def __post_init__(self) -> None:
        _check(bool(self.ks) and min(self.ks) >= 1, f"ranking.ks must be positive cut-offs, got {self.ks}")
        _check(self.save_top_k >= 0 and self.item_block >= 1, "ranking.save_top_k must be >= 0 and item_block >= 1")
