"""What a benchmark runs: cases (recipe + overrides + process count) and named suites of them.

A case on the command line is one string::

    NAME=RECIPE[@NPROC] [section.key=value ...]

    --case "dlrm=bench_kaggle_like_dlrm@2"
    --case "dlrm_rw=bench_kaggle_like_dlrm@2 sharding.per_table=t_C3:row_wise,t_C4:row_wise"

Overrides are the ones ``torchrec-app train`` takes (values may contain commas, so
overrides are separated by spaces). A suite is a named list of cases in :data:`SUITES`;
add one by adding an entry, not a flag.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from torchrec_app.config import ConfigError, resolve_config


@dataclass(frozen=True, slots=True)
class BenchCase:
    """One configuration to measure: a recipe with overrides on ``nproc`` processes."""

    name: str
    """Label in the table and plots (letters, digits, ``_``, ``-``, ``.``)."""
    recipe: str
    """A registered recipe (``torchrec-app show-config --list``)."""
    overrides: tuple[str, ...] = ()
    """``section.key=value`` overrides applied to the recipe."""
    nproc: int = 1
    """Processes (ranks) on this machine, launched with the torchx train component (torchrun)."""

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "_-." for c in self.name):
            raise ConfigError(f"bench case name {self.name!r}: use letters, digits, '_', '-' or '.'")
        if self.nproc < 1:
            raise ConfigError(f"bench case {self.name}: nproc must be >= 1, got {self.nproc}")

    def check(self, common: tuple[str, ...] = ()) -> None:
        """Raise ConfigError now, before any run, if the recipe or an override is wrong."""
        try:
            resolve_config(self.recipe, [*self.overrides, *common])
        except ConfigError as err:
            raise ConfigError(f"bench case {self.name}: {err}") from None


def parse_case(text: str) -> BenchCase:
    """Parse ``NAME=RECIPE[@NPROC] [overrides...]``.

    >>> parse_case("rw=tiny@2 sharding.types=row_wise train.batch_size=64")
    BenchCase(name='rw', recipe='tiny', overrides=('sharding.types=row_wise', 'train.batch_size=64'), nproc=2)
    >>> parse_case("tiny").recipe, parse_case("tiny").nproc
    ('tiny', 1)
    """
    head, *overrides = shlex.split(text)
    name, sep, target = head.partition("=")
    if not sep:
        name, target = head.split("@")[0], head
    recipe, _, nproc = target.partition("@")
    if nproc and not nproc.isdigit():
        raise ConfigError(f"bench case {text!r}: expected NAME=RECIPE@NPROC with NPROC a number, got {nproc!r}")
    return BenchCase(name=name, recipe=recipe, overrides=tuple(overrides), nproc=int(nproc or 1))


#: The tables that exceed 100k rows in Criteo Kaggle (capped at 100k by max_ind_range).
BIG_TABLES = ("t_C3", "t_C4", "t_C12", "t_C16", "t_C21", "t_C24", "t_C26")


def big_tables(sharding_type: str) -> str:
    """The override placing :data:`BIG_TABLES` with ``sharding_type`` (the planner places the rest).

    >>> big_tables("row_wise")[:45]
    'sharding.per_table=t_C3:row_wise,t_C4:row_wis'
    """
    return "sharding.per_table=" + ",".join(f"{t}:{sharding_type}" for t in BIG_TABLES)


@dataclass(frozen=True, slots=True)
class Suite:
    """A named comparison: cases measured in one run."""

    description: str
    cases: tuple[BenchCase, ...]
    target_auc: float = 0.0
    """Default of ``--target-auc`` for this suite (0: none): the validation AUC time to quality is measured to."""
    keep_cadence: bool = False
    """Runs keep each recipe's validation cadence and early stopping (``--keep-cadence``): time to quality depends on them."""


_DLRM, _DCN = "bench_kaggle_like_dlrm", "bench_kaggle_like_dcnv2"

