"""The vocabulary pass: raw ids counted over the train rows, then each feature's vocabulary.

Worker processes parse the train tasks and count ids per feature; the parent merges the
counts and saves ``vocab/<feature>.parquet`` (:mod:`torchrec_app.data.vocab`) and a marker
with the table sizes, so a resumed run skips the pass.
"""

from __future__ import annotations

import functools
import json
import os

import numpy as np

from torchrec_app.config.data import PreprocessConfig
from torchrec_app.data.criteo_format import SPARSE_FEATURES
from torchrec_app.data.preprocess.output import PROGRESS_DIR, VOCAB_DIR
from torchrec_app.data.preprocess.parse import iter_task_rows
from torchrec_app.data.preprocess.plan import Task
from torchrec_app.data.preprocess.pool import gather
from torchrec_app.data.vocab import Counts, Vocabulary
from torchrec_app.utils.fs import write_json_atomic


def count_task(task: Task, config: PreprocessConfig, features: list[str], use_threads: bool) -> list[Counts]:
    """Raw-id counts of ``features`` over the train rows of ``task``."""
    parts: list[list[Counts]] = [[] for _ in features]
    for chunk in iter_task_rows(task, config, use_threads, bad_rows=[]):
        train = chunk.splits == 0
        if not train.any():
            continue
        for k, feature in enumerate(features):
            f = SPARSE_FEATURES.index(feature)
            values = chunk.rows.sparse[f]
            if chunk.rows.lengths is not None:
                values = values[np.repeat(train, chunk.rows.lengths[f])]
            elif not train.all():
                values = values[train]
            parts[k].append(Counts.of(values))
            if len(parts[k]) >= 16:
                parts[k] = [Counts.merge(parts[k])]
    return [Counts.merge(p) for p in parts]


@functools.lru_cache(maxsize=2)
def load_vocabularies(vocab_dir: str, features: tuple[str, ...]) -> dict[str, Vocabulary]:
    return {f: Vocabulary.load(os.path.join(vocab_dir, f"{f}.parquet")) for f in features}


def build_vocabularies(build, tasks, config, features, pool, parallel, log) -> dict[str, int]:
    vocab_dir = os.path.join(build, VOCAB_DIR)
    done = os.path.join(build, PROGRESS_DIR, "vocab.json")
    if os.path.exists(done):
        with open(done) as f:
            return json.load(f)["num_embeddings"]
    train_tasks = [t for t in tasks if t.rule.split in ("", "train")]
    futures = [pool.submit(count_task, t, config, features, parallel == 1) for t in train_tasks]
    per_task = gather(futures, pool)
    os.makedirs(vocab_dir, exist_ok=True)
    sizes = {}
    for k, feature in enumerate(features):
        vocab = Vocabulary.build(Counts.merge([counts[k] for counts in per_task]), config.min_frequency)
        vocab.save(os.path.join(vocab_dir, f"{feature}.parquet"))
        sizes[feature] = vocab.num_embeddings
    write_json_atomic(done, {"num_embeddings": sizes})
    log(f"built vocabularies of {len(features)} features (min_frequency={config.min_frequency})")
    return sizes
