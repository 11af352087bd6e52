"""The one typed config tree of a run.

Every component gets its own section (plus runtime objects), never the root: the model
builder reads ``model`` and ``sparse``, the planner ``sharding``, the optimizers ``optim``,
the loop ``train``, the reader ``data``. Sections validate themselves in
``__post_init__`` so a bad value fails at start-up with the field's name. Field
docstrings are the documentation (``torchrec-app show-config`` prints them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torchrec_app.config.compression import CompressionSpec, parse_compression
from torchrec_app.config.data import GeneratorConfig, PreprocessConfig, ReaderConfig
from torchrec_app.config.errors import check_choice
from torchrec_app.config.feed import FeedModelConfig
from torchrec_app.config.feed_data import FeedGeneratorConfig, FeedPreprocessConfig
from torchrec_app.config.general import EaseConfig, FusionConfig, MultiVaeConfig, UserItemsConfig
from torchrec_app.config.sequences import RankingEvalConfig, SequenceGeneratorConfig, SequenceModelConfig, SequencePreprocessConfig

SHARDING_TYPES = (
    "data_parallel", "table_wise", "row_wise", "column_wise", "table_row_wise", "table_column_wise", "grid_shard",
)
CROSS_KINDS = ("full", "low_rank", "mixture")
COMPUTE_KERNELS = ("", "fused", "fused_uvm_caching", "fused_uvm", "dense")
COMM_PRECISIONS = ("", "fp32", "fp16", "bf16")
TABLE_DTYPES = ("fp32", "fp16", "bf16")
AMP_DTYPES = ("", "bf16")
STRUCTURES = ("stacked", "parallel")
MASKNET_STRUCTURES = ("serial", "parallel")
SPARSE_OPTIMIZERS = ("adagrad", "rowwise_adagrad", "adam", "sgd")
DENSE_OPTIMIZERS = ("adagrad", "adam", "sgd")


def _check_positive(section: str, **values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{section}.{name} must be > 0, got {value}")


@dataclass(kw_only=True, slots=True)
class CrossConfig:
    """DCNv2 cross network (``torchrec.modules.crossnet``)."""

    kind: str = "low_rank"
    """full (CrossNet), low_rank (LowRankCrossNet) or mixture (LowRankMixtureCrossNet)."""
    num_layers: int = 3
    """Number of cross layers."""
    low_rank: int = 512
    """Rank r of U V^T for low_rank and mixture (clipped to the input width)."""
    num_experts: int = 4
    """Experts for mixture."""

    def __post_init__(self) -> None:
        check_choice("model.cross", "kind", self.kind, CROSS_KINDS)
        _check_positive("model.cross", num_layers=self.num_layers, low_rank=self.low_rank, num_experts=self.num_experts)


@dataclass(kw_only=True, slots=True)
class DCNv3Config:
    """DCNv3 (Li et al. 2024): exponential (ECN) and linear (LCN) cross networks, Tri-BCE loss."""

    num_deep_layers: int = 4
    """ECN layers (x <- x * (c + b) + x): interaction order 2^L."""
    num_shallow_layers: int = 4
    """LCN layers (x <- x0 * (c + b) + x): interaction order L + 1."""
    deep_dropout: float = 0.1
    """Dropout after each ECN layer."""
    shallow_dropout: float = 0.3
    """Dropout after each LCN layer."""
    layer_norm: bool = True
    """Self-mask reads ReLU(LayerNorm(H)); off: ReLU(H)."""
    field_halves: bool = True
    """Reorder x0 as the reference does: first halves of every field, then second halves,
    so each field's two halves share one cross unit (one unmasked, one masked)."""

    def __post_init__(self) -> None:
        _check_positive("model.dcnv3", num_deep_layers=self.num_deep_layers, num_shallow_layers=self.num_shallow_layers)
        for name, rate in (("deep_dropout", self.deep_dropout), ("shallow_dropout", self.shallow_dropout)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"model.dcnv3.{name} must be in [0, 1), got {rate}")


