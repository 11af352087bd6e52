"""Named recipes: functions returning a complete :class:`AppConfig`.

Variants copy a base recipe and change fields (``dataclasses.replace``), never add
flags. ``torchrec-app <command> --recipe NAME`` picks one; dotted overrides adjust it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from torchrec_app.config.data import ReaderConfig
from torchrec_app.config.errors import ConfigError
from torchrec_app.config.feed import FeedModelConfig
from torchrec_app.config.general import EaseConfig, MultiVaeConfig
from torchrec_app.config.schema import (
    AppConfig,
    CrossConfig,
    DCNv3Config,
    MaskNetConfig,
    ModelConfig,
    OptimConfig,
    ShardingConfig,
    SparseConfig,
    TrainConfig,
)
from torchrec_app.config.sequences import SequenceModelConfig, SequencePreprocessConfig

RECIPES: dict[str, Callable[[], AppConfig]] = {}

#: Criteo 1TB table sizes with MLPerf's max_ind_range of 40M (torchrec_dlrm's list).
CRITEO_1TB_NUM_EMBEDDINGS = [
    40000000, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 40000000, 3067956, 405282, 10,
    2209, 11938, 155, 4, 976, 14, 40000000, 40000000, 40000000, 590152, 12973, 108, 36,
]  # fmt: skip
#: Criteo Kaggle table sizes (full vocabularies, torchrec_dlrm's list).
CRITEO_KAGGLE_NUM_EMBEDDINGS = [
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27,
    14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
]  # fmt: skip


def recipe(fn: Callable[[], AppConfig]) -> Callable[[], AppConfig]:
    """Register ``fn`` under its name as a recipe."""
    RECIPES[fn.__name__] = fn
    return fn


def build_recipe(name: str) -> AppConfig:
    """Return a fresh config for recipe ``name``."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; known recipes: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]()


@recipe
def default() -> AppConfig:
    """The README's CPU run: DCNv2 (low-rank cross) on the built-in generated data, 2 processes."""
    return AppConfig(
        recipe="default",
        model=ModelConfig(
            name="dcnv2",
            dense_arch=[128, 64],
            over_arch=[256, 128, 1],
            cross=CrossConfig(kind="low_rank", num_layers=3, low_rank=128),
        ),
        sparse=SparseConfig(embedding_dim=16),
        optim=OptimConfig(sparse="rowwise_adagrad", sparse_lr=0.02, dense="adagrad", dense_lr=0.01),
        # CTR models overfit after about an epoch: validate often, stop on validation, keep the best;
        # validate more often as the curve flattens (docs/BENCHMARKS.md: stops 75 steps sooner, same best).
        train=TrainConfig(batch_size=1024, epochs=3, evals_per_epoch=4, log_every=20, early_stop_patience=2, eval_adaptive=True),
        data=ReaderConfig(max_ind_range=100_000),
    )


@recipe
def default_dcnv3() -> AppConfig:
    """The default run with DCNv3 (4 ECN + 4 LCN layers, the reference's dropouts, Tri-BCE).

    Adam on the dense tower: with Adagrad's large first steps the exponential cross
    branch (a high-degree polynomial of the embeddings) diverged (loss ~1e9 by step 20);
    with Adam at 1e-3 and a smaller table rate it trains (docs/MODELS.md)."""
    base = default()
    return replace(
        base,
        recipe="default_dcnv3",
        model=replace(base.model, name="dcnv3", dcnv3=DCNv3Config()),
        optim=replace(base.optim, dense="adam", dense_lr=0.001, sparse_lr=0.01),
    )


@recipe
def default_masknet() -> AppConfig:
    """The default run with serial MaskNet (3 MaskBlocks of width 64, reduction ratio 1)."""
    base = default()
    return replace(base, recipe="default_masknet", model=replace(base.model, name="masknet", masknet=MaskNetConfig()))


@recipe
def tiny() -> AppConfig:
    """Seconds-long runs for tests: small tables and towers."""
    base = default()
    return replace(
        base,
        recipe="tiny",
        model=replace(base.model, dense_arch=[16, 8], over_arch=[16, 1], cross=CrossConfig(kind="low_rank", num_layers=2, low_rank=8)),
        sparse=replace(base.sparse, embedding_dim=8, num_embeddings=[100, 50, 20, 10], num_dense=4),
        optim=replace(base.optim, sparse_lr=0.01, dense_lr=0.005),
        train=replace(base.train, batch_size=64, epochs=1, evals_per_epoch=0, early_stop_patience=0, log_every=5, progress_bar=False,
                      eval_adaptive=False),
        data=replace(base.data, shuffle_buffer_rows=1024, max_ind_range=1000),
    )


