"""``torchrec-app generate``: Criteo-format TSV whose labels come from a known click model.

The built-in default data. It looks like Criteo Kaggle (``label, I1..I13, C1..C26``,
8-hex-digit categoricals, empty = missing at Kaggle-like rates, long-tailed ids with
Kaggle-like cardinalities capped at ``generate.max_cardinality``, I2 sometimes negative)
and its labels are Bernoulli draws of a planted logistic model::

    logit = b + sum_f w_f[c_f] + sum_j beta_j z_j                      (main effects)
              + sum_{(a, b) in crosses} <u_ab[c_a], v_ab[c_b]> / sqrt(r)  (cat x cat, rank r)
              + gamma[c_k] * z_i                                        (dense x cat)

with ``z_j = log(1 + max(I_j, 0))`` centred, ``c_f`` the id of field ``f`` (missing is
its own id; in multi-hot mode the mean over the bag). The three groups are scaled to
shares ``1 - cross_share - dense_cross_share``, ``cross_share``, ``dense_cross_share``
of the logit variance ``logit_std**2``, and ``b`` is set so the mean CTR is
``base_ctr``. Crosses are low-rank bilinear terms, exactly what a DCNv2 cross layer
``x0 * (W x + b)`` represents and a model without crosses cannot, so DCNv2 measurably
beats such a model. ``truth.json`` records the crosses, the model, and the oracle AUC and
log loss of each split (those of the true probabilities).

Model parameters depend only on the seed; rows are drawn in chunks from per-chunk
seeded generators, so the same seed and row count give byte-identical files.

    torchrec-app generate --rows 1000000 --out data/generated/criteo_synth --seed 0
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from torchrec_app.config.data import GeneratorConfig
from torchrec_app.config.recipes import CRITEO_KAGGLE_NUM_EMBEDDINGS
from torchrec_app.data.criteo_format import COLUMNS, DENSE_FEATURES, LABEL, SPARSE_FEATURES
from torchrec_app.data.truth import write_truth
from torchrec_app.metrics.binary import log_loss, roc_auc
from torchrec_app.utils.fs import atomic_path

#: Approximate missing rates of Criteo Kaggle's columns.
DENSE_MISSING = [0.45, 0.0, 0.21, 0.22, 0.03, 0.23, 0.04, 0.0005, 0.04, 0.45, 0.04, 0.77, 0.22]
SPARSE_MISSING = [0, 0, 0.03, 0.03, 0, 0.12, 0, 0, 0, 0, 0, 0.03, 0, 0, 0, 0.03, 0, 0, 0.44, 0.44, 0.03, 0.76, 0, 0.03, 0.44, 0.44]
#: (mu, sigma) of log(1 + value) of each dense column (lognormal-ish counts).
DENSE_SHAPE = [(0.8, 1.0), (1.5, 1.6), (1.8, 1.3), (1.6, 0.9), (7.0, 2.0), (3.5, 1.8), (1.6, 1.3),
               (2.5, 1.1), (3.5, 1.5), (0.4, 0.6), (1.0, 0.9), (0.3, 0.8), (1.6, 1.1)]  # fmt: skip
SPLIT_FRACTIONS = (("train", 0.8), ("valid", 0.1), ("test", 0.1))
CROSS_RANK = 2
_HEX_CHARS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_REFERENCE_ROWS = 100_000


@dataclass(slots=True)
class ClickModel:
    """The planted model: its parameters are a function of the seed alone."""

    cardinalities: list[int]
    zipf_cdfs: list[np.ndarray]
    salts: np.ndarray
    main: list[np.ndarray]
    dense_weights: np.ndarray
    dense_centre: np.ndarray
    crosses: list[tuple[int, int, np.ndarray, np.ndarray]]
    dense_cross: tuple[int, int, np.ndarray]
    scales: np.ndarray
    intercept: float


@dataclass(slots=True)
class Rows:
    """Generated rows before labelling: dense values (NaN missing) and per-field ids."""

    dense: np.ndarray  # n x 13 float64, NaN = missing
    ids: list[np.ndarray]  # per field: n (one-hot) or n x m (multi-hot) int64; missing = cardinality
    present: list[np.ndarray]  # per field: n bool


def split_sizes(rows: int) -> dict[str, int]:
    """Rows of train/valid/test (8:1:1, remainder to train).

    >>> split_sizes(1000), split_sizes(7)
    ({'train': 800, 'valid': 100, 'test': 100}, {'train': 7, 'valid': 0, 'test': 0})
    """
    valid = rows // 10
    test = rows // 10
    return {"train": rows - valid - test, "valid": valid, "test": test}


def build_click_model(config: GeneratorConfig) -> ClickModel:
    """Draw the model's parameters from ``config.seed`` and calibrate its scales."""
    rng = np.random.default_rng([config.seed, 0])
    cards = [min(k, config.max_cardinality) for k in CRITEO_KAGGLE_NUM_EMBEDDINGS]  # Kaggle's vocabularies, capped
    cdfs = []
    for k in cards:
        exponent = config.zipf_exponent * rng.uniform(0.85, 1.25)
        weights = (np.arange(1, k + 1, dtype=np.float64)) ** -exponent
        cdf = np.cumsum(weights)
        cdfs.append(cdf / cdf[-1])
    importance = rng.exponential(1.0, size=len(cards))
    main = [rng.normal(0.0, importance[f], size=k + 1) for f, k in enumerate(cards)]
    dense_weights = rng.normal(0.0, 0.3, size=len(DENSE_FEATURES))
    crosses = []
    for text in config.crosses:
        a, b = (_field_index(name, SPARSE_FEATURES, "generate.crosses") for name in text.split(":"))
        crosses.append((a, b, rng.normal(size=(cards[a] + 1, CROSS_RANK)), rng.normal(size=(cards[b] + 1, CROSS_RANK))))
    dense_name, cat_name = config.dense_cross.split(":")
    i = _field_index(dense_name, DENSE_FEATURES, "generate.dense_cross")
    c = _field_index(cat_name, SPARSE_FEATURES, "generate.dense_cross")
    dense_cross = (i, c, rng.normal(size=cards[c] + 1))
    salts = rng.integers(0, 2**32, size=len(cards), dtype=np.uint64)
    model = ClickModel(cards, cdfs, salts, main, dense_weights, np.zeros(len(DENSE_FEATURES)), crosses, dense_cross,
                       np.ones(3), 0.0)  # fmt: skip
    # Calibrate on a reference sample drawn from its own stream (independent of --rows).
    reference = draw_rows(model, config, np.random.default_rng([config.seed, 2]), _REFERENCE_ROWS)
    model.dense_centre = np.log1p(np.maximum(np.nan_to_num(reference.dense), 0)).mean(axis=0)
    parts = logit_parts(model, reference)
    shares = np.array([1.0 - config.cross_share - config.dense_cross_share, config.cross_share, config.dense_cross_share])
    stds = parts.std(axis=0)
    model.scales = np.where(stds > 0, np.sqrt(shares) * config.logit_std / np.maximum(stds, 1e-12), 0.0)
    centred = parts @ model.scales
    lo, hi = -20.0, 20.0
    for _ in range(60):  # bisection: mean CTR == base_ctr
        mid = (lo + hi) / 2
        if _sigmoid(mid + centred).mean() < config.base_ctr:
            lo = mid
        else:
            hi = mid
    model.intercept = (lo + hi) / 2
    return model