@dataclass(kw_only=True, slots=True)
class MaskNetConfig:
    """MaskNet (Wang et al. 2021): MaskBlocks with an instance-guided mask from the embeddings."""

    structure: str = "serial"
    """serial (blocks chained, widths block_dims, then a linear logit) or parallel
    (num_blocks blocks of width block_dim side by side, then over_arch)."""
    block_dims: list[int] = field(default_factory=lambda: [64, 64, 64])
    """serial: output width of each MaskBlock in turn."""
    num_blocks: int = 4
    """parallel: number of MaskBlocks, each reading the (layer-normed) embeddings."""
    block_dim: int = 64
    """parallel: output width of each MaskBlock."""
    reduction_ratio: float = 1.0
    """Aggregation width of the mask MLP = int(ratio x the width it masks)."""
    embedding_layer_norm: bool = True
    """Layer-normalise each field's embedding (its own LN) before the first block."""
    dropout: float = 0.0
    """Dropout after each MaskBlock."""

    def __post_init__(self) -> None:
        check_choice("model.masknet", "structure", self.structure, MASKNET_STRUCTURES)
        _check_positive("model.masknet", num_blocks=self.num_blocks, block_dim=self.block_dim,
                        reduction_ratio=self.reduction_ratio)
        if not self.block_dims or min(self.block_dims) <= 0:
            raise ValueError(f"model.masknet.block_dims needs at least one positive width, got {self.block_dims}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.masknet.dropout must be in [0, 1), got {self.dropout}")


@dataclass(kw_only=True, slots=True)
class ModelConfig:
    """Dense side of the model; the architecture is picked from the model registry by name."""

    name: str = "dcnv2"
    """Registered architecture: dlrm (dot interaction), dcnv2 (cross network), dcnv3 (ECN + LCN)
    or masknet (MaskBlocks); next-item models sasrec, bert4rec, gru4rec, s3rec (the sequence section)."""
    dense_arch: list[int] = field(default_factory=lambda: [512, 256, 64])
    """MLP over the dense features; for dlrm its last width must equal the embedding dim."""
    over_arch: list[int] = field(default_factory=lambda: [512, 256, 1])
    """MLP to the logit (last width 1). For dcnv2 parallel, all but the last form the deep tower;
    masknet parallel reads it; dcnv3 and masknet serial do not use it."""
    structure: str = "stacked"
    """dcnv2 only: stacked (cross -> deep) or parallel (cross || deep, concatenated)."""
    cross: CrossConfig = field(default_factory=CrossConfig)
    """dcnv2 only: the cross network."""
    dcnv3: DCNv3Config = field(default_factory=DCNv3Config)
    """dcnv3 only: its two cross networks."""
    masknet: MaskNetConfig = field(default_factory=MaskNetConfig)
    """masknet only: its MaskBlocks."""
    compile: bool = False
    """CTR towers: torch.compile (CPU/GPU inductor) every dense part of the tower (dense arch,
    interaction, over arch; not the tables). Off by default: measured in docs/BENCHMARKS.md.
    Fails at start-up with one clear error if inductor cannot compile here (no C++ compiler)."""

    feed: FeedModelConfig = field(default_factory=FeedModelConfig)
    """feed only (the home-feed ranker): history encoders, multi-task heads, objectives (docs/MODELS.md)."""

    def __post_init__(self) -> None:
        check_choice("model", "structure", self.structure, STRUCTURES)
        if not self.dense_arch or not self.over_arch:
            raise ValueError("model.dense_arch and model.over_arch need at least one layer")
        if self.over_arch[-1] != 1:
            raise ValueError(f"model.over_arch must end in 1 (the logit), got {self.over_arch}")


