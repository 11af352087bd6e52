"""A LightGBM LambdaRank re-ranker over the candidates of several generator runs (the tabular approach).

For each user, the candidates are the union of the generator runs' top ``C`` items
(:mod:`.lists`; e.g. EASE's and SASRec's top 100). Each (user, candidate) pair gets features:

=====================  ===================================================================
``rank_<m>``           the candidate's rank in run ``m``'s list (missing if not in its top C)
``score_<m>``          its score in run ``m`` (missing if absent, or the run saved no scores)
``rrf_<m>``            ``1 / (60 + rank_<m>)`` (0 if absent)
``lists``              how many runs propose it
``pop``, ``log_pop``   the item's interactions in the train split (item popularity)
``year``, ``genres``   side information (items.parquet: year, number of genres)
``genre_match``        share of the user's input items sharing a genre with the candidate
``user_items``         the user's input items (history length)
``user_log_pop``       mean log popularity of the user's input items
=====================  ===================================================================

**Trained on the validation split only.** Labels are 1 for a candidate that is one of
the user's *validation* targets; the features of validation users use their validation
input (never the valid targets, never anything of test). A share ``fusion.holdout_users``
of the validation users is held out to pick the number of boosting rounds (early stopping
on NDCG@10). The test split is then only *scored*: its features come from the test input
and the runs' test lists, and its targets are read only by the evaluation afterwards
(tested: changing the test targets changes no test prediction).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from torchrec_app.config.general import FusionConfig
from torchrec_app.data.metadata import load_metadata
from torchrec_app.data.user_items import read_split
from torchrec_app.metrics.ranking import paired_comparison, read_per_user
from torchrec_app.tools.fusion.lists import RunLists, candidate_union, details_path, evaluate_fused, list_depths, load_runs


class ItemFacts:
    """Per-item popularity (train split) and side information of a user-item dataset, indexed by item id."""

    def __init__(self, data_dir: str) -> None:
        meta = load_metadata(data_dir)
        if meta.kind != "user_items":
            raise ValueError(f"{data_dir}: a {meta.kind!r} dataset; rerank reads the user-item dataset of the runs' protocol "
                             "(torchrec-app preprocess --kind user_items)")  # fmt: skip
        n = int(meta.num_embeddings["item"])
        _, train_items, _ = read_split(data_dir, "train")
        self.popularity = np.bincount(np.concatenate(train_items) if train_items else np.zeros(0, np.int64), minlength=n).astype(np.float64)
        self.log_pop = np.log1p(self.popularity)
        self.year = np.zeros(n)
        self.genres = [np.zeros(0, np.int64)] * n
        items_file = os.path.join(data_dir, meta.extra.get("items_file", "items.parquet"))
        if os.path.isfile(items_file):
            table = pq.read_table(items_file, columns=["item", "year", "genre_ids"])
            ids = table.column("item").to_numpy()
            self.year[ids] = table.column("year").to_numpy()
            for item, genres in zip(ids.tolist(), table.column("genre_ids").to_pylist()):
                self.genres[item] = np.asarray(genres, dtype=np.int64)
        self.num_genres = np.array([len(g) for g in self.genres], dtype=np.float64)
        self.data_dir = data_dir


def feature_names(run_names: list[str]) -> list[str]:
    per_run = [f"{kind}_{i}" for i in range(len(run_names)) for kind in ("rank", "score", "rrf")]
    return per_run + ["lists", "pop", "log_pop", "year", "genres", "genre_match", "user_items", "user_log_pop"]


def candidate_features(runs: list[RunLists], histories: dict[int, np.ndarray], facts: ItemFacts,
                       candidates: int) -> tuple[np.ndarray, list[np.ndarray]]:  # fmt: skip
    """``(features P x F, candidates per user)`` for every user of ``runs`` (rows user after user).

    Uses the runs' lists and each user's input items only: no target enters a feature.
    """
    rows, per_user = [], []
    for u, user in enumerate(runs[0].users.tolist()):
        cands = candidate_union(runs, u, candidates)
        per_user.append(cands)
        history = histories.get(user, np.zeros(0, np.int64))
        user_genres = [facts.genres[i] for i in history.tolist()]
        genre_counts: dict[int, int] = {}
        for gs in user_genres:
            for g in set(gs.tolist()):
                genre_counts[g] = genre_counts.get(g, 0) + 1
        user_log_pop = float(facts.log_pop[history].mean()) if len(history) else 0.0
        block = np.full((len(cands), 3 * len(runs) + 8), np.nan)
        for m, run in enumerate(runs):
            top = run.top[u][:candidates]
            where = {int(i): r for r, i in enumerate(top.tolist(), start=1)}
            scores = run.scores[u][:candidates] if run.scores is not None else None
            for c, item in enumerate(cands.tolist()):
                r = where.get(item)
                block[c, 3 * m] = r if r is not None else np.nan
                block[c, 3 * m + 1] = scores[r - 1] if (r is not None and scores is not None) else np.nan
                block[c, 3 * m + 2] = 1.0 / (60 + r) if r is not None else 0.0
        base = 3 * len(runs)
        block[:, base] = (~np.isnan(block[:, 0 : base : 3])).sum(axis=1)
        block[:, base + 1] = facts.popularity[cands]
        block[:, base + 2] = facts.log_pop[cands]
        block[:, base + 3] = facts.year[cands]
        block[:, base + 4] = facts.num_genres[cands]
        block[:, base + 5] = [max((genre_counts.get(g, 0) for g in facts.genres[i].tolist()), default=0) / max(1, len(history))
                              for i in cands.tolist()]  # fmt: skip
        block[:, base + 6] = len(history)
        block[:, base + 7] = user_log_pop
        rows.append(block)
    return (np.concatenate(rows) if rows else np.zeros((0, 3 * len(runs) + 8))), per_user


def _histories(data_dir: str, split: str) -> dict[int, np.ndarray]:
    users, items, _ = read_split(data_dir, split)
    return dict(zip(users.tolist(), items))


def _labels(per_user: list[np.ndarray], targets: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.isin(c, t).astype(np.int32) for c, t in zip(per_user, targets)]) if per_user else np.zeros(0, np.int32)


def fit_reranker(valid: list[RunLists], facts: ItemFacts, config: FusionConfig):
    """A ``lightgbm.Booster`` (LambdaRank) trained on the validation candidates and validation targets only."""
    import lightgbm as lgb

    features, per_user = candidate_features(valid, _histories(facts.data_dir, "valid"), facts, config.candidates)
    labels = _labels(per_user, valid[0].targets)
    sizes = np.array([len(c) for c in per_user])
    starts = np.concatenate([[0], np.cumsum(sizes)])
    rng = np.random.default_rng(config.seed)
    held = rng.random(len(per_user)) < config.holdout_users
    held[rng.integers(len(per_user))] = True  # at least one user on each side
    fit_users, held_users = np.flatnonzero(~held), np.flatnonzero(held)
    if len(fit_users) == 0:
        raise ValueError("too few validation users to train a re-ranker (lower fusion.holdout_users)")

    def take(users: np.ndarray):
        index = np.concatenate([np.arange(starts[u], starts[u + 1]) for u in users])
        return features[index], labels[index], sizes[users]

    x_fit, y_fit, g_fit = take(fit_users)
    x_held, y_held, g_held = take(held_users)
    names = feature_names([r.name for r in valid])
    params = {"objective": "lambdarank", "metric": "ndcg", "eval_at": [10], "learning_rate": config.learning_rate,
              "num_leaves": config.num_leaves, "seed": config.seed, "num_threads": 1, "deterministic": True,
              "force_row_wise": True, "verbose": -1, "lambdarank_truncation_level": 20}  # fmt: skip
    train_set = lgb.Dataset(x_fit, y_fit, group=g_fit, feature_name=names)
    held_set = lgb.Dataset(x_held, y_held, group=g_held, reference=train_set)
    return lgb.train(params, train_set, num_boost_round=config.num_rounds, valid_sets=[held_set],
                     callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)])  # fmt: skip


def rerank_lists(model, runs: list[RunLists], facts: ItemFacts, split: str, candidates: int) -> list[np.ndarray]:
    """Each user's candidates ordered by the re-ranker's score (desc; ties by lower id), from ``split``'s inputs and lists."""
    features, per_user = candidate_features(runs, _histories(facts.data_dir, split), facts, candidates)
    scores = model.predict(features, num_iteration=model.best_iteration or None) if len(features) else np.zeros(0)
    out, start = [], 0
    for cands in per_user:
        s = scores[start : start + len(cands)]
        start += len(cands)
        out.append(cands[np.lexsort((cands, -s))])
    return out