def _field_index(name: str, names: list[str], key: str) -> int:
    if name not in names:
        raise ValueError(f"{key}: {name!r} is not one of {names[0]}..{names[-1]}")
    return names.index(name)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def draw_rows(model: ClickModel, config: GeneratorConfig, rng: np.random.Generator, n: int) -> Rows:
    """Draw ``n`` rows of features (no labels)."""
    dense = np.empty((n, len(DENSE_FEATURES)))
    for j, (mu, sigma) in enumerate(DENSE_SHAPE):
        values = np.floor(np.expm1(np.maximum(rng.normal(mu, sigma, size=n), 0.0)))
        if DENSE_FEATURES[j] == "I2":
            values -= np.where(rng.random(n) < 0.15, rng.integers(1, 4, size=n), 0)  # sometimes negative
        values[rng.random(n) < DENSE_MISSING[j]] = np.nan
        dense[:, j] = values
    ids, present = [], []
    for f, card in enumerate(model.cardinalities):
        shape = (n, config.multi_hot_sizes[f]) if config.multi_hot else (n,)
        field_ids = np.searchsorted(model.zipf_cdfs[f], rng.random(shape)).astype(np.int64)
        np.minimum(field_ids, card - 1, out=field_ids)
        here = rng.random(n) >= SPARSE_MISSING[f]
        ids.append(np.where(here if field_ids.ndim == 1 else here[:, None], field_ids, card))
        present.append(here)
    return Rows(dense=dense, ids=ids, present=present)


