"""``torchrec-app generate --kind feed``: feed impressions from a planted multi-objective model, and the oracle.

The planted world (every parameter is a function of the seed alone; ``d`` = ``dim``):

* items ``0..N-1`` in ``C`` categories (Zipf-sized); item ``i`` has a latent vector
  ``v_i = c_g(i) + 0.5 eps`` around its category centre, a popularity (Zipf), 1-4 keywords,
  a quality ``q_i`` = 0.7 x the mean weight of its keywords + noise, a price (log-normal by
  category), and 2 % of items are scams (they carry one of a few "scam" keywords);
* user ``u`` has a taste ``t_u`` (a favourite category's centre plus noise) and an activity
  level; a **session** is a snapshot of the user's history: per action a newest-first list
  of up to ``max_history`` items, clicks / watches / chats drawn from the taste
  (``softmax(2 t_u . c / sqrt(d))`` over categories, then popularity within the category),
  hides from the opposite of the taste, reports from scams and popular items;
* each impression shows a candidate drawn half from the taste, half from popularity, in a
  context (position, hour, device, surface, region).

The labels are independent Bernoulli draws given the impression, with logits (``s`` =
``history_strength``; ``a`` = affinity of the candidate to the **recent clicks**, the
recency-weighted mean vector of the 5 newest clicked items, standardised; ``h`` = share of
the 10 newest **hides** in the candidate's category; ``act`` = standardised log click-history
length)::

    click  = b_click  + s (1.0 a - 2.0 h) + 0.6 q - 0.08 position + device effect + 0.3 s act
    watch  = b_watch  + s (0.8 a - 1.5 h) + 0.5 q + 0.4 sin(2 pi hour / 24)
    chat   = b_chat   + s (1.0 a)         + 0.3 q + 0.5 z(log price) + surface effect
    hide   = b_hide   + s (-0.7 a + 2.0 h) - 0.5 q
    report = b_report + s (0.5 h)         - 0.6 q + 3.0 scam

so click, watch and chat share causes (affinity, quality), past hides lower click and
raise hide, and the history terms are visible only through the history. The intercepts
``b_k`` are solved so each objective's mean rate is ``base_rates[k]`` (rare chat, hide,
report). ``truth.json`` records, per objective and split, the base rate and the **oracle**
AUC / logloss of the true probabilities (also under the multi-task evaluator's names,
``click/auc`` ... and their means ``auc`` / ``logloss``, which a run's summary reports beside its own) (computed by :mod:`torchrec_app.metrics.binary`,
the trainer's functions), and as a reference (not an oracle) the AUC of the true model
with its history terms held at their mean: how much a model loses without the history.

Sessions go to train / valid / test 8:1:1 by a draw per session; a split's rows are in
session order. Files: ``train.parquet``, ``valid.parquet``, ``test.parquet`` (or ``.jsonl``),
in the raw format of :mod:`torchrec_app.data.feed.schema`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from torchrec_app.config.feed_data import FeedGeneratorConfig
from torchrec_app.data.feed.batch import ACTIONS, OBJECTIVES
from torchrec_app.data.feed.schema import CONTEXT_FEATURES, RAW_SCHEMA, history_key, label_column
from torchrec_app.data.truth import write_truth
from torchrec_app.metrics.binary import log_loss, roc_auc
from torchrec_app.utils.fs import atomic_path

SPLITS = ("train", "valid", "test")
SPLIT_SHARES = (0.8, 0.1, 0.1)
#: mean history length of each action for a user of average activity
MEAN_HISTORY = {"click": 12.0, "watch": 6.0, "chat": 1.5, "hide": 1.5, "report": 0.2}
CONTEXT_CARDINALITY = {"ctx_device": 3, "ctx_surface": 4, "ctx_region": 50}
SCAM_KEYWORDS = 16
RECENT_CLICKS = 5
RECENT_HIDES = 10
#: raw ids are offsets of the indices (so ids are not 0-based table rows)
ITEM_ID_BASE, USER_ID_BASE, SESSION_ID_BASE, KEYWORD_ID_BASE = 1_000_000, 1, 1, 500


@dataclass(slots=True)
class Impressions:
    """Drawn impressions (indices, not raw ids), their histories and true probabilities."""

    user: np.ndarray
    session: np.ndarray
    item: np.ndarray
    position: np.ndarray
    hour: np.ndarray
    context: dict[str, np.ndarray]
    histories: dict[str, tuple[np.ndarray, np.ndarray]]  # action -> (per-session offsets, flat items)
    logits: dict[str, np.ndarray]  # objective -> logit without the intercept
    history_terms: dict[str, np.ndarray]  # objective -> the part of the logit only the history reveals
    split: np.ndarray  # per-row index into SPLITS


class PlantedFeedModel:
    """The item, keyword and user parameters (see the module docstring)."""

    def __init__(self, config: FeedGeneratorConfig) -> None:
        c = config
        rng = np.random.default_rng([c.seed, 1])
        n, k, d = c.items, c.categories, c.dim
        self.config = c
        self.centres = rng.normal(size=(k, d))
        category_sizes = rng.dirichlet(np.full(k, 2.0))
        self.category = np.sort(rng.choice(k, size=n, p=category_sizes))  # items grouped by category
        self.category_start = np.searchsorted(self.category, np.arange(k + 1))
        self.vectors = self.centres[self.category] + 0.5 * rng.normal(size=(n, d))
        popularity = (rng.permutation(n) + 1.0) ** -1.0
        self.popularity = popularity / popularity.sum()
        # keywords: Zipf over the vocabulary, 1-4 per item; a few are scam markers
        keyword_weight = rng.normal(size=c.keywords)
        keyword_popularity = (np.arange(c.keywords) + 1.0) ** -1.1
        keyword_popularity /= keyword_popularity.sum()
        counts = rng.integers(1, 5, size=n)
        self.keyword_offsets = np.concatenate([[0], np.cumsum(counts)])
        keywords = rng.choice(c.keywords, size=int(counts.sum()), p=keyword_popularity)
        owner = np.repeat(np.arange(n), counts)
        for _ in range(20):  # an item's keywords are distinct: redraw repeats (the popular ones collide)
            order = np.lexsort((keywords, owner))
            repeat = np.zeros(len(keywords), dtype=bool)
            repeat[order[1:]] = (owner[order[1:]] == owner[order[:-1]]) & (keywords[order[1:]] == keywords[order[:-1]])
            if not repeat.any():
                break
            keywords[repeat] = rng.choice(c.keywords, size=int(repeat.sum()), p=keyword_popularity)
        self.scam = rng.random(n) < 0.02
        scam_keyword = c.keywords - 1 - rng.integers(0, SCAM_KEYWORDS, size=n)  # rare keywords at the tail
        keywords[self.keyword_offsets[:-1][self.scam]] = scam_keyword[self.scam]
        self.keywords = keywords
        mean_weight = np.add.reduceat(keyword_weight[keywords], self.keyword_offsets[:-1]) / counts
        self.quality = 0.7 * mean_weight + 0.7 * rng.normal(size=n)
        self.log_price = rng.normal(size=k)[self.category] + 0.5 * rng.normal(size=n) + 3.0
        self.device_effect = rng.normal(scale=0.3, size=CONTEXT_CARDINALITY["ctx_device"])
        self.surface_effect = rng.normal(scale=0.4, size=CONTEXT_CARDINALITY["ctx_surface"])

    def category_probabilities(self, taste: np.ndarray) -> np.ndarray:
        """``users x C`` ``softmax(2 t . c / sqrt(d))``."""
        logits = 2.0 * taste @ self.centres.T / np.sqrt(self.config.dim)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def items_in_categories(self, categories: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One item per entry of ``categories``, by popularity within the category."""
        n = len(self.category)
        cumulative = np.cumsum(self.popularity)
        start, end = self.category_start[categories], self.category_start[categories + 1]
        empty = start == end
        lo = np.where(start > 0, cumulative[np.maximum(start - 1, 0)], 0.0)
        hi = cumulative[np.maximum(end - 1, 0)]
        draws = lo + rng.random(len(categories)) * (hi - lo)
        items = np.minimum(np.searchsorted(cumulative, draws, side="right"), np.maximum(end - 1, 0))
        items = np.maximum(items, start)
        popular = rng.choice(n, size=int(empty.sum()), p=self.popularity)  # a category without items: any item
        items[empty] = popular
        return items


