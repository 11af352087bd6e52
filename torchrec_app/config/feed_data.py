"""Typed config sections of the home-feed data path: generation, preprocessing, sampling levers.

``FeedGeneratorConfig`` (``generate --kind feed``: planted impressions and ``truth.json``)
and ``FeedPreprocessConfig`` (``preprocess --kind feed``: raw Parquet / JSON Lines ->
Parquet with vocabularies, and the train-split sampling levers). See ``docs/DATA.md``,
"Home-feed impressions".
"""

from __future__ import annotations

from dataclasses import dataclass, field

FEED_RAW_FORMATS = ("parquet", "jsonl")
FEED_INPUT_FORMATS = ("auto", *FEED_RAW_FORMATS)
CORESET_SCORES = ("proxy", "file")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(kw_only=True, slots=True)
class FeedGeneratorConfig:
    """How ``torchrec-app generate --kind feed`` draws impressions from a planted multi-objective model."""

    rows: int = 200_000
    """Total impressions over train/valid/test (8:1:1)."""
    seed: int = 0
    """Seed of the planted model and of the rows (same seed and rows: same files)."""
    format: str = "parquet"
    """Raw format written: parquet (list columns) or jsonl (JSON Lines)."""
    items: int = 20_000
    """Distinct candidate / history items."""
    categories: int = 64
    """Item categories (each item has one)."""
    keywords: int = 50_000
    """Keyword vocabulary (each item has 1-4 keywords, Zipf-distributed)."""
    impressions_per_session: int = 10
    """Mean impressions of one session (a session shares one history snapshot)."""
    sessions_per_user: int = 3
    """Mean sessions of one user."""
    max_history: int = 50
    """Most events kept per action history (newest first)."""
    base_rates: dict[str, float] = field(
        default_factory=lambda: {"click": 0.10, "watch": 0.05, "chat": 0.01, "hide": 0.01, "report": 0.002}
    )
    """Mean positive rate of each objective (the intercepts are solved for them)."""
    history_strength: float = 1.0
    """Scale of the effects only the history reveals (candidate / recent-click affinity, past hides)."""
    dim: int = 8
    """Width of the latent item / user vectors."""

    def __post_init__(self) -> None:
        _check(self.rows >= 0, f"generate_feed.rows must be >= 0, got {self.rows}")
        _check(self.format in FEED_RAW_FORMATS, f"generate_feed.format={self.format!r} is not one of {', '.join(FEED_RAW_FORMATS)}")
        _check(self.items >= 10 and self.categories >= 2 and self.keywords >= 10 and self.dim >= 1,
               "generate_feed.items >= 10, categories >= 2, keywords >= 10 and dim >= 1 are required")  # fmt: skip
        _check(self.impressions_per_session >= 1 and self.sessions_per_user >= 1 and self.max_history >= 1,
               "generate_feed.impressions_per_session, sessions_per_user and max_history must be >= 1")  # fmt: skip
        _check(all(0.0 < r < 1.0 for r in self.base_rates.values()),
               f"generate_feed.base_rates must all be in (0, 1), got {self.base_rates}")  # fmt: skip
        _check(self.history_strength >= 0, f"generate_feed.history_strength must be >= 0, got {self.history_strength}")


@dataclass(kw_only=True, slots=True)
class FeedPreprocessConfig:
    """How ``torchrec-app preprocess --kind feed`` turns raw impressions into training Parquet.

    The sampling levers apply to the **train split only**; valid and test stay full-rate, so
    every lever's cost in quality is measured on the same rows.
    """

    format: str = "auto"
    """Raw format: auto (from the file name: .parquet / .jsonl / .json), parquet or jsonl."""
    max_history: int = 50
    """Events kept per action history (the newest; longer raw histories are cut, not an error)."""
    min_frequency: int = 1
    """Ids seen fewer times than this in train map to the reserved index 0 (per vocabulary)."""
    on_bad_rows: str = "error"
    """error: stop at the first bad row, naming file, line and field; skip: drop and count them."""
    max_bad_rows: int = 1000
    """skip: still fail once more than this many rows were skipped in total."""
    row_group_rows: int = 65536
    """Rows per Parquet row group (the unit a rank reads)."""
    negative_keep_rate: float = 1.0
    """Negative downsampling: keep every train row with any positive label and this fraction of
    all-negative rows (recorded as metadata extra.sampling.negative_keep_rate; the model corrects
    its probabilities with it). 1: off."""
    user_keep_rate: float = 1.0
    """Keep the train rows of this fraction of users (drawn by a hash of user and seed). 1: off."""
    session_keep_rate: float = 1.0
    """Keep the train rows of this fraction of sessions (drawn by a hash of session and seed). 1: off."""
    coreset_rate: float = 1.0
    """Core-set selector: keep train row i with probability p_i proportional to its proxy loss
    (expected fraction kept = this), weighted by importance = 1 / p_i, self-normalised to mean 1. 1: off."""
    coreset_score: str = "proxy"
    """Where the core-set's per-row losses come from: proxy (a logistic model fitted here on the
    train split, one pass) or file (coreset_scores_file: a previous run's per-row losses)."""
    coreset_scores_file: str = ""
    """coreset_score=file: Parquet with a float column ``loss``, one row per raw train row, in input order."""
    coreset_uniform_mix: float = 0.1
    """Share of the keep probability spread uniformly (bounds importance by 1 / (rate * mix))."""
    seed: int = 0
    """Seed of every sampling draw (same seed: same rows kept)."""

    def __post_init__(self) -> None:
        _check(self.format in FEED_INPUT_FORMATS, f"feed_preprocess.format={self.format!r} is not one of {', '.join(FEED_INPUT_FORMATS)}")
        _check(self.on_bad_rows in ("error", "skip"), f"feed_preprocess.on_bad_rows={self.on_bad_rows!r} is not one of error, skip")
        _check(self.max_history >= 1 and self.min_frequency >= 1 and self.row_group_rows >= 1 and self.max_bad_rows >= 0,
               "feed_preprocess.max_history, min_frequency and row_group_rows must be >= 1, max_bad_rows >= 0")  # fmt: skip
        for name in ("negative_keep_rate", "user_keep_rate", "session_keep_rate", "coreset_rate"):
            value = getattr(self, name)
            _check(0.0 < value <= 1.0, f"feed_preprocess.{name} must be in (0, 1], got {value}")
        _check(self.coreset_score in CORESET_SCORES, f"feed_preprocess.coreset_score={self.coreset_score!r} is not one of proxy, file")
        mix = self.coreset_uniform_mix
        _check(0.0 < mix <= 1.0, f"feed_preprocess.coreset_uniform_mix must be in (0, 1], got {mix}")

    def check_scores_file(self) -> None:
        """Raise ValueError when the core-set reads a scores file that is not named (checked when the run
        starts, so overrides may set coreset_score and coreset_scores_file in either order).

        >>> FeedPreprocessConfig(coreset_rate=0.5, coreset_score="file").check_scores_file()
        Traceback (most recent call last):
        ...
        ValueError: feed_preprocess.coreset_score=file needs feed_preprocess.coreset_scores_file=PATH
        """
        _check(self.coreset_score != "file" or self.coreset_rate == 1.0 or bool(self.coreset_scores_file),
               "feed_preprocess.coreset_score=file needs feed_preprocess.coreset_scores_file=PATH")  # fmt: skip

    @property
    def samples(self) -> bool:
        """Whether any sampling lever is on."""
        return min(self.negative_keep_rate, self.user_keep_rate, self.session_keep_rate, self.coreset_rate) < 1.0
