"""``preprocess_dataset``: plan, vocabulary pass, conversion, publish.

The parent plans the tasks, prepares the build directory (:mod:`.output`), runs the
vocabulary pass (:mod:`.vocab_pass`) and the conversion (:mod:`.write`) on worker
processes (:mod:`.pool`), and publishes ``metadata.json``.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import shutil
import time

from torchrec_app.config.data import PreprocessConfig
from torchrec_app.data import criteo_format as fmt_
from torchrec_app.data.criteo_format import DENSE_FEATURES, SPARSE_FEATURES, DataFormatError
from torchrec_app.data.metadata import DatasetMetadata, SplitFile
from torchrec_app.data.preprocess.output import PROGRESS_DIR, VOCAB_DIR, fingerprint, prepare_build, publish
from torchrec_app.data.preprocess.plan import plan_tasks
from torchrec_app.data.preprocess.pool import abandon, executor
from torchrec_app.data.preprocess.stage import STAGED_DIR
from torchrec_app.data.preprocess.vocab_pass import build_vocabularies, preload_vocabularies
from torchrec_app.data.preprocess.write import TaskResult, convert_task, read_task_marker
from torchrec_app.data.splits import SPLITS, Source

_INT32_MAX = 2**31 - 1


def preprocess_dataset(out_dir: str, sources: list[Source], config: PreprocessConfig, *, split_policy: str = "explicit",
                       log=print) -> DatasetMetadata:  # fmt: skip
    """Convert ``sources`` into a Parquet dataset in ``out_dir`` and return its metadata.

    Builds beside the dataset already in ``out_dir`` (if any) and replaces it only on
    success; resumes an interrupted run with the same inputs and settings (see the module
    docstring).

    Raises:
        DataFormatError: bad input (names file, line and field).
    """
    config.check_hash_size()
    if not sources:
        raise ValueError("no input files: pass --train/--valid/--test FILES or --input FILES --split POLICY")
    formats = [fmt_.sniff_format(source.path) for source in sources]  # missing/empty files fail here, before any work
    for source, fmt in zip(sources, formats):
        if not fmt.labeled and source.rule.split != "score":
            raise DataFormatError(f"{source.path}: the rows have no label ({fmt.describe_columns()}); unlabeled rows "
                                  "(such as Kaggle's test.txt) can only be preprocessed for scoring: pass them with --score FILES")  # fmt: skip
    vocab_features = [f for f in SPARSE_FEATURES if config.strategy_of(f) == "vocab"]
    has_train = any(s.rule.split == "train" or s.rule.bounds or s.rule.seed is not None for s in sources)
    if vocab_features and not has_train:
        raise ValueError("the vocab id strategy needs train rows (--train FILES); or use preprocess.id_strategy=hash")
    workers = config.workers or len(os.sched_getaffinity(0))
    tasks = plan_tasks(sources, workers, formats)
    os.makedirs(out_dir, exist_ok=True)
    build = prepare_build(out_dir, fingerprint(sources, tasks, config, split_policy))
    parallel = min(workers, len(tasks))
    start = time.perf_counter()
    finished = {t.index: r for t in tasks if (r := read_task_marker(build, t)) is not None}
    if finished:
        log(f"resuming: {len(finished)} of {len(tasks)} tasks already done")
    num_embeddings = {f: config.hash_size for f in SPARSE_FEATURES if f not in vocab_features}
    if vocab_features:
        with executor(parallel) as pool:
            num_embeddings.update(build_vocabularies(build, tasks, config, vocab_features, pool, parallel, log, set(finished)))
        # Loaded (and their lookup tables built) here, once: the conversion's workers are forked
        # after this and share them, instead of each reading and indexing every vocabulary.
        preload_vocabularies(os.path.join(build, VOCAB_DIR), tuple(vocab_features))
    id_dtype = "int32" if max(num_embeddings.values()) <= _INT32_MAX else "int64"
    with executor(parallel) as pool:
        results = _run_conversion(build, tasks, config, id_dtype, pool, parallel, finished)
    name = os.path.basename(build)
    files = {split: [SplitFile(path=f"{name}/{r.files[split].path}", rows=r.files[split].rows) for r in results if split in r.files]
             for split in SPLITS}  # fmt: skip
    files = {split: entries for split, entries in files.items() if entries}
    bad = sum(r.bad_rows for r in results)
    meta = DatasetMetadata(
        dense_features=list(DENSE_FEATURES),
        sparse_features=list(SPARSE_FEATURES),
        multi_hot=config.multi_hot,
        num_embeddings=num_embeddings,
        id_strategies={f: config.strategy_of(f) for f in SPARSE_FEATURES},
        min_frequency=config.min_frequency,
        hash_size=config.hash_size,
        split_policy=split_policy,
        split_rows={split: sum(f.rows for f in entries) for split, entries in files.items()},
        files=files,
        sources=[{"path": s.path, "bytes": os.path.getsize(s.path), "split": s.rule.split or split_policy} for s in sources],
        bad_rows_skipped=bad,
        vocab_dir=f"{name}/{VOCAB_DIR}",
    )
    publish(out_dir, build, meta, sources)
    log(f"preprocessed {sum(meta.split_rows.values())} rows {meta.split_rows} into {out_dir} in "
        f"{time.perf_counter() - start:.1f}s" + (f"; skipped {bad} bad rows" if bad else ""))  # fmt: skip
    return meta


def _run_conversion(build, tasks, config, id_dtype, pool, parallel, finished: dict[int, TaskResult]) -> list[TaskResult]:
    results = dict(finished)
    todo = [t for t in tasks if t.index not in results]
    futures = [pool.submit(convert_task, t, build, config, id_dtype, parallel == 1) for t in todo]
    try:
        for future in cf.as_completed(futures) if futures else []:
            result = future.result()
            results[result.index] = result
            total_bad = sum(r.bad_rows for r in results.values())
            if total_bad > config.max_bad_rows:
                raise DataFormatError(f"more than --max-bad-rows={config.max_bad_rows} bad rows skipped ({total_bad}); "
                                      f"see {os.path.join(build, PROGRESS_DIR)}/task-*.json for examples")  # fmt: skip
    except BaseException:
        abandon(futures, pool)
        raise
    shutil.rmtree(os.path.join(build, STAGED_DIR), ignore_errors=True)
    return [results[t.index] for t in tasks]