@recipe
def criteo_kaggle_dlrm() -> AppConfig:
    """torchrec_dlrm's Kaggle DLRM: dim 128, dense 512-256-128, over 1024-1024-512-256-1, dot interaction."""
    return AppConfig(
        recipe="criteo_kaggle_dlrm",
        model=ModelConfig(name="dlrm", dense_arch=[512, 256, 128], over_arch=[1024, 1024, 512, 256, 1]),
        sparse=SparseConfig(embedding_dim=128, num_embeddings=list(CRITEO_KAGGLE_NUM_EMBEDDINGS)),
        optim=OptimConfig(sparse="adagrad", sparse_lr=15.0, dense="sgd", dense_lr=15.0, warmup_steps=0),
        train=TrainConfig(batch_size=2048, epochs=1, eval_every=0),
    )


@recipe
def criteo_kaggle_dcnv2() -> AppConfig:
    """Kaggle DCNv2 (Wang et al. 2021 setting): dim 16 per feature, low-rank stacked cross, Adam."""
    return AppConfig(
        recipe="criteo_kaggle_dcnv2",
        model=ModelConfig(
            name="dcnv2",
            dense_arch=[512, 256, 16],
            over_arch=[768, 768, 1],
            cross=CrossConfig(kind="low_rank", num_layers=3, low_rank=256),
        ),
        sparse=SparseConfig(embedding_dim=16, num_embeddings=list(CRITEO_KAGGLE_NUM_EMBEDDINGS)),
        optim=OptimConfig(sparse="adam", sparse_lr=1e-3, dense="adam", dense_lr=1e-3),
        train=TrainConfig(batch_size=2048, epochs=1),
    )


@recipe
def criteo_1tb_dcnv2_mlperf() -> AppConfig:
    """MLPerf DLRM-DCNv2 on Criteo 1TB: dim 128, dense 512-256-128, over 1024-1024-512-256-1,
    3 low-rank cross layers of rank 512, Adagrad, 40M-row cap on the largest tables."""
    return AppConfig(
        recipe="criteo_1tb_dcnv2_mlperf",
        model=ModelConfig(
            name="dcnv2",
            dense_arch=[512, 256, 128],
            over_arch=[1024, 1024, 512, 256, 1],
            cross=CrossConfig(kind="low_rank", num_layers=3, low_rank=512),
        ),
        sparse=SparseConfig(embedding_dim=128, num_embeddings=list(CRITEO_1TB_NUM_EMBEDDINGS)),
        optim=OptimConfig(sparse="adagrad", sparse_lr=0.004, dense="adagrad", dense_lr=0.004, eps=1e-8,
                          warmup_steps=0, decay_start=0),
        train=TrainConfig(batch_size=8192, epochs=1, eval_every=0),
        data=ReaderConfig(max_ind_range=40_000_000),
    )


@recipe
def bench_kaggle_like_dlrm() -> AppConfig:
    """The CPU throughput shape ``torchrec-app bench`` reports on, DLRM (dot interaction):
    Kaggle-like 26 tables capped at 100k rows (``data.max_ind_range``), dim 64, dense 512-256-64,
    over 512-512-256-1 (torchrec_dlrm's dlrm_main defaults), batch 2048 per process."""
    base = default()
    return replace(
        base,
        recipe="bench_kaggle_like_dlrm",
        model=ModelConfig(name="dlrm", dense_arch=[512, 256, 64], over_arch=[512, 512, 256, 1]),
        sparse=replace(base.sparse, embedding_dim=64),
        optim=OptimConfig(sparse="rowwise_adagrad", sparse_lr=0.02, dense="adagrad", dense_lr=0.01),
        train=TrainConfig(batch_size=2048, epochs=1, eval_every=0, log_every=10),
        data=replace(base.data, max_ind_range=100_000),
    )


@recipe
def bench_kaggle_like_dcnv2() -> AppConfig:
    """:func:`bench_kaggle_like_dlrm` with DCNv2's cross network instead of the dot interaction:
    3 low-rank cross layers of rank 512 (dlrm_main's ``--interaction_type=dcn`` defaults)."""
    base = bench_kaggle_like_dlrm()
    return replace(
        base,
        recipe="bench_kaggle_like_dcnv2",
        model=replace(base.model, name="dcnv2", cross=CrossConfig(kind="low_rank", num_layers=3, low_rank=512)),
    )


