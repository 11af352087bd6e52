"""The vocabulary pass: each task parsed once into staged rows, train ids counted, vocabularies built.

Worker processes parse every task (:func:`stage_task`): its rows go to a staged Arrow
stream (:mod:`.stage`) that the conversion maps without reading the text again, and the
raw ids of its train rows are counted per feature. The parent merges the counts, saves
``vocab/<feature>.parquet`` (:mod:`torchrec_app.data.vocab`) and a marker with the table
sizes. A resumed run keeps the staged tasks (``_progress/staged-NNNNN.json``) and the
vocabularies (``_progress/vocab.json``) it finds.
"""

from __future__ import annotations

import functools
import json
import os

import numpy as np

from torchrec_app.config.data import PreprocessConfig
from torchrec_app.data.criteo_format import DataFormatError
from torchrec_app.data.preprocess.output import PROGRESS_DIR, VOCAB_DIR
from torchrec_app.data.preprocess.parse import iter_task_rows
from torchrec_app.data.preprocess.plan import Task
from torchrec_app.data.preprocess.pool import gather
from torchrec_app.data.preprocess.stage import read_counts, stage_batch, staged_paths, staged_schema, staged_writer, write_counts
from torchrec_app.data.vocab import Counts, Vocabulary
from torchrec_app.utils.fs import atomic_path, write_json_atomic

_MERGE_EVERY = 16  # blocks of counts held before merging them (bounds memory)


def staged_marker(build: str, task: Task) -> str:
    """The progress marker of a staged task (bad rows and examples)."""
    return os.path.join(build, PROGRESS_DIR, f"staged-{task.index:05d}.json")


def read_staged_marker(build: str, task: Task) -> dict | None:
    """The marker of a staged task whose files are all there, else None."""
    marker = staged_marker(build, task)
    if not os.path.exists(marker) or not all(os.path.exists(p) for p in staged_paths(build, task)):
        return None
    try:
        with open(marker) as f:
            return json.load(f)
    except json.JSONDecodeError:
        return None


def stage_task(task: Task, build: str, config: PreprocessConfig, features: list[str], use_threads: bool) -> int:
    """Parse ``task`` once: write its staged rows and the train counts of ``features``, then its
    marker; returns the number of bad rows skipped."""
    rows_path, counts_path = staged_paths(build, task)
    os.makedirs(os.path.dirname(rows_path), exist_ok=True)
    vocab_features = set(features)
    schema = staged_schema(config, vocab_features, scoring=task.rule.split == "score")
    parts: dict[str, list[Counts]] = {f: [] for f in features}
    bad_rows: list[str] = []
    with atomic_path(rows_path) as tmp, staged_writer(str(tmp), schema) as writer:
        for chunk in iter_task_rows(task, config, use_threads, bad_rows, encode_ids=vocab_features):
            batch, counts = stage_batch(chunk.rows, chunk.splits, config, schema, vocab_features)
            writer.write_batch(batch)
            for feature, (ids, n) in counts.items():
                parts[feature].append(Counts(ids, n))
                if len(parts[feature]) >= _MERGE_EVERY:
                    parts[feature] = [Counts.merge(parts[feature])]
    with atomic_path(counts_path) as tmp:
        write_counts(str(tmp), [Counts.merge(parts[f]) for f in features])
    write_json_atomic(staged_marker(build, task), {"bad_rows": len(bad_rows), "bad_examples": bad_rows[:20]})
    return len(bad_rows)


@functools.lru_cache(maxsize=2)
def load_vocabularies(vocab_dir: str, features: tuple[str, ...]) -> dict[str, Vocabulary]:
    """The saved vocabularies (cached: each worker process loads them once per run)."""
    return {f: Vocabulary.load(os.path.join(vocab_dir, f"{f}.parquet")) for f in features}


def preload_vocabularies(vocab_dir: str, features: tuple[str, ...]) -> None:
    """Load the vocabularies into this process's cache with their lookup tables built, so
    worker processes forked afterwards use them as they are (copy-on-write)."""
    for vocab in load_vocabularies(vocab_dir, features).values():
        vocab.lookup(np.zeros(0, dtype=np.uint64))  # builds the hash table


def build_vocabularies(build, tasks, config, features, pool, parallel, log, finished: set[int]) -> dict[str, int]:
    """Stage every unfinished task not staged yet, then build (or reload) the vocabularies.

    Returns each feature's table size. ``finished``: tasks whose Parquet parts exist.
    """
    todo = [t for t in tasks if t.index not in finished and read_staged_marker(build, t) is None]
    if len(todo) < len(tasks) - len(finished):
        log(f"resuming: {len(tasks) - len(finished) - len(todo)} of {len(tasks)} tasks already parsed")
    gather([pool.submit(stage_task, t, build, config, features, parallel == 1) for t in todo], pool)
    total_bad = sum((read_staged_marker(build, t) or {}).get("bad_rows", 0) for t in tasks if t.index not in finished)
    if total_bad > config.max_bad_rows:
        raise DataFormatError(f"more than --max-bad-rows={config.max_bad_rows} bad rows skipped ({total_bad}); "
                              f"see {os.path.join(build, PROGRESS_DIR)}/staged-*.json for examples")  # fmt: skip
    done = os.path.join(build, PROGRESS_DIR, "vocab.json")
    if os.path.exists(done):
        with open(done) as f:
            return json.load(f)["num_embeddings"]
    per_task = [read_counts(staged_paths(build, t)[1]) for t in tasks if t.rule.split in ("", "train")]
    vocab_dir = os.path.join(build, VOCAB_DIR)
    os.makedirs(vocab_dir, exist_ok=True)
    sizes = {}
    for k, feature in enumerate(features):
        vocab = Vocabulary.build(Counts.merge([counts[k] for counts in per_task]), config.min_frequency)
        vocab.save(os.path.join(vocab_dir, f"{feature}.parquet"))
        sizes[feature] = vocab.num_embeddings
    write_json_atomic(done, {"num_embeddings": sizes})
    log(f"built vocabularies of {len(features)} features (min_frequency={config.min_frequency})")
    return sizes