#: dlrm_main's optimizer with ``--adagrad --learning_rate 0.01`` (the peer command of tools/bench/peer.py):
#: Adagrad on the tables and the dense parts alike, one rate, eps 1e-8, no warm-up or decay; validated
#: 4 times per epoch with the default recipe's patience so that it stops like the other cases.
DLRM_MAIN_SETTINGS = ("optim.sparse=adagrad", "optim.sparse_lr=0.01", "optim.dense=adagrad", "optim.dense_lr=0.01",
                      "optim.eps=1e-8", "optim.warmup_steps=0", "optim.decay_start=0",
                      "train.evals_per_epoch=4", "train.early_stop_patience=2")  # fmt: skip
#: ``suggest-dims --run RUN --checkpoint RUN/best/step_00000196`` (default budget: 0.7 of the dense FLOPs) of a
#: default-recipe run on the generated bench data (data/generated/bench-500000, 2 processes, best validation at
#: step 196): 12 of the 26 features keep width 12, the rest 8, instead of 16 each (docs/BENCHMARKS.md).
SUGGESTED_DIMS = (
    "sparse.dims=C1:8,C2:12,C3:12,C4:8,C5:12,C6:12,C7:8,C8:12,C9:8,C10:12,C11:8,C12:8,C13:8,C14:12,C15:12,C16:8,C17:12,C18:12,C19:8,C20:12,C21:8,C22:8,C23:8,C24:8,C25:12,C26:8"
)

SUITES: dict[str, Suite] = {
    "cpu": Suite(
        description="docs/BENCHMARKS.md on CPU: DLRM vs DCNv2, TW/RW/DP for the big tables, 1 vs 2 processes "
                    "(the planner's own choice on CPU is table-wise for every table, so dlrm_2p is the TW case)",
        cases=(
            BenchCase(name="dlrm_2p", recipe=_DLRM, nproc=2),
            BenchCase(name="dcnv2_2p", recipe=_DCN, nproc=2),
            BenchCase(name="dlrm_2p_rw", recipe=_DLRM, overrides=(big_tables("row_wise"),), nproc=2),
            BenchCase(name="dlrm_2p_dp", recipe=_DLRM, overrides=(big_tables("data_parallel"),), nproc=2),
            BenchCase(name="dlrm_1p", recipe=_DLRM, nproc=1),
        ),
    ),
    "sequences": Suite(
        description="docs/SEQUENTIAL.md: SASRec, BERT4Rec, GRU4Rec on 2 processes; needs --data, a dataset of "
                    "`preprocess --kind sequences` (generated sequences, or MovieLens-1M with the *_ml1m recipes' settings); "
                    "run long enough for the best validation NDCG@10, e.g. --steps 2000 --evals 40 --no-ceiling --repeats 1",
        cases=(
            BenchCase(name="sasrec_2p", recipe="sasrec", nproc=2),
            BenchCase(name="bert4rec_2p", recipe="bert4rec", nproc=2),
            BenchCase(name="gru4rec_2p", recipe="gru4rec", nproc=2),
        ),
    ),
    "ttq": Suite(
        description="docs/BENCHMARKS.md, time to quality: wall-clock and samples to validation AUC 0.71 on the built-in generated "
                    "data (500k rows), each recipe with its own validation cadence and early stopping: the default recipe, "
                    "the same model with suggest-dims' widths, and the DLRM shape with dlrm_main's optimizer settings; "
                    "run e.g. --steps 600 --repeats 1 --no-ceiling",
        cases=(
            BenchCase(name="default_2p", recipe="default", nproc=2),
            BenchCase(name="default_dims_2p", recipe="default", overrides=(SUGGESTED_DIMS,), nproc=2),
            BenchCase(name="dlrm_main_2p", recipe=_DLRM, overrides=DLRM_MAIN_SETTINGS, nproc=2),
        ),
        target_auc=0.71,
        keep_cadence=True,
    ),
    "tiny": Suite(
        description="seconds-long smoke run of the bench itself (tests)",
        cases=(BenchCase(name="tiny_1p", recipe="tiny", nproc=1), BenchCase(name="tiny_2p_rw", recipe="tiny",
               overrides=("sharding.types=row_wise",), nproc=2)),  # fmt: skip
    ),
}