def _rowwise_choice(probabilities: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One column index per entry of ``rows``, drawn from ``probabilities[row]`` (inverse CDF, vectorised)."""
    width = probabilities.shape[1]
    cumulative = np.cumsum(probabilities, axis=1)
    cumulative /= cumulative[:, -1:]
    flat = (cumulative + np.arange(len(probabilities))[:, None]).ravel()
    draws = rows + rng.random(len(rows)) * (1 - 1e-12)
    return np.minimum(np.searchsorted(flat, draws, side="right") - rows * width, width - 1)


def _standardise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / max(float(x.std()), 1e-9)


def draw_impressions(model: PlantedFeedModel, rows: int) -> Impressions:
    """``rows`` impressions of the planted world (see the module docstring)."""
    c = model.config
    rng = np.random.default_rng([c.seed, 2])
    # sessions and users: enough sessions for `rows` impressions, the last one cut
    sizes = 1 + rng.poisson(c.impressions_per_session - 1, size=max(1, 2 * rows // c.impressions_per_session + 16))
    sessions = int(np.searchsorted(np.cumsum(sizes), rows)) + 1 if rows else 0
    sizes = sizes[:sessions]
    if sessions:
        sizes[-1] -= int(sizes.sum()) - rows
    users = max(1, sessions // c.sessions_per_user)
    session_user = rng.integers(0, users, size=sessions)
    taste = model.centres[rng.integers(0, c.categories, size=users)] + 0.5 * rng.normal(size=(users, c.dim))
    activity = np.exp(0.5 * rng.normal(size=users))
    likes = model.category_probabilities(taste)
    dislikes = model.category_probabilities(-taste)

    histories = {}
    for action in ACTIONS:
        mean = MEAN_HISTORY[action] * activity[session_user]
        lengths = np.minimum(rng.poisson(mean), c.max_history)
        owner = np.repeat(session_user, lengths)
        if action == "hide":
            items = model.items_in_categories(_rowwise_choice(dislikes, owner, rng), rng)
        elif action == "report":
            scams = np.flatnonzero(model.scam)
            items = np.where(rng.random(len(owner)) < 0.6, rng.choice(scams, size=len(owner)) if len(scams) else 0,
                             rng.choice(len(model.popularity), size=len(owner), p=model.popularity))  # fmt: skip
        else:
            items = model.items_in_categories(_rowwise_choice(likes, owner, rng), rng)
        histories[action] = (np.concatenate([[0], np.cumsum(lengths)]), items)

    session = np.repeat(np.arange(sessions), sizes)
    user = session_user[session]
    from_taste = rng.random(rows) < 0.5
    item = np.empty(rows, dtype=np.int64)
    item[from_taste] = model.items_in_categories(_rowwise_choice(likes, user[from_taste], rng), rng)
    item[~from_taste] = rng.choice(len(model.popularity), size=int((~from_taste).sum()), p=model.popularity)
    position = np.concatenate([np.arange(n) for n in sizes]).astype(np.float64) if rows else np.zeros(0)
    hour = rng.uniform(0, 24, size=sessions)[session]
    context = {name: rng.integers(0, CONTEXT_CARDINALITY[name], size=sessions)[session] for name in CONTEXT_FEATURES}

    # what only the history reveals
    offsets, clicked = histories["click"]
    within = np.arange(len(clicked)) - np.repeat(offsets[:-1], np.diff(offsets))
    recent = within < RECENT_CLICKS
    weight = np.where(recent, 1.0 - within / RECENT_CLICKS, 0.0)
    owner = np.repeat(np.arange(sessions), np.diff(offsets))
    profile = np.zeros((sessions, c.dim))
    np.add.at(profile, owner, weight[:, None] * model.vectors[clicked])
    profile /= np.maximum(np.bincount(owner, weights=weight, minlength=sessions), 1e-9)[:, None]
    affinity = _standardise(np.einsum("rd,rd->r", model.vectors[item], profile[session]) / np.sqrt(c.dim))
    hide_offsets, hidden = histories["hide"]
    hide_within = np.arange(len(hidden)) - np.repeat(hide_offsets[:-1], np.diff(hide_offsets))
    hide_owner = np.repeat(np.arange(sessions), np.diff(hide_offsets))
    keep = hide_within < RECENT_HIDES
    hide_counts = np.zeros((sessions, c.categories))
    np.add.at(hide_counts, (hide_owner[keep], model.category[hidden[keep]]), 1.0)
    hide_share = hide_counts[session, model.category[item]] / np.maximum(hide_counts.sum(axis=1), 1.0)[session]
    act = _standardise(np.log1p(np.diff(offsets)))[session]

    s, q = c.history_strength, model.quality[item]
    price = _standardise(model.log_price[item])
    history_terms = {
        "click": s * (1.0 * affinity - 2.0 * hide_share + 0.3 * act),
        "watch": s * (0.8 * affinity - 1.5 * hide_share),
        "chat": s * (1.0 * affinity),
        "hide": s * (-0.7 * affinity + 2.0 * hide_share),
        "report": s * (0.5 * hide_share),
    }
    logits = {
        "click": history_terms["click"] + 0.6 * q - 0.08 * position + model.device_effect[context["ctx_device"]],
        "watch": history_terms["watch"] + 0.5 * q + 0.4 * np.sin(2 * np.pi * hour / 24),
        "chat": history_terms["chat"] + 0.3 * q + 0.5 * price + model.surface_effect[context["ctx_surface"]],
        "hide": history_terms["hide"] - 0.5 * q,
        "report": history_terms["report"] - 0.6 * q + 3.0 * model.scam[item],
    }
    session_split = np.searchsorted(np.cumsum(SPLIT_SHARES), rng.random(sessions), side="right").clip(0, len(SPLITS) - 1)
    return Impressions(user=user, session=session, item=item, position=position, hour=hour, context=context,
                       histories=histories, logits=logits, history_terms=history_terms, split=session_split[session])  # fmt: skip


def solve_intercept(logits: np.ndarray, rate: float) -> float:
    """The ``b`` with ``mean(sigmoid(logits + b)) == rate`` (bisection).

    >>> round(solve_intercept(np.zeros(4), 0.5), 6) == 0.0, round(solve_intercept(np.zeros(4), 0.1), 4)
    (True, -2.1972)
    """
    lo, hi = -30.0, 30.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(logits + mid)))) < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def impressions_table(model: PlantedFeedModel, imp: Impressions, labels: dict[str, np.ndarray], rows: np.ndarray) -> pa.Table:
    """The raw-format table of impressions ``rows`` (indices into ``imp``), raw ids."""
    item = imp.item[rows]
    kw_start, kw_end = model.keyword_offsets[item], model.keyword_offsets[item + 1]
    columns = {
        "user": imp.user[rows] + USER_ID_BASE,
        "session": imp.session[rows] + SESSION_ID_BASE,
        "item": item + ITEM_ID_BASE,
        "category": model.category[item],
        "keywords": _gather_lists(kw_start, kw_end, model.keywords + KEYWORD_ID_BASE),
        "position": imp.position[rows],
        "price": np.round(np.exp(model.log_price[item]), 2),
        "hour": np.round(imp.hour[rows], 2),
        **{name: imp.context[name][rows] for name in CONTEXT_FEATURES},
    }
    for action in ACTIONS:
        offsets, items = imp.histories[action]
        session = imp.session[rows]
        columns[history_key(action)] = _gather_lists(offsets[session], offsets[session + 1], items + ITEM_ID_BASE)
    for objective in OBJECTIVES:
        columns[label_column(objective)] = labels[objective][rows]
    return pa.table({name: columns[name] for name in RAW_SCHEMA.names}, schema=RAW_SCHEMA)


def _gather_lists(starts: np.ndarray, ends: np.ndarray, values: np.ndarray) -> pa.ListArray:
    """A list array whose row r is ``values[starts[r]:ends[r]]``."""
    lengths = ends - starts
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    index = np.repeat(starts - offsets[:-1], lengths) + np.arange(int(offsets[-1]))
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values[index].astype(np.int64)))


def write_raw(table: pa.Table, path: str, fmt: str) -> None:
    """Write ``table`` to ``path`` atomically as Parquet (list columns) or JSON Lines."""
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            pq.write_table(table, tmp, compression="zstd")
            return
        columns = {name: table.column(name).to_pylist() for name in table.column_names}
        names = table.column_names
        with open(tmp, "w") as f:
            for r in range(table.num_rows):
                f.write(json.dumps({name: columns[name][r] for name in names}, separators=(",", ":")))
                f.write("\n")


def _flat_oracle(split: dict, probabilities: dict, labels: dict, rows: np.ndarray) -> dict:
    """The split's oracle under the multi-task evaluator's metric names (``click/auc``, ..., ``auc`` and
    ``logloss`` = means over the objectives, ``min_auc``), so a run's summary sets them beside its own."""
    flat: dict = {}
    for objective in OBJECTIVES:
        y = labels[objective][rows]
        flat[f"{objective}/auc"] = split[objective]["auc"]
        flat[f"{objective}/logloss"] = split[objective]["logloss"]
        flat[f"{objective}/calibration"] = float(probabilities[objective][rows].mean() / y.mean()) if len(y) and y.any() else None
    aucs = [flat[f"{o}/auc"] for o in OBJECTIVES if flat[f"{o}/auc"] is not None and np.isfinite(flat[f"{o}/auc"])]
    losses = [flat[f"{o}/logloss"] for o in OBJECTIVES if flat[f"{o}/logloss"] is not None]
    flat["auc"] = float(np.mean(aucs)) if aucs else None
    flat["min_auc"] = float(np.min(aucs)) if aucs else None
    flat["logloss"] = float(np.mean(losses)) if losses else None
    return flat


def generate_feed_dataset(out_dir: str, config: FeedGeneratorConfig) -> dict:
    """Write ``train|valid|test.<format>`` and ``truth.json`` into ``out_dir``; return the truth."""
    model = PlantedFeedModel(config)
    imp = draw_impressions(model, config.rows)
    rng = np.random.default_rng([config.seed, 3])
    intercepts, probabilities, labels = {}, {}, {}
    for objective in OBJECTIVES:
        intercepts[objective] = solve_intercept(imp.logits[objective], config.base_rates[objective]) if config.rows else 0.0
        probabilities[objective] = _sigmoid(imp.logits[objective] + intercepts[objective])
        labels[objective] = (rng.random(config.rows) < probabilities[objective]).astype(np.int64)
    os.makedirs(out_dir, exist_ok=True)
    extension = "parquet" if config.format == "parquet" else "jsonl"
    oracle, files = {}, {}
    for index, split in enumerate(SPLITS):
        rows = np.flatnonzero(imp.split == index)
        path = os.path.join(out_dir, f"{split}.{extension}")
        write_raw(impressions_table(model, imp, labels, rows), path, config.format)
        files[split] = os.path.basename(path)
        oracle[split] = {"rows": int(len(rows))}
        for objective in OBJECTIVES:
            p, y = probabilities[objective][rows], labels[objective][rows]
            without = _sigmoid(imp.logits[objective][rows] - imp.history_terms[objective][rows]
                               + imp.history_terms[objective].mean() + intercepts[objective])  # fmt: skip
            oracle[split][objective] = {
                "rate": float(y.mean()) if len(y) else None,
                "auc": roc_auc(p, y) if len(y) else None,
                "logloss": log_loss(p, y) if len(y) else None,
                "auc_without_history_terms": roc_auc(without, y) if len(y) else None,
            }
        oracle[split].update(_flat_oracle(oracle[split], probabilities, labels, rows))
    truth = {
        "kind": "feed",
        "generator": "torchrec_app.data.feed.generate",
        "config": {name: getattr(config, name) for name in config.__slots__},
        "files": files,
        "objectives": list(OBJECTIVES),
        "oracle": oracle,
        "intercepts": intercepts,
        "model": {
            "description": __doc__.split("The labels are")[1].split("Sessions go")[0].strip(),
            "users": int(imp.user.max()) + 1 if config.rows else 0,
            "sessions": int(imp.session.max()) + 1 if config.rows else 0,
            "scam_items": int(model.scam.sum()),
            "note": "auc_without_history_terms: the true model with its history terms held at their mean; "
            "a reference for what a model without the history loses, not an oracle",
        },
    }
    write_truth(out_dir, truth)
    return truth