@recipe
def qr_bench_full() -> AppConfig:
    """Compressed-embedding benchmark baseline (docs/EMBEDDINGS.md): full tables, width 16,
    small DCNv2 towers, sized for 2 CPU ranks on the generated data."""
    base = default()
    return replace(
        base,
        recipe="qr_bench_full",
        model=replace(base.model, dense_arch=[64, 32, 16], over_arch=[64, 32, 1],
                      cross=CrossConfig(kind="low_rank", num_layers=2, low_rank=32)),
        sparse=replace(base.sparse, embedding_dim=16, compress_min_rows=1000),
        train=replace(base.train, batch_size=512, epochs=2, eval_every=50, early_stop_patience=2, progress_bar=False,
                      eval_adaptive=False),  # the cadence docs/EMBEDDINGS.md was measured with
    )


def _qr_bench(name: str, spec: str) -> AppConfig:
    base = qr_bench_full()
    return replace(base, recipe=name, sparse=replace(base.sparse, compress_default=spec))


@recipe
def qr_bench_hash4() -> AppConfig:
    """qr_bench_full with every table over 1000 rows hashed 4x smaller (hash:4)."""
    return _qr_bench("qr_bench_hash4", "hash:4")


@recipe
def qr_bench_qr4() -> AppConfig:
    """qr_bench_full with every table over 1000 rows quotient-remainder, 4 collisions, mult."""
    return _qr_bench("qr_bench_qr4", "qr:4:mult")


@recipe
def qr_bench_qr60() -> AppConfig:
    """qr_bench_full with every table over 1000 rows quotient-remainder, 60 collisions, mult (~60x)."""
    return _qr_bench("qr_bench_qr60", "qr:60:mult")


@recipe
def qr_bench_hash60() -> AppConfig:
    """qr_bench_full with every table over 1000 rows hashed 60x smaller (hash:60): QR-60's size."""
    return _qr_bench("qr_bench_hash60", "hash:60")


# -- next-item recommendation (docs/SEQUENTIAL.md) ---------------------------------------


@recipe
def sasrec() -> AppConfig:
    """SASRec on the generated sequences (``generate --kind sequences``), 2 CPU processes: 2 blocks,
    2 heads, dim 64, the last 50 items, full softmax; item table row-wise or table-wise (the planner
    picks; scoring needs whole rows), validation every epoch, early stopping on NDCG@10."""
    return AppConfig(
        recipe="sasrec",
        model=ModelConfig(name="sasrec"),
        sequence=SequenceModelConfig(max_len=50, embedding_dim=64, num_blocks=2, num_heads=2, dropout=0.2, loss="full"),
        sharding=ShardingConfig(per_table={"t_item": "row_wise|table_wise"}),
        optim=OptimConfig(sparse="rowwise_adagrad", sparse_lr=0.05, dense="adam", dense_lr=1e-3),
        train=TrainConfig(batch_size=128, epochs=40, evals_per_epoch=1, early_stop_patience=5, log_every=20),
        # the generator's oracle holds for its whole catalog: keep rare items (its users all have >= 8 items)
        sequence_preprocess=SequencePreprocessConfig(min_item_interactions=1, max_len=50),
    )


@recipe
def bert4rec() -> AppConfig:
    """BERT4Rec on the generated sequences: :func:`sasrec`'s shapes, cloze masking with probability 0.2."""
    base = sasrec()
    return replace(base, recipe="bert4rec", model=ModelConfig(name="bert4rec"),
                   sequence=replace(base.sequence, mask_prob=0.2, dropout=0.1),
                   train=replace(base.train, epochs=80, early_stop_patience=8))


@recipe
def gru4rec() -> AppConfig:
    """GRU4Rec on the generated sequences: one GRU layer of width 64, full softmax."""
    base = sasrec()
    return replace(base, recipe="gru4rec", model=ModelConfig(name="gru4rec"),
                   sequence=replace(base.sequence, num_blocks=1, hidden_dim=64, dropout=0.1))


@recipe
def s3rec() -> AppConfig:
    """S3Rec-style pretraining (genres as attributes) of the SASRec encoder and the item, genre and year
    tables; fine-tune with ``--recipe sasrec_s3rec sequence.pretrained_from=<exported file>``."""
    base = sasrec()
    return replace(base, recipe="s3rec", model=ModelConfig(name="s3rec"),
                   sequence=replace(base.sequence, backbone="sasrec", side_info=True, num_negatives=128, mask_prob=0.2),
                   train=replace(base.train, epochs=10, early_stop_patience=0))