@dataclass(kw_only=True, slots=True)
class SparseConfig:
    """Embedding tables: one table per sparse feature, named ``t_<feature>``; compressed
    features get partition tables ``t_<feature>__p<j>`` instead (``docs/EMBEDDINGS.md``)."""

    embedding_dim: int = 64
    """Default embedding width."""
    dims: dict[str, int] = field(default_factory=dict)
    """Per-feature width overrides, e.g. {"C3": 16} (dcnv2 only; dlrm needs one width)."""
    num_embeddings: list[int] = field(default_factory=list)
    """Rows per table when no dataset metadata gives them (random data, plan inspection)."""
    num_dense: int = 13
    """Dense features when no dataset metadata gives them."""
    pooling: str = "sum"
    """Pooling of multi-hot bags: sum or mean."""
    data_type: str = "fp32"
    """Storage type of the table weights: fp32, fp16 or bf16 (fp16/bf16 halve table memory).
    fp16/bf16 tables are never data-parallel (the dense optimizer would update them in half
    precision: NaN), and bf16 trains only on cuda (FBGEMM has no CPU bf16 kernel); both are
    checked against the plan and device at start-up (``distributed/sharders.py``)."""
    compress: dict[str, str] = field(default_factory=dict)
    """Per-feature table compression, e.g. {"C3": "qr:4:mult"}: full, hash:C (ceil(n/C) rows, ids
    collide), qr:C[:OP] (quotient-remainder, every id unique; OP mult, add or concat) or
    mr:K[:OP] (K mixed-radix partitions of ~n^(1/K) rows each). Always applied."""
    compress_default: str = "full"
    """Compression of features not in compress whose table has more than compress_min_rows rows."""
    compress_min_rows: int = 0
    """Tables with at most this many rows keep compress_default from applying (the paper's threshold)."""
    compress_max_bag: int = 1
    """mult only: the largest bag (ids per sample) of a compressed feature; mult composes each id
    before pooling, one lookup slot per bag position (add and concat are exact for any bag)."""

    def __post_init__(self) -> None:
        _check_positive("sparse", embedding_dim=self.embedding_dim, num_dense=self.num_dense,
                        compress_max_bag=self.compress_max_bag)
        check_choice("sparse", "pooling", self.pooling, ("sum", "mean"))
        check_choice("sparse", "data_type", self.data_type, TABLE_DTYPES)
        for feature, dim in self.dims.items():
            _check_positive("sparse.dims", **{feature: dim})
        for i, rows in enumerate(self.num_embeddings):
            _check_positive("sparse.num_embeddings", **{f"[{i}]": rows})
        for feature, spec in self.compress.items():
            parse_compression(spec, f'sparse.compress["{feature}"]')
        parse_compression(self.compress_default, "sparse.compress_default")
        if self.compress_min_rows < 0:
            raise ValueError(f"sparse.compress_min_rows must be >= 0, got {self.compress_min_rows}")

    def compression_of(self, feature: str, rows: int) -> CompressionSpec:
        """The compression of ``feature`` whose full table has ``rows`` rows.

        >>> cfg = SparseConfig(compress={"C1": "hash:2"}, compress_default="qr:4", compress_min_rows=100)
        >>> [cfg.compression_of(f, n).method for f, n in [("C1", 10), ("C2", 10), ("C3", 1000)]]
        ['hash', 'full', 'qr']
        """
        if feature in self.compress:
            return parse_compression(self.compress[feature], f'sparse.compress["{feature}"]')
        if rows > self.compress_min_rows:
            return parse_compression(self.compress_default, "sparse.compress_default")
        return CompressionSpec()


@dataclass(kw_only=True, slots=True)
class ShardingConfig:
    """How the planner may place tables (``EmbeddingShardingPlanner`` constraints)."""

    types: list[str] = field(default_factory=list)
    """Sharding types allowed for every table (empty: any the device supports)."""
    per_table: dict[str, str] = field(default_factory=dict)
    """Per-table allowed types, e.g. {"t_C1": "row_wise"}; '|' separates several."""
    hbm_gb: float = 0.0
    """Per-device HBM for the planner on cuda (0: read from the device)."""
    ddr_gb: float = 0.0
    """Per-host DDR for the planner (0: torchrec's default). On cpu, tables live here."""
    plan_file: str = ""
    """Load this ShardingPlan JSON (from `torchrec-app plan --json`) instead of planning."""
    compute_kernel: str = ""
    """Table kernel for every sharded table (empty: the planner picks). fused: tables in
    device memory; fused_uvm_caching (cuda): tables in host memory behind an HBM cache,
    for tables bigger than HBM; fused_uvm (cuda): host memory, no cache."""
    cache_load_factor: float = 0.2
    """fused_uvm_caching: fraction of each table's rows kept in the HBM cache."""
    qcomms_forward: str = ""
    """Precision of the embedding all-to-all / reduce-scatter in the forward pass
    (empty: fp32; fp16 or bf16 halve the bytes sent)."""
    qcomms_backward: str = ""
    """Precision of the same collectives in the backward pass (empty: fp32; fp16, bf16)."""

    def __post_init__(self) -> None:
        for value in self.types:
            check_choice("sharding", "types", value, SHARDING_TYPES)
        for table, allowed in self.per_table.items():
            for value in allowed.split("|"):
                check_choice("sharding.per_table", table, value, SHARDING_TYPES)
        check_choice("sharding", "compute_kernel", self.compute_kernel, COMPUTE_KERNELS)
        check_choice("sharding", "qcomms_forward", self.qcomms_forward, COMM_PRECISIONS)
        check_choice("sharding", "qcomms_backward", self.qcomms_backward, COMM_PRECISIONS)
        if not 0.0 < self.cache_load_factor <= 1.0:
            raise ValueError(f"sharding.cache_load_factor must be in (0, 1], got {self.cache_load_factor}")