def logit_parts(model: ClickModel, rows: Rows) -> np.ndarray:
    """``n x 3`` unscaled logit parts: main effects, cat x cat crosses, dense x cat cross."""
    z = np.log1p(np.maximum(np.nan_to_num(rows.dense), 0)) - model.dense_centre
    main = z @ model.dense_weights
    for f, table in enumerate(model.main):
        main += _bag_mean(table, rows.ids[f])
    cross = np.zeros(len(z))
    for a, b, u, v in model.crosses:
        cross += (_bag_mean(u, rows.ids[a]) * _bag_mean(v, rows.ids[b])).sum(axis=1) / np.sqrt(CROSS_RANK)
    i, c, gamma = model.dense_cross
    dense_cross = _bag_mean(gamma, rows.ids[c]) * z[:, i]
    return np.stack([main, cross, dense_cross], axis=1)


def _bag_mean(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    return table[ids] if ids.ndim == 1 else table[ids].mean(axis=1)


def click_probability(model: ClickModel, rows: Rows) -> np.ndarray:
    """The true click probability of each row."""
    return _sigmoid(model.intercept + logit_parts(model, rows) @ model.scales)


def rows_to_table(model: ClickModel, rows: Rows, labels: np.ndarray, config: GeneratorConfig) -> pa.Table:
    """Arrow table of the 40 Criteo columns as text-ready arrays (nulls write as empty)."""
    n = len(labels)
    columns = {LABEL: pa.array(labels.astype(np.int8))}
    for j, name in enumerate(DENSE_FEATURES):
        values = rows.dense[:, j]
        missing = np.isnan(values)
        columns[name] = pa.array(np.nan_to_num(values).astype(np.int64), mask=missing)
    for f, name in enumerate(SPARSE_FEATURES):
        hashes = hex_hash(rows.ids[f], model.salts[f])
        columns[name] = _hex_strings(hashes, rows.present[f], config.multi_hot_separator)
    assert list(columns) == COLUMNS and all(len(c) == n for c in columns.values())
    return pa.table(columns)


def hex_hash(ids: np.ndarray, salt: np.uint64) -> np.ndarray:
    """The 32-bit hash written for each id: a bijection of ids (distinct ids, distinct hashes).

    >>> hex_hash(np.array([0, 1]), np.uint64(5)).tolist()
    [5, 2654435766]
    """
    return (ids.astype(np.uint64) * np.uint64(2654435761) + salt) & np.uint64(0xFFFFFFFF)


def _hex_strings(hashes: np.ndarray, present: np.ndarray, separator: str) -> pa.Array:
    """Arrow string array of 8-digit hex ids (``a,b,c`` per row for 2-d input), null where absent."""
    n = len(present)
    per_row = 1 if hashes.ndim == 1 else hashes.shape[1]
    shifts = np.arange(28, -4, -4, dtype=np.uint64)
    chosen = hashes[present].reshape(-1, per_row)
    chars = _HEX_CHARS[((chosen[:, :, None] >> shifts) & np.uint64(15)).astype(np.intp)]  # k x m x 8
    if per_row > 1:
        sep = np.full(chars.shape[:2] + (1,), ord(separator), dtype=np.uint8)
        chars = np.concatenate([chars, sep], axis=2).reshape(len(chosen), -1)[:, :-1]
    data = np.ascontiguousarray(chars).reshape(-1)
    width = 9 * per_row - 1
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.where(present, width, 0), out=offsets[1:])
    validity = pa.array(present).buffers()[1] if not present.all() else None
    return pa.Array.from_buffers(pa.string(), n, [validity, pa.py_buffer(offsets), pa.py_buffer(data)],
                                 null_count=int(n - present.sum()))  # fmt: skip