@recipe
def sasrec_s3rec() -> AppConfig:
    """SASRec with genre and year embeddings on its inputs, to fine-tune from an :func:`s3rec` run
    (``sequence.pretrained_from``)."""
    base = sasrec()
    return replace(base, recipe="sasrec_s3rec", sequence=replace(base.sequence, side_info=True))


@recipe
def sasrec_tiny() -> AppConfig:
    """Seconds-long SASRec runs for tests."""
    base = sasrec()
    return replace(base, recipe="sasrec_tiny",
                   sequence=replace(base.sequence, max_len=8, embedding_dim=16, num_blocks=1, dropout=0.0),
                   train=TrainConfig(batch_size=32, epochs=1, evals_per_epoch=1, log_every=5, progress_bar=False),
                   sequence_preprocess=replace(base.sequence_preprocess, max_len=8))


@recipe
def sasrec_ml1m() -> AppConfig:
    """SASRec on MovieLens-1M with the settings of the published full-ranking comparison it is checked
    against (Klenitskiy & Vasilev 2023, "SASRec+": cross-entropy over all items): the last 50 items,
    dim 64, 2 blocks, 1 head, dropout 0.1, batch 128, up to 100 epochs, patience 10; all ratings as
    implicit feedback, 5-core, leave-one-out (docs/SEQUENTIAL.md lists every protocol difference)."""
    base = sasrec()
    return replace(base, recipe="sasrec_ml1m",
                   sequence=replace(base.sequence, max_len=50, num_heads=1, dropout=0.1),
                   train=replace(base.train, batch_size=128, epochs=100, early_stop_patience=10),
                   sequence_preprocess=SequencePreprocessConfig(max_len=50))


@recipe
def bert4rec_ml1m() -> AppConfig:
    """BERT4Rec on MovieLens-1M as in the same comparison: the last 50 items, dim 64, 2 blocks, 2 heads,
    feed-forward 256, mask probability 0.2, up to 200 epochs, patience 20."""
    base = sasrec_ml1m()
    return replace(base, recipe="bert4rec_ml1m", model=ModelConfig(name="bert4rec"),
                   sequence=replace(base.sequence, num_heads=2, ffn_dim=256, mask_prob=0.2),
                   train=replace(base.train, epochs=200, early_stop_patience=20))


@recipe
def gru4rec_ml1m() -> AppConfig:
    """GRU4Rec on MovieLens-1M as in the same comparison's RNN baseline: one GRU layer of 64, dropout 0.1."""
    base = sasrec_ml1m()
    return replace(base, recipe="gru4rec_ml1m", model=ModelConfig(name="gru4rec"),
                   sequence=replace(base.sequence, num_blocks=1, hidden_dim=64))


# -- general recommenders on user-item data (docs/GENERAL.md) -----------------------------


@recipe
def ease() -> AppConfig:
    """EASE (closed form, one process) on a user-item dataset (``preprocess --kind user_items``): lambda 200,
    float64 solve within 8 GB (20 x items^2 bytes), users scored 1024 at a time, top-100 lists saved."""
    return AppConfig(recipe="ease", model=ModelConfig(name="ease"), ease=EaseConfig(l2=200.0), train=TrainConfig(eval_batch_size=1024),
                     sequence_preprocess=SequencePreprocessConfig(min_item_interactions=1, max_len=50))


@recipe
def multivae() -> AppConfig:
    """Multi-VAE ([N -> 600 -> 200 -> 600 -> N], input dropout 0.5, KL annealed to 0.2) trained by the loop:
    the item table (first layer) placed by the planner, Adam on the rest; batch 128 users, early stopping
    on validation NDCG@10. total_anneal_steps 2000 reaches the cap after ~5 epochs of 2000 users on 2 processes."""
    return AppConfig(
        recipe="multivae",
        model=ModelConfig(name="multivae"),
        multivae=MultiVaeConfig(hidden_dim=600, latent_dim=200, input_dropout=0.5, anneal_cap=0.2, total_anneal_steps=2000),
        optim=OptimConfig(sparse="adagrad", sparse_lr=0.05, dense="adam", dense_lr=1e-3),
        train=TrainConfig(batch_size=128, epochs=100, evals_per_epoch=1, early_stop_patience=10, log_every=20),
        sequence_preprocess=SequencePreprocessConfig(min_item_interactions=1, max_len=50),
    )