@dataclass(kw_only=True, slots=True)
class OptimConfig:
    """Optimizers: a fused one applied in backward for the tables, a dense one for the rest."""

    sparse: str = "rowwise_adagrad"
    """Fused table optimizer: adagrad, rowwise_adagrad, adam or sgd."""
    sparse_lr: float = 0.05
    """Learning rate of the table optimizer."""
    dense: str = "adagrad"
    """Dense optimizer: adagrad, adam or sgd."""
    dense_lr: float = 0.05
    """Learning rate of the dense optimizer."""
    eps: float = 1e-8
    """Epsilon of adagrad/adam (both sides)."""
    warmup_steps: int = 0
    """Linear warmup from 0 to the base rates over this many steps."""
    decay_start: int = 0
    """Step at which polynomial (quadratic) decay starts (0: no decay)."""
    decay_steps: int = 0
    """Steps over which the rates decay to 0."""

    def __post_init__(self) -> None:
        check_choice("optim", "sparse", self.sparse, SPARSE_OPTIMIZERS)
        check_choice("optim", "dense", self.dense, DENSE_OPTIMIZERS)
        _check_positive("optim", sparse_lr=self.sparse_lr, dense_lr=self.dense_lr, eps=self.eps)
        if self.decay_start and self.decay_steps <= 0:
            raise ValueError("optim.decay_steps must be > 0 when optim.decay_start is set")