def run_rerank(runs: list[str], data_dir: str, out_dir: str, config: FusionConfig, ks=(10, 20), save_top_k: int = 100) -> dict[str, Any]:
    """Train on valid, re-rank test, compare with the best single run (paired); write ``out_dir`` and return the summary."""
    from torchrec_app.utils.fs import atomic_path, write_json_atomic

    ks = tuple(ks)
    facts = ItemFacts(data_dir)
    valid = load_runs(runs, "valid", config.candidates)
    model = fit_reranker(valid, facts, config)
    test = load_runs(runs, "test", config.candidates)
    os.makedirs(os.path.join(out_dir, "details"), exist_ok=True)
    summary: dict[str, Any] = {"runs": runs, "data": data_dir, "candidates": config.candidates, "list_depths": list_depths(valid),
                               "best_iteration": int(model.best_iteration or model.current_iteration()),
                               "feature_importance": dict(zip(feature_names([r.name for r in valid]),
                                                              (round(float(g), 3) for g in model.feature_importance("gain")))),
                               "trained_on": "valid targets of the valid users not held out for early stopping"}  # fmt: skip
    test_lists = rerank_lists(model, test, facts, "test", config.candidates)
    metrics = evaluate_fused(test, test_lists, config.candidates, ks, save_top_k)
    metrics.write_per_user(os.path.join(out_dir, "details", "test.parquet"))
    summary["test"] = metrics.compute()
    singles = {run: float(read_per_user(details_path(run, "valid")).column(config.fit_metric).to_numpy().mean()) for run in runs}
    best_single = max(runs, key=lambda r: singles[r])
    single = read_per_user(details_path(best_single, "test"))
    mine = read_per_user(os.path.join(out_dir, "details", "test.parquet"))
    summary.update(best_single_run=best_single, valid_single=singles,
                   test_best_single={m: float(single.column(m).to_numpy().mean()) for m in single.column_names if "@" in m or m == "mrr"},
                   test_vs_best_single=[paired_comparison(single, mine, m) for m in [f"{x}@{k}" for k in ks for x in ("recall", "ndcg")] + ["mrr"]])  # fmt: skip
    with atomic_path(os.path.join(out_dir, "reranker.txt")) as tmp:
        model.save_model(str(tmp))
    write_json_atomic(os.path.join(out_dir, "summary.json"), summary)
    return summary
