"""``torchrec-app generate --kind sequences``: item sequences with planted structure, and the oracle.

The planted model (parameters are a function of the seed alone):

* items ``1..N`` fall in ``G`` genres (latent clusters); item ``j`` has a vector
  ``v_j = c_g(j) + 0.5 eps``, a popularity ``p_j`` (Zipf over a random order), a year, one
  or two genres (its own, sometimes another), and ``successors`` items it leads to, mostly
  in its own genre, with Dirichlet weights ``T[j, .]``;
* user ``u`` has a taste ``t_u`` = the mean of 1-2 genre centres plus noise;
* a user's first item is drawn from ``taste * softmax(t_u . v / temperature) + popularity * p``,
  each next item after item ``i`` from::

      P(j | u, i) ∝ transition * T[i, j] + taste * softmax(t_u . v / temperature)_j + popularity * p_j

  with items the user already has removed (no repeats) and the rest renormalised.

Sequence lengths are ``min_len`` plus a geometric excess (mean ``mean_len``), capped at
``max_len``; timestamps advance by random gaps from a random start, so both splits of
:mod:`~torchrec_app.data.sequences.preprocess` apply. The files are MovieLens-1M shaped
(``ratings.dat``: ``user::item::rating::timestamp`` with raw ids ``1..``, ``movies.dat``:
``item::Item j (year)::Genre|Genre``), so they go through exactly the path real data takes.

``truth.json`` holds the planted parameters' summary and the **oracle** metrics: every
valid / test target (leave-one-out: each user's second-last / last item) ranked by its
true probability ``P(j | u, history)``, by the same evaluator as the models
(:mod:`torchrec_app.metrics.ranking`: full ranking, seen items masked), over the items that
occur in the data. They are what the best possible model scores on the split that
``preprocess`` makes with ``sequence_preprocess.split=leave_one_out`` and
``min_item_interactions=1`` (the generator's users all have >= ``min_len`` items, so a
user k-core up to ``min_len`` removes nothing). A popularity baseline (train counts) is
recorded beside it.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from torchrec_app.config.sequences import SequenceGeneratorConfig
from torchrec_app.data.truth import write_truth
from torchrec_app.metrics.ranking import RankingMetrics, rank_full_scores
from torchrec_app.utils.fs import atomic_path

GENRE_NAMES = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir",
    "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
START_TIME = 946_684_800  # 2000-01-01


def genre_name(g: int) -> str:
    """Name of latent genre ``g`` (MovieLens names, then ``Genre<g>``)."""
    return GENRE_NAMES[g] if g < len(GENRE_NAMES) else f"Genre{g}"


class PlantedModel:
    """The planted parameters (see the module docstring); items are indexed ``0..N-1`` here (raw id = index + 1)."""

    def __init__(self, config: SequenceGeneratorConfig) -> None:
        c = config
        rng = np.random.default_rng([c.seed, 1])
        n, g = c.items, c.genres
        self.config = c
        self.centres = rng.normal(size=(g, c.dim))
        self.genre = rng.integers(0, g, size=n)
        second = rng.integers(0, g, size=n)
        self.genres = [sorted({int(a), int(b)}) if rng.random() < 0.3 else [int(a)] for a, b in zip(self.genre, second)]
        self.vectors = self.centres[self.genre] + 0.5 * rng.normal(size=(n, c.dim))
        ranks = rng.permutation(n) + 1.0
        popularity = ranks ** -c.zipf_exponent
        self.popularity = popularity / popularity.sum()
        self.years = rng.integers(1950, 2021, size=n)
        # successors: mostly in the item's own genre, drawn by popularity
        self.successors = np.empty((n, c.successors), dtype=np.int64)
        by_genre = [np.flatnonzero(self.genre == k) for k in range(g)]
        for j in range(n):
            pool = by_genre[self.genre[j]] if rng.random() < 0.8 and len(by_genre[self.genre[j]]) > c.successors else np.arange(n)
            pool = pool[pool != j]
            weights = self.popularity[pool] / self.popularity[pool].sum()
            self.successors[j] = rng.choice(pool, size=c.successors, replace=False, p=weights)
        self.successor_weights = rng.dirichlet(np.ones(c.successors), size=n)

    def tastes(self, users: int, rng: np.random.Generator) -> np.ndarray:
        """``users x N`` taste distributions ``softmax(t_u . v / temperature)``."""
        c = self.config
        favourite = rng.integers(0, c.genres, size=(users, 2))
        both = rng.random(users) < 0.5
        taste = np.where(both[:, None], self.centres[favourite].mean(axis=1), self.centres[favourite[:, 0]])
        taste = taste + 0.3 * rng.normal(size=taste.shape)
        logits = taste @ self.vectors.T / c.temperature
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)


def generate_sequences(config: SequenceGeneratorConfig) -> dict:
    """Draw every user's sequence; return items (raw ids), timestamps and the targets' true probabilities."""
    config.check_lengths()
    c = config
    model = PlantedModel(c)
    rng = np.random.default_rng([c.seed, 2])
    n = c.items
    lengths = np.minimum(c.max_len, c.min_len + rng.geometric(1.0 / (c.mean_len - c.min_len + 1), size=c.users) - 1)
    tastes = model.tastes(c.users, rng)
    background = (c.taste * tastes + c.popularity * model.popularity[None, :]).astype(np.float32)
    seen = np.zeros((c.users, n), dtype=bool)
    sequences = np.zeros((c.users, int(lengths.max())), dtype=np.int64)
    oracle = {"valid": np.zeros((c.users, n), np.float32), "test": np.zeros((c.users, n), np.float32)}
    rows = np.arange(c.users)
    for t in range(int(lengths.max())):
        active = rows[lengths > t]
        probs = background[active].copy()
        if t > 0:
            previous = sequences[active, t - 1]
            np.add.at(probs, (np.repeat(np.arange(len(active)), c.successors), model.successors[previous].ravel()),
                      (c.transition * model.successor_weights[previous]).ravel().astype(np.float32))
        probs[seen[active]] = 0.0
        probs /= probs.sum(axis=1, keepdims=True)
        for name, offset in (("valid", 2), ("test", 1)):
            at = lengths[active] - offset == t
            oracle[name][active[at]] = probs[at]
        cumulative = np.cumsum(probs, axis=1)
        draws = rng.random(len(active)) * cumulative[:, -1]
        choice = np.minimum((cumulative < draws[:, None]).sum(axis=1), n - 1)
        sequences[active, t] = choice
        seen[active, choice] = True
    gaps = rng.exponential(86_400.0, size=sequences.shape).astype(np.int64) + 1
    starts = START_TIME + rng.integers(0, 3 * 365 * 86_400, size=c.users)
    timestamps = starts[:, None] + np.cumsum(gaps, axis=1)
    return {"model": model, "lengths": lengths, "sequences": sequences, "timestamps": timestamps, "oracle": oracle}


def oracle_metrics(drawn: dict, ks: tuple[int, ...] = (10, 20)) -> dict:
    """Oracle and popularity-baseline metrics of the leave-one-out valid / test targets."""
    lengths, sequences = drawn["lengths"], drawn["sequences"]
    users, n = sequences.shape[0], drawn["oracle"]["valid"].shape[1]
    present = np.zeros(n, dtype=bool)
    for u in range(users):
        present[sequences[u, : lengths[u]]] = True
    train_counts = np.zeros(n, dtype=np.float64)
    for u in range(users):
        np.add.at(train_counts, sequences[u, : lengths[u] - 2], 1.0)
    out = {}
    for name, offset in (("valid", 2), ("test", 1)):
        targets = torch.tensor(sequences[np.arange(users), lengths - offset][:, None] + 1)
        history = [(sequences[u, : lengths[u] - offset] + 1).tolist() for u in range(users)]
        result = {}
        for label, scores in (("oracle", drawn["oracle"][name]), ("popularity", np.broadcast_to(train_counts, (users, n)))):
            full = np.full((users, n + 1), -np.inf, dtype=np.float64)  # column 0: padding; absent items never rank
            full[:, 1:] = np.where(present[None, :], scores, -np.inf)
            metrics = RankingMetrics(ks)
            for start in range(0, users, 512):
                stop = min(users, start + 512)
                ranks, _, _ = rank_full_scores(torch.from_numpy(full[start:stop]), targets[start:stop], history[start:stop], min_item=1)
                metrics.add(torch.arange(start, stop), targets[start:stop], ranks)
            result[label] = metrics.compute()
        out[name] = result
    return {"oracle": {k: v["oracle"] for k, v in out.items()}, "popularity": {k: v["popularity"] for k, v in out.items()},
            "items_present": int(present.sum())}  # fmt: skip


def generate_sequence_dataset(out_dir: str, config: SequenceGeneratorConfig) -> dict:
    """Write ``ratings.dat``, ``movies.dat`` and ``truth.json`` into ``out_dir``; return the truth."""
    drawn = generate_sequences(config)
    model: PlantedModel = drawn["model"]
    lengths, sequences, timestamps = drawn["lengths"], drawn["sequences"], drawn["timestamps"]
    rng = np.random.default_rng([config.seed, 3])
    os.makedirs(out_dir, exist_ok=True)
    lines = []
    for u in range(config.users):
        ratings = rng.choice([3, 4, 5], size=lengths[u], p=[0.2, 0.4, 0.4])
        lines.extend(f"{u + 1}::{item + 1}::{r}::{ts}" for item, r, ts in zip(sequences[u, : lengths[u]], ratings, timestamps[u]))
    with atomic_path(os.path.join(out_dir, "ratings.dat")) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    movies = [f"{j + 1}::Item {j + 1} ({model.years[j]})::{'|'.join(genre_name(g) for g in model.genres[j])}" for j in range(config.items)]
    with atomic_path(os.path.join(out_dir, "movies.dat")) as tmp:
        tmp.write_text("\n".join(movies) + "\n", encoding="latin-1")
    metrics = oracle_metrics(drawn)
    truth = {
        "kind": "sequences",
        "generator": {k: getattr(config, k) for k in config.__slots__},
        "interactions": int(lengths.sum()),
        "users": config.users,
        "items": config.items,
        "items_present": metrics["items_present"],
        "protocol": {"split": "leave_one_out", "mask_seen": True, "min_item_interactions": 1,
                     "note": "full ranking over the items present in the data, by the true next-item probabilities"},
        "oracle": metrics["oracle"],
        "popularity": metrics["popularity"],
    }
    write_truth(out_dir, truth)
    return truth