@dataclass(kw_only=True, slots=True)
class TrainConfig:
    """The training loop."""

    batch_size: int = 2048
    """Rows per rank per step (the global batch is this x world size)."""
    eval_batch_size: int = 0
    """Rows per rank per evaluation step (0: same as batch_size)."""
    epochs: int = 1
    """Passes over the train split."""
    max_steps: int = 0
    """Stop after this many steps (0: run all epochs)."""
    eval_every: int = 0
    """Validate every this many steps (0: use evals_per_epoch)."""
    evals_per_epoch: int = 0
    """With eval_every=0: validate this many times per epoch, evenly spaced (0: once, at the epoch's end)."""
    log_every: int = 50
    """Write a metrics.jsonl line every this many steps."""
    seed: int = 0
    """Seed for initialisation and shuffling."""
    pipeline: bool = True
    """Use TrainPipelineSparseDist (overlaps input all-to-all with compute)."""
    progress_bar: bool = True
    """Show progress on rank 0: a tqdm bar on a terminal, a line every progress_seconds otherwise."""
    progress_seconds: float = 30.0
    """When stdout is not a terminal (torchx, schedulers, pipes): seconds between progress lines."""
    amp: str = ""
    """Autocast the model's forward to bf16 (empty: off); the loss stays fp32. bf16 needs
    no loss scaling (fp16 would), and runs on CPU as well as CUDA."""
    tf32: bool = True
    """On CUDA, let fp32 matmuls use TF32 tensor cores (no effect on CPU)."""
    early_stop_patience: int = 0
    """Stop after this many validations in a row without improving the monitored validation
    metric (the model family's, e.g. logloss for CTR) (0: never)."""
    restore_best: bool = True
    """With early stopping: keep the best validation's state (a checkpoint under <run>/best)
    and report the final metrics from it."""
    eval_adaptive: bool = False
    """Validate more often as the monitored metric flattens: eval_every (or the evals_per_epoch
    spacing) is the starting interval, halved after a validation that did not improve or whose
    gain per step fell below half the previous one, down to eval_min_every. With early stopping
    the patience validations after the best then take fewer steps (docs/BENCHMARKS.md, time to quality)."""
    eval_min_every: int = 0
    """With eval_adaptive: the smallest validation interval in steps (0: a quarter of the starting one)."""

    def __post_init__(self) -> None:
        _check_positive("train", batch_size=self.batch_size, epochs=self.epochs, log_every=self.log_every)
        check_choice("train", "amp", self.amp, AMP_DTYPES)
        for name in ("eval_batch_size", "max_steps", "eval_every", "evals_per_epoch", "early_stop_patience", "eval_min_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.progress_seconds < 0:
            raise ValueError(f"train.progress_seconds must be >= 0, got {self.progress_seconds}")


@dataclass(kw_only=True, slots=True)
class CheckpointConfig:
    """Sharded DCP checkpoints under ``<run dir>/checkpoints``."""

    every: int = 0
    """Save every this many steps (0: only at the end, if at_end)."""
    keep: int = 2
    """Keep the newest this many complete checkpoints (0: keep all)."""
    at_end: bool = True
    """Save when training ends."""
    resume: bool = True
    """Resume from the newest complete checkpoint in the run directory, if there is one."""
    load_from: str = ""
    """Before training, load model and optimizer state from this checkpoint directory
    (saved under any plan or world size); counters start at zero."""
    verify_checksums: bool = True
    """Check every checkpoint file's CRC-32 against the checkpoint's manifest before loading
    (resume, load_from, export, explain). Sizes are always checked; turn this off only
    for checkpoints so large that reading them twice matters."""

    def __post_init__(self) -> None:
        if self.every < 0 or self.keep < 0:
            raise ValueError("checkpoint.every and checkpoint.keep must be >= 0")


@dataclass(kw_only=True, slots=True)
class BenchConfig:
    """Measurement hooks ``torchrec-app bench`` sets on its training runs (callbacks, not loop code).

    The defaults attach nothing and leave training unchanged."""

    in_memory: bool = False
    """Read each segment's train batches into memory before its timed steps, so the same model
    and plan step without reading (the throughput ceiling)."""
    profile_steps: int = 0
    """Profile this many steps (after a few warm-up steps) with torch.profiler and write the
    step-time split by category to step_profile.json in the run directory (0: off)."""
    stop_at_auc: float = 0.0
    """Stop training once a validation AUC reaches this (MLPerf style; 0: off)."""
    target_aucs: dict[str, float] = field(default_factory=dict)
    """Per-objective targets, e.g. {"click": 0.74, "chat": 0.81}: stop at the first validation where every
    objective's AUC (<objective>/auc) is within target_tolerance of its target ({}: off)."""
    target_tolerance: float = 0.002
    """How far below its target_aucs entry an objective's validation AUC may be and count as reached."""

    def __post_init__(self) -> None:
        if self.profile_steps < 0 or not 0.0 <= self.stop_at_auc < 1.0:
            raise ValueError("bench.profile_steps must be >= 0 and bench.stop_at_auc in [0, 1)")
        if not 0.0 <= self.target_tolerance < 1.0 or any(not 0.0 < v <= 1.0 for v in self.target_aucs.values()):
            raise ValueError(f"bench.target_aucs values must be in (0, 1] and bench.target_tolerance in [0, 1), "
                             f"got {self.target_aucs}, {self.target_tolerance}")  # fmt: skip


@dataclass(kw_only=True, slots=True)
class AppConfig:
    """Root of the config tree: one section per component."""

    recipe: str = "default"
    """Name of the recipe this config was built from."""
    model: ModelConfig = field(default_factory=ModelConfig)
    sparse: SparseConfig = field(default_factory=SparseConfig)
    sharding: ShardingConfig = field(default_factory=ShardingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: ReaderConfig = field(default_factory=ReaderConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    generate: GeneratorConfig = field(default_factory=GeneratorConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    sequence: SequenceModelConfig = field(default_factory=SequenceModelConfig)
    """Next-item models (model.name sasrec, bert4rec, gru4rec, s3rec): docs/SEQUENTIAL.md."""
    ranking: RankingEvalConfig = field(default_factory=RankingEvalConfig)
    """The full-ranking evaluator of next-item (and general) recommenders."""
    sequence_preprocess: SequencePreprocessConfig = field(default_factory=SequencePreprocessConfig)
    """``preprocess --kind sequences``: interactions -> sequences."""
    generate_sequences: SequenceGeneratorConfig = field(default_factory=SequenceGeneratorConfig)
    """``generate --kind sequences``: planted sequences."""
    user_items: UserItemsConfig = field(default_factory=UserItemsConfig)
    """``preprocess --kind user_items``: a sequences dataset -> the user-item layout (docs/GENERAL.md)."""
    ease: EaseConfig = field(default_factory=EaseConfig)
    """EASE (model.name=ease): the closed-form item-item model."""
    multivae: MultiVaeConfig = field(default_factory=MultiVaeConfig)
    """Multi-VAE (model.name=multivae)."""
    fusion: FusionConfig = field(default_factory=FusionConfig)
    """``rerank`` / ``ensemble``: combining several ranking runs."""

    feed_preprocess: FeedPreprocessConfig = field(default_factory=FeedPreprocessConfig)
    """``preprocess --kind feed``: raw feed impressions -> Parquet, and the train-split sampling levers."""
    generate_feed: FeedGeneratorConfig = field(default_factory=FeedGeneratorConfig)
    """``generate --kind feed``: impressions from a planted multi-objective model, with truth.json."""