@recipe
def feed() -> AppConfig:
    """The home-feed ranker on ``generate --kind feed`` data, 2 CPU processes: an LSTM per action history
    over the shared item table (dim 32, the newest 50 items), DCNv2 (low-rank cross) as the shared bottom,
    one tower per objective, static loss weights; the item and keyword tables row-wise; validation twice
    an epoch, early stopping on the mean validation AUC (docs/MODELS.md, "Home-feed ranker")."""
    return AppConfig(
        recipe="feed",
        model=ModelConfig(name="feed", dense_arch=[32, 16], over_arch=[1],
                          cross=CrossConfig(kind="low_rank", num_layers=2, low_rank=64),
                          feed=FeedModelConfig(encoder="lstm", item_dim=32, max_history=50, multitask="shared_bottom",
                                               tower_dims=[32])),
        sparse=SparseConfig(embedding_dim=16, dims={"keywords": 32}),
        sharding=ShardingConfig(per_table={"t_item": "row_wise", "t_keywords": "row_wise|table_row_wise"}),
        optim=OptimConfig(sparse="rowwise_adagrad", sparse_lr=0.05, dense="adam", dense_lr=2e-3),
        train=TrainConfig(batch_size=512, epochs=4, evals_per_epoch=2, early_stop_patience=3, log_every=20),
    )  # fmt: skip


@recipe
def feed_tiny() -> AppConfig:
    """Seconds-long feed-ranker runs for tests: small tables, short histories, one epoch."""
    base = feed()
    return replace(base, recipe="feed_tiny",
                   model=replace(base.model, dense_arch=[8], cross=CrossConfig(kind="low_rank", num_layers=1, low_rank=8),
                                 feed=replace(base.model.feed, item_dim=8, max_history=10, tower_dims=[8])),
                   sparse=SparseConfig(embedding_dim=8),
                   train=TrainConfig(batch_size=64, epochs=1, evals_per_epoch=1, log_every=5, progress_bar=False))  # fmt: skip


@recipe
def feed_marketplace() -> AppConfig:
    """The shape of the marketplace home-feed ranker (issue 16) for ``plan`` without data: a 1.2M-keyword
    vocabulary x 32 (38.4M parameters, the largest table), 1M items x 32 read by the candidate and five
    50-item histories, 2M users x 8; LSTM histories, DCNv2 (full-rank cross, 3 layers) and MMoE heads;
    batch 4096 per GPU. ``sparse.num_embeddings``: user, category, keywords, ctx_device, ctx_surface,
    ctx_region, item (``torchrec-app plan --recipe feed_marketplace --world-size 8``)."""
    base = feed()
    return replace(base, recipe="feed_marketplace",
                   model=replace(base.model, dense_arch=[128, 32], cross=CrossConfig(kind="full", num_layers=3),
                                 feed=replace(base.model.feed, multitask="mmoe", num_experts=4, expert_dims=[512, 256],
                                              tower_dims=[128])),
                   sparse=SparseConfig(embedding_dim=16, dims={"user": 8, "keywords": 32},
                                       num_embeddings=[2_000_000, 5_000, 1_200_000, 8, 16, 500, 1_000_000]),
                   sharding=ShardingConfig(per_table={"t_item": "row_wise", "t_keywords": "row_wise|table_row_wise",
                                                      "t_user": "row_wise|table_row_wise"}),
                   train=replace(base.train, batch_size=4096))  # fmt: skip


@recipe
def bench_feed() -> AppConfig:
    """The home-feed levers benchmark's baseline (docs/BENCHMARKS.md): the feed model with an LSTM over each
    history, shared-bottom towers, static loss weights, sized so that 2 CPU processes train it in about a minute."""
    from torchrec_app.config.feed import FeedModelConfig

    return AppConfig(
        recipe="bench_feed",
        model=ModelConfig(
            name="feed",
            dense_arch=[32, 16],
            over_arch=[1],
            cross=CrossConfig(kind="low_rank", num_layers=2, low_rank=16),
            feed=FeedModelConfig(encoder="lstm", item_dim=16, max_history=20, tower_dims=[16]),
        ),
        sparse=SparseConfig(embedding_dim=8),
        optim=OptimConfig(sparse="rowwise_adagrad", sparse_lr=0.05, dense="adagrad", dense_lr=0.02, warmup_steps=0),
        train=TrainConfig(batch_size=256, epochs=2, eval_every=25, log_every=25, early_stop_patience=0, progress_bar=False),
    )
