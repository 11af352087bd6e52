"""Typed config of the home-feed ranker (``model.name=feed``): the ``model.feed`` section.

The feed model (:mod:`torchrec_app.models.feed`) reads a :class:`~torchrec_app.data.feed.batch.FeedBatch`:
pooled features through an ``EmbeddingBagCollection`` (widths from the ``sparse`` section, as
for Criteo), the candidate item and the per-action histories through one unpooled item table
(``t_item``, an ``EmbeddingCollection``), a sequence encoder per history, a DCNv2 cross
network over all of it, and one head per objective (shared-bottom, MMoE or PLE).
See ``docs/MODELS.md`` ("Home-feed ranker").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torchrec_app.config.errors import check_choice

#: sequence encoders of a history (``models/feed/encoders.py``)
FEED_ENCODERS = ("none", "mean", "lstm", "gru", "din", "transformer")
#: multi-task structures over the shared cross network (``models/feed/heads.py``)
FEED_MULTITASK = ("shared_bottom", "mmoe", "ple")


@dataclass(kw_only=True, slots=True)
class FeedModelConfig:
    """The feed model: history encoder, multi-task heads, objectives and their loss weights."""

    encoder: str = "lstm"
    """History encoder, one per action: none (no history: the baseline without it), mean (mean of the
    item embeddings), lstm or gru (packed: padding is never computed; the last hidden state),
    din (DIN-style target attention: the candidate attends over the history), transformer (a small
    transformer over [candidate; history], read at the candidate's position)."""
    item_dim: int = 32
    """Width D of the item table t_item (the candidate and every history read it); sparse.dims["item"] overrides."""
    history_dim: int = 0
    """Width of each history encoder's output, a block of the cross network's input (0: item_dim)."""
    max_history: int = 50
    """Most history items read per action (the newest; the data keeps up to its own max_history)."""
    num_heads: int = 2
    """transformer: attention heads (item_dim must be divisible by it)."""
    num_layers: int = 1
    """lstm, gru, transformer: layers."""
    attention_dims: list[int] = field(default_factory=lambda: [32])
    """din: hidden widths of the attention unit's MLP over [h, c, h - c, h * c]."""
    dropout: float = 0.0
    """Dropout inside the encoders and the experts."""
    multitask: str = "shared_bottom"
    """shared_bottom (one tower per objective over the shared cross network's output), mmoe (Ma et
    al. 2018: experts over the cross output, one softmax gate per objective) or ple (Tang et al.
    2020, one CGC level: shared experts plus each objective's own)."""
    num_experts: int = 4
    """mmoe: experts; ple: shared experts."""
    task_experts: int = 1
    """ple: experts of each objective's own."""
    expert_dims: list[int] = field(default_factory=lambda: [64])
    """mmoe, ple: MLP widths of each expert."""
    tower_dims: list[int] = field(default_factory=lambda: [32])
    """MLP widths of each objective's tower before its logit."""
    objectives: list[str] = field(default_factory=list)
    """Objectives trained and scored (empty: all of FeedBatch's OBJECTIVES); one objective = single-task."""
    loss_weights: dict[str, float] = field(default_factory=dict)
    """Static per-objective loss weights, e.g. {"chat": 5.0} (missing: 1.0)."""
    weighting: str = "static"
    """How per-objective losses combine into the trained loss: static (sum of loss_weights x loss);
    uncertainty (Kendall et al. 2018: learned log-variances s_k, loss sum exp(-s_k) L_k + s_k / 2);
    dwa (Liu et al. 2019: weights from each loss's descent rate over periods of dwa_period steps).
    Schemes register themselves in models/feed/losses.py (WEIGHTINGS); models/feed/weighting.py."""
    dwa_period: int = 50
    """weighting=dwa: training steps per period (the paper's epoch) whose mean losses set the next weights."""
    dwa_temperature: float = 2.0
    """weighting=dwa: softmax temperature over the loss ratios (larger: closer to equal weights)."""
    any_head: str = "auto"
    """An auxiliary "any positive" head (needed to undo negative downsampling's bias): auto (when the
    dataset's metadata records extra.sampling.negative_keep_rate < 1), on, off."""

    def __post_init__(self) -> None:
        check_choice("model.feed", "encoder", self.encoder, FEED_ENCODERS)
        check_choice("model.feed", "multitask", self.multitask, FEED_MULTITASK)
        check_choice("model.feed", "any_head", self.any_head, ("auto", "on", "off"))
        for name in ("item_dim", "max_history", "num_heads", "num_layers", "num_experts", "task_experts"):
            if getattr(self, name) <= 0:
                raise ValueError(f"model.feed.{name} must be > 0, got {getattr(self, name)}")
        if self.history_dim < 0:
            raise ValueError(f"model.feed.history_dim must be >= 0, got {self.history_dim}")
        if self.item_dim % self.num_heads:
            raise ValueError(f"model.feed.item_dim={self.item_dim} must be divisible by model.feed.num_heads={self.num_heads}")
        for name in ("attention_dims", "expert_dims", "tower_dims"):
            if not getattr(self, name) or min(getattr(self, name)) <= 0:
                raise ValueError(f"model.feed.{name} needs at least one positive width, got {getattr(self, name)}")
        if self.dwa_period <= 0 or self.dwa_temperature <= 0:
            raise ValueError(f"model.feed.dwa_period and dwa_temperature must be > 0, got {self.dwa_period}, {self.dwa_temperature}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.feed.dropout must be in [0, 1), got {self.dropout}")
        for objective, weight in self.loss_weights.items():
            if weight < 0:
                raise ValueError(f'model.feed.loss_weights["{objective}"] must be >= 0, got {weight}')