def generate_dataset(out_dir: str, config: GeneratorConfig) -> dict:
    """Write ``train.txt``, ``valid.txt``, ``test.txt`` and ``truth.json`` under ``out_dir``.

    Returns the truth dict. Each file is written under a temporary name and renamed when whole.
    """
    os.makedirs(out_dir, exist_ok=True)
    model = build_click_model(config)
    write_options = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    oracle, sizes = {}, split_sizes(config.rows)
    for split_index, (split, _) in enumerate(SPLIT_FRACTIONS):
        path = os.path.join(out_dir, f"{split}.txt")
        probabilities, labels = [], []
        with atomic_path(path) as tmp, pa.OSFile(str(tmp), "wb") as sink:
            for chunk, start in enumerate(range(0, sizes[split], config.chunk_rows)):
                n = min(config.chunk_rows, sizes[split] - start)
                rng = np.random.default_rng([config.seed, 1, split_index, chunk])
                rows = draw_rows(model, config, rng, n)
                p = click_probability(model, rows)
                y = (rng.random(n) < p).astype(np.int8)
                pacsv.write_csv(rows_to_table(model, rows, y, config), sink, write_options)
                probabilities.append(p.astype(np.float32))
                labels.append(y)
        p = np.concatenate(probabilities) if probabilities else np.zeros(0, np.float32)
        y = np.concatenate(labels) if labels else np.zeros(0, np.int8)
        oracle[split] = {"rows": int(len(y)), "ctr": float(y.mean()) if len(y) else None,
                         "auc": roc_auc(p, y) if len(y) else None, "logloss": log_loss(p, y) if len(y) else None}  # fmt: skip
    truth = {
        "generator": "torchrec_app.data.generate",
        "seed": config.seed,
        "rows": sizes,
        "multi_hot": config.multi_hot,
        "multi_hot_sizes": config.multi_hot_sizes if config.multi_hot else None,
        "multi_hot_separator": config.multi_hot_separator if config.multi_hot else None,
        "oracle": oracle,
        "crosses": [text.split(":") for text in config.crosses],
        "dense_crosses": [config.dense_cross.split(":")],
        "model": {
            "description": (
                "label ~ Bernoulli(sigmoid(logit)); logit = intercept + main effects (per-id weights of every "
                "C field, linear in centred log1p(max(I,0)) of every I field) + sum over crosses of a rank-"
                f"{CROSS_RANK} bilinear term <u[C_a], v[C_b]> + gamma[C] * centred log1p(max(I,0)) for the dense "
                "cross; missing ids have their own weights; multi-hot bags use the mean over the bag"
            ),
            "intercept": model.intercept,
            "base_ctr": config.base_ctr,
            "logit_std": config.logit_std,
            "variance_shares": {"main": 1 - config.cross_share - config.dense_cross_share,
                                "crosses": config.cross_share, "dense_cross": config.dense_cross_share},  # fmt: skip
            "cardinalities": dict(zip(SPARSE_FEATURES, model.cardinalities)),
            "dense_missing_rates": dict(zip(DENSE_FEATURES, DENSE_MISSING)),
            "sparse_missing_rates": dict(zip(SPARSE_FEATURES, SPARSE_MISSING)),
            "zipf_exponent": config.zipf_exponent,
        },
    }
    write_truth(out_dir, truth)
    return truth
