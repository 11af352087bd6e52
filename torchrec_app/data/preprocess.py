"""``torchrec-app preprocess``: Criteo TSV/CSV files -> Parquet that training reads cheaply.

    torchrec-app preprocess --train train.txt --valid valid.txt [--test test.txt] --out DIR
    torchrec-app preprocess --input train.txt --split kaggle_days --out DIR
    torchrec-app preprocess --input day_0.gz ... day_23.gz --split criteo_1tb_days --out DIR \\
        preprocess.id_strategy=hash preprocess.hash_size=40000000
    torchrec-app preprocess --input data.csv --split random --out DIR preprocess.min_frequency=3

How it works:

1. **Plan.** Each input is cut into tasks: byte ranges of ~64-512 MiB starting at line
   starts for plain files, the whole file for gzip. Row-order split policies count rows
   first (:mod:`torchrec_app.data.splits`).
2. **Vocabularies** (features with the ``vocab`` strategy): worker processes parse the
   train rows and count raw ids; the parent merges counts and saves ``vocab/<f>.parquet``
   (:mod:`torchrec_app.data.vocab`).
3. **Convert.** Worker processes (one task each at a time, all cores) parse blocks of
   ``preprocess.block_bytes`` with pyarrow (:mod:`torchrec_app.data.criteo_format`),
   map ids (vocabulary, or ``raw % hash_size``) and write ``<split>/part-<task>.parquet``
   with row groups of ``preprocess.row_group_rows``.
4. **Finish.** ``metadata.json`` (:mod:`torchrec_app.data.metadata`) is written last.

Output and restarts: the dataset is built in ``OUT/build-<fingerprint>/`` beside whatever
``OUT`` held, and published by one atomic rename of ``OUT/metadata.json`` (whose file
paths point into the build); only then are the previous dataset's files deleted. A run
that fails or is killed leaves the previous dataset byte-identical and loadable. Every
file is written under a ``.tmp`` name and renamed when complete; a finished task leaves
``_progress/task-NNNNN.json`` in its build. A rerun with the same inputs and settings
(same fingerprint, same build directory) deletes leftover ``.tmp`` files and redoes only
unfinished tasks; with anything changed it starts a new build and deletes the abandoned
one.

Bad input (wrong column count, non-integer dense value, non-hex id, label not 0/1,
truncated gzip, empty or missing file, a header that does not name the columns) stops
the run with ``file:line: field F: ...``; :mod:`torchrec_app.data.criteo_format` says
exactly what each field accepts. Unlabeled files (Kaggle's ``test.txt``) are accepted for
the ``score`` split only.
With ``--on-bad-rows skip`` bad rows are dropped and counted, and the run still fails
once more than ``--max-bad-rows`` were dropped. A ``truth.json`` beside the inputs (from
``torchrec-app generate``) is copied into the output.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import glob
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from torchrec_app.config.data import PreprocessConfig
from torchrec_app.data import criteo_format as fmt_
from torchrec_app.data.criteo_format import BOM, DENSE_FEATURES, ID, LABEL, SPARSE_FEATURES, DataFormatError, TextFormat
from torchrec_app.data.metadata import DatasetMetadata, SplitFile, load_metadata, save_metadata
from torchrec_app.data.splits import SPLITS, Source, SplitRule
from torchrec_app.data.truth import TRUTH_FILE
from torchrec_app.data.vocab import Counts, Vocabulary
from torchrec_app.utils.fs import atomic_path, write_json_atomic

PROGRESS_DIR = "_progress"
VOCAB_DIR = "vocab"
BUILD_PREFIX = "build-"
_LEGACY_ENTRIES = ("train", "valid", "test", "vocab", PROGRESS_DIR)  # a dataset written before build directories
_MIN_TASK_BYTES = 64 << 20
_MAX_TASK_BYTES = 512 << 20
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Task:
    """A unit of work for one process: a byte range of one source file."""

    index: int
    source: int
    path: str
    rule: SplitRule
    fmt: TextFormat
    start: int
    length: int | None  # None: to the end of the file (gzip)
    first_line: int | None  # 1-based line number at ``start``; None until needed


@dataclass(slots=True)
class TaskResult:
    """What a finished conversion task wrote."""

    index: int
    files: dict[str, SplitFile]
    bad_rows: int


# ----------------------------------------------------------------------------- planning


def count_rows(path: str) -> int:
    """Data rows of a file (lines, less a header; a last line without newline counts).

    Raises:
        DataFormatError: missing, empty or corrupt file.
    """
    fmt = fmt_.sniff_format(path)
    lines = 0
    with fmt_.open_text(path) as stream:
        for _, block in fmt_.iter_blocks(stream, 16 << 20, path):
            lines += block.count(b"\n")
    return lines - int(fmt.header)


def plan_tasks(sources: list[Source], workers: int, formats: list[TextFormat] | None = None) -> list[Task]:
    """Cut each source into tasks (see the module docstring); ``formats`` as sniffed, if known."""
    formats = formats or [fmt_.sniff_format(s.path) for s in sources]
    plain_bytes = sum(os.path.getsize(s.path) for s, f in zip(sources, formats) if not f.gzip)
    target = min(_MAX_TASK_BYTES, max(_MIN_TASK_BYTES, plain_bytes // max(1, 2 * workers)))
    tasks: list[Task] = []
    for source_index, (source, fmt) in enumerate(zip(sources, formats)):
        if fmt.gzip:
            tasks.append(Task(len(tasks), source_index, source.path, source.rule, fmt, 0, None, 1))
            continue
        size = os.path.getsize(source.path)
        bounds = _line_start_bounds(source.path, size, target)
        line = 1
        for start, end in zip(bounds[:-1], bounds[1:]):
            first_line = line if source.rule.needs_row_numbers or start == 0 else None
            tasks.append(Task(len(tasks), source_index, source.path, source.rule, fmt, start, end - start, first_line))
            if source.rule.needs_row_numbers:
                line += _count_newlines(source.path, start, end - start)
    return tasks


def _line_start_bounds(path: str, size: int, target: int) -> list[int]:
    bounds = [0]
    with open(path, "rb") as f:
        while bounds[-1] + target < size:
            f.seek(bounds[-1] + target)
            while True:
                piece = f.read(1 << 16)
                if not piece:
                    break
                nl = piece.find(b"\n")
                if nl >= 0:
                    break
            if not piece or f.tell() - len(piece) + nl + 1 >= size:
                break
            bounds.append(f.tell() - len(piece) + nl + 1)
    bounds.append(size)
    return bounds


def _count_newlines(path: str, start: int, length: int) -> int:
    count = 0
    with open(path, "rb") as f:
        f.seek(start)
        while length > 0:
            piece = f.read(min(16 << 20, length))
            if not piece:
                break
            count += piece.count(b"\n")
            length -= len(piece)
    return count


# ----------------------------------------------------------------------------- parsing a task


@dataclass(slots=True)
class _Chunk:
    rows: fmt_.ParsedRows
    splits: np.ndarray  # split code per row


def iter_task_rows(task: Task, config: PreprocessConfig, use_threads: bool, bad_rows: list) -> Iterator[_Chunk]:
    """Parsed rows of a task with their split, block by block.

    Bad lines raise :class:`DataFormatError` naming file, line and field, or (skip mode)
    are dropped and appended to ``bad_rows`` as ``"file:line: ..."`` strings.
    """
    stream = fmt_.open_text(task.path)
    try:
        if task.start:
            stream.seek(task.start)
        line_in_task = 0  # lines of this task before the current block
        data_lines = 0
        for offset, block in fmt_.iter_blocks(stream, config.block_bytes, task.path, limit=task.length):
            if task.start == 0 and offset == 0 and block.startswith(BOM):
                block, offset = block[len(BOM) :], len(BOM)
            if task.fmt.header and task.start == 0 and line_in_task == 0:
                cut = block.find(b"\n") + 1
                block, offset, line_in_task = block[cut:], offset + cut, 1
            if not block:
                continue
            chunk, lines = _parse_block(task, config, use_threads, bad_rows, block, offset, line_in_task)
            yield chunk
            line_in_task += lines
            data_lines += lines
        if task.start == 0 and data_lines == 0:
            raise DataFormatError(f"{task.path}: the file has no data rows; expected Criteo rows (label, I1..I13, C1..C26)")
    finally:
        stream.close()


def _parse_block(task, config, use_threads, bad_rows, block: bytes, offset: int, line_in_task: int) -> tuple[_Chunk, int]:
    """The rows of one block and the number of lines it held."""
    kept = None
    original = block
    scoring = task.rule.split == "score"
    options = dict(multi_hot=config.multi_hot, separator=config.multi_hot_separator, keep_label=not scoring, keep_id=scoring)
    try:
        rows = fmt_.parse_block(block, task.fmt, use_threads=use_threads, **options)
    except fmt_.BlockRejected as err:
        bad = fmt_.find_bad_lines(block, task.fmt, **options)
        first_line = _first_line(task) + line_in_task
        if not bad:
            last_line = first_line + block.count(b"\n") - 1
            raise DataFormatError(f"{task.path}:{first_line}-{last_line}: unreadable rows ({err})") from None
        messages = [_describe(task.path, first_line + b.index, b) for b in bad]
        if config.on_bad_rows == "error":
            raise DataFormatError(messages[0] + _hint()) from None
        bad_rows.extend(messages)
        if len(bad_rows) > config.max_bad_rows:
            raise DataFormatError(_too_many(bad_rows, config.max_bad_rows)) from None
        block, kept = fmt_.drop_lines(block, {b.index for b in bad})
        try:
            rows = fmt_.parse_block(block, task.fmt, use_threads=use_threads, **options)
        except fmt_.BlockRejected as err2:
            raise DataFormatError(f"{task.path}:{first_line}: rows unreadable after skipping bad ones ({err2})") from None
    lines = rows.num_rows if kept is None else original.count(b"\n")  # pyarrow keeps empty lines: 1 row a line
    line_index = np.arange(rows.num_rows, dtype=np.int64) if kept is None else kept
    if task.rule.seed is not None:
        newlines = np.flatnonzero(np.frombuffer(original, dtype=np.uint8) == 10)
        starts = np.r_[0, newlines[:-1] + 1][line_index]  # byte offset of each row's line in the block
        keys = task.start + offset + starts
        splits = task.rule.assign(np.zeros(0), keys, task.source)
    else:
        rows_in_file = (task.first_line or 1) - 1 + line_in_task + line_index - int(task.fmt.header)
        splits = task.rule.assign(rows_in_file, np.zeros(0), task.source)
        if scoring and rows.row_ids is None:  # no Id column: a row's id is its position in the file
            rows.row_ids = rows_in_file.astype(np.int64)
    return _Chunk(rows, splits), lines


def _first_line(task: Task) -> int:
    return task.first_line if task.first_line is not None else 1 + _count_newlines(task.path, 0, task.start)


def _describe(path: str, line: int, bad: fmt_.BadLine) -> str:
    where = f"field {bad.field}: " if bad.field else ""
    return f"{path}:{line}: {where}{bad.message}"


def _hint() -> str:
    return " (fix the file, or pass --on-bad-rows skip to drop and count bad rows)"


def _too_many(bad_rows: list[str], limit: int) -> str:
    shown = "\n  ".join(bad_rows[:5])
    return f"more than --max-bad-rows={limit} bad rows skipped ({len(bad_rows)} so far); first ones:\n  {shown}"


# ----------------------------------------------------------------------------- vocabularies


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
def _load_vocabularies(vocab_dir: str, features: tuple[str, ...]) -> dict[str, Vocabulary]:
    return {f: Vocabulary.load(os.path.join(vocab_dir, f"{f}.parquet")) for f in features}


# ----------------------------------------------------------------------------- conversion


def convert_task(task: Task, build: str, config: PreprocessConfig, id_dtype: str, use_threads: bool) -> TaskResult:
    """Parse ``task``, map ids and write its Parquet part per split (tmp, then rename).

    Paths in the result and in the task's progress marker are relative to ``build``.
    """
    vocab_features = tuple(f for f in SPARSE_FEATURES if config.strategy_of(f) == "vocab")
    vocabs = _load_vocabularies(os.path.join(build, VOCAB_DIR), vocab_features) if vocab_features else {}
    id_type = pa.int32() if id_dtype == "int32" else pa.int64()
    schema = parquet_schema(config.multi_hot, id_type, scoring=task.rule.split == "score")
    writers: dict[str, _PartWriter] = {}
    bad_rows: list[str] = []
    try:
        for chunk in iter_task_rows(task, config, use_threads, bad_rows):
            table = rows_to_table(chunk.rows, config, vocabs, schema, id_dtype)
            codes = np.unique(chunk.splits)
            for code in codes:
                split = SPLITS[code]
                part = table if len(codes) == 1 else table.filter(pa.array(chunk.splits == code))
                if split not in writers:
                    path = os.path.join(build, split, f"part-{task.index:05d}.parquet")
                    writers[split] = _PartWriter(path, schema, config)
                writers[split].write(part)
        files = {split: writer.close() for split, writer in writers.items()}
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    result = TaskResult(task.index, {s: SplitFile(path=os.path.relpath(p, build), rows=n) for s, (p, n) in files.items()},
                        len(bad_rows))  # fmt: skip
    write_json_atomic(os.path.join(build, PROGRESS_DIR, f"task-{task.index:05d}.json"),
                {"files": {s: asdict(f) for s, f in result.files.items()}, "bad_rows": len(bad_rows), "bad_examples": bad_rows[:20]})  # fmt: skip
    return result


def parquet_schema(multi_hot: bool, id_type: pa.DataType, *, scoring: bool = False) -> pa.Schema:
    """Columns of the output: label int8 (scoring data: ``id`` int64 instead), I* float32,
    C* ids (lists of ids when multi-hot)."""
    sparse_type = pa.list_(id_type) if multi_hot else id_type
    first = (ID, pa.int64()) if scoring else (LABEL, pa.int8())
    return pa.schema([first] + [(f, pa.float32()) for f in DENSE_FEATURES] + [(f, sparse_type) for f in SPARSE_FEATURES])


def rows_to_table(
    rows: fmt_.ParsedRows, config: PreprocessConfig, vocabs: dict[str, Vocabulary], schema: pa.Schema, id_dtype: str
) -> pa.Table:
    """Arrow table of parsed rows with ids mapped by each feature's strategy."""
    dense = np.ascontiguousarray(rows.dense.T)
    first = pa.array(rows.row_ids, pa.int64()) if schema.names[0] == ID else pa.array(rows.labels.astype(np.int8))
    columns = [first] + [pa.array(dense[j]) for j in range(len(DENSE_FEATURES))]
    for f, feature in enumerate(SPARSE_FEATURES):
        raw = rows.sparse[f]
        if feature in vocabs:
            ids = vocabs[feature].lookup(raw)
        else:
            ids = raw % np.uint64(config.hash_size)
        ids = ids.astype(id_dtype, copy=False)
        if rows.lengths is None:
            columns.append(pa.array(ids))
        else:
            offsets = np.zeros(len(rows.lengths[f]) + 1, dtype=np.int32)
            np.cumsum(rows.lengths[f], out=offsets[1:])
            columns.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids)))
    return pa.Table.from_arrays(columns, schema=schema)


class _PartWriter:
    """Writes one split's part of a task in row groups of exactly ``row_group_rows``."""

    def __init__(self, path: str, schema: pa.Schema, config: PreprocessConfig):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.path, self.tmp = path, path + ".tmp"
        self.group = config.row_group_rows
        compression = None if config.compression == "none" else config.compression
        self.writer = pq.ParquetWriter(self.tmp, schema, compression=compression, use_dictionary=False, write_statistics=False)
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.pending_rows += table.num_rows
        if self.pending_rows >= self.group:
            merged = pa.concat_tables(self.pending)
            whole = (merged.num_rows // self.group) * self.group
            self.writer.write_table(merged.slice(0, whole), row_group_size=self.group)
            self.rows += whole
            rest = merged.slice(whole)
            self.pending, self.pending_rows = ([rest] if rest.num_rows else []), rest.num_rows

    def close(self) -> tuple[str, int]:
        if self.pending_rows:
            self.writer.write_table(pa.concat_tables(self.pending), row_group_size=self.group)
            self.rows += self.pending_rows
        self.writer.close()
        os.replace(self.tmp, self.path)
        return self.path, self.rows

    def abort(self) -> None:
        try:
            self.writer.close()
        finally:
            if os.path.exists(self.tmp):
                os.remove(self.tmp)


# ----------------------------------------------------------------------------- the run


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
    build = _prepare_build(out_dir, _fingerprint(sources, tasks, config, split_policy))
    parallel = min(workers, len(tasks))
    start = time.perf_counter()
    with _executor(parallel) as pool:
        num_embeddings = {f: config.hash_size for f in SPARSE_FEATURES if f not in vocab_features}
        if vocab_features:
            num_embeddings.update(_build_vocabularies(build, tasks, config, vocab_features, pool, parallel, log))
        id_dtype = "int32" if max(num_embeddings.values()) <= _INT32_MAX else "int64"
        results = _run_conversion(build, tasks, config, id_dtype, pool, parallel, log)
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
    _publish(out_dir, build, meta, sources)
    log(f"preprocessed {sum(meta.split_rows.values())} rows {meta.split_rows} into {out_dir} in "
        f"{time.perf_counter() - start:.1f}s" + (f"; skipped {bad} bad rows" if bad else ""))  # fmt: skip
    return meta


class _InlineExecutor:
    """Runs submitted work in this process (one worker, or a single task)."""

    def submit(self, fn, *args):
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args))
        except BaseException as err:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(err)
        return future

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _executor(parallel: int):
    if parallel <= 1:
        return _InlineExecutor()
    return cf.ProcessPoolExecutor(max_workers=parallel, mp_context=multiprocessing.get_context("fork"))


def _abandon(futures: list[cf.Future], pool) -> None:
    """After a failure: cancel what has not started and wait for the workers to stop."""
    for f in futures:
        f.cancel()
    if isinstance(pool, cf.ProcessPoolExecutor):
        pool.shutdown(wait=True, cancel_futures=True)


def _gather(futures: list[cf.Future], pool) -> list:
    try:
        return [f.result() for f in futures]
    except BaseException:
        _abandon(futures, pool)
        raise


def _build_vocabularies(build, tasks, config, features, pool, parallel, log) -> dict[str, int]:
    vocab_dir = os.path.join(build, VOCAB_DIR)
    done = os.path.join(build, PROGRESS_DIR, "vocab.json")
    if os.path.exists(done):
        with open(done) as f:
            return json.load(f)["num_embeddings"]
    train_tasks = [t for t in tasks if t.rule.split in ("", "train")]
    futures = [pool.submit(count_task, t, config, features, parallel == 1) for t in train_tasks]
    per_task = _gather(futures, pool)
    os.makedirs(vocab_dir, exist_ok=True)
    sizes = {}
    for k, feature in enumerate(features):
        vocab = Vocabulary.build(Counts.merge([counts[k] for counts in per_task]), config.min_frequency)
        vocab.save(os.path.join(vocab_dir, f"{feature}.parquet"))
        sizes[feature] = vocab.num_embeddings
    write_json_atomic(done, {"num_embeddings": sizes})
    log(f"built vocabularies of {len(features)} features (min_frequency={config.min_frequency})")
    return sizes


def _run_conversion(build, tasks, config, id_dtype, pool, parallel, log) -> list[TaskResult]:
    results: dict[int, TaskResult] = {}
    todo = []
    for task in tasks:
        marker = os.path.join(build, PROGRESS_DIR, f"task-{task.index:05d}.json")
        previous = _read_done(marker, build)
        if previous is not None:
            results[task.index] = TaskResult(task.index, previous[0], previous[1])
        else:
            todo.append(task)
    if results:
        log(f"resuming: {len(results)} of {len(tasks)} tasks already done")
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
        _abandon(futures, pool)
        raise
    return [results[t.index] for t in tasks]


def _read_done(marker: str, build: str) -> tuple[dict[str, SplitFile], int] | None:
    if not os.path.exists(marker):
        return None
    try:
        with open(marker) as f:
            raw = json.load(f)
        files = {s: SplitFile(**entry) for s, entry in raw["files"].items()}
    except (json.JSONDecodeError, KeyError, TypeError):
        return None
    if not all(os.path.exists(os.path.join(build, f.path)) for f in files.values()):
        return None
    return files, int(raw["bad_rows"])


def _fingerprint(sources: list[Source], tasks: list[Task], config: PreprocessConfig, policy: str) -> str:
    relevant = replace(config, workers=0, max_bad_rows=0)
    state = {
        "sources": [(s.path, os.path.getsize(s.path), os.stat(s.path).st_mtime_ns, repr(s.rule)) for s in sources],
        "tasks": [(t.path, t.start, t.length) for t in tasks],
        "config": repr(relevant),
        "policy": policy,
    }
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()


# ----------------------------------------------------------------------------- the build and the swap
#
# OUT/metadata.json names the files of the complete dataset, all inside one build directory
# OUT/build-<fingerprint>/ (or, for a dataset written before build directories existed, in
# OUT/train, OUT/valid, ...). A run builds in its own directory and publishes by replacing
# metadata.json: one atomic rename, so a reader sees the old dataset or the new one. The
# entries of the superseded dataset are listed in the new build's _progress/superseded.json
# before the rename and deleted after it; a run killed in between finishes the deletion the
# next time (_finish_swap). truth.json is replaced after the rename (a kill in between leaves
# the new data with the old truth.json until the next run with these inputs).


def _live_entries(out_dir: str) -> set[str]:
    """Top-level entries of ``out_dir`` that its complete dataset uses (none if there is none)."""
    try:
        meta = load_metadata(out_dir)
    except (FileNotFoundError, ValueError):
        return set()
    paths = [f.path for entries in meta.files.values() for f in entries] + [meta.vocab_dir]
    live = {p.replace(os.sep, "/").split("/")[0] for p in paths if p}
    live = {name for name in live if name.startswith(BUILD_PREFIX) or name in _LEGACY_ENTRIES}  # only what we write
    if not any(name.startswith(BUILD_PREFIX) for name in live):
        live |= {name for name in _LEGACY_ENTRIES if os.path.exists(os.path.join(out_dir, name))}
    return live


def _finish_swap(out_dir: str, live: set[str]) -> None:
    """Delete what the published build superseded (a no-op once done)."""
    for name in sorted(live):
        record = os.path.join(out_dir, name, PROGRESS_DIR, "superseded.json")
        if not os.path.exists(record):
            continue
        with open(record) as f:
            superseded = json.load(f)
        for entry in superseded:
            if entry not in live and os.path.isdir(os.path.join(out_dir, entry)):
                shutil.rmtree(os.path.join(out_dir, entry))
        os.remove(record)


def _prepare_build(out_dir: str, fingerprint: str) -> str:
    """The build directory of this fingerprint, ready to (re)start work; the live dataset is untouched.

    Deletes abandoned builds (other fingerprints, not live) and half-written files of this
    build; keeps this build's finished tasks and vocabularies (resume).
    """
    build = os.path.join(out_dir, BUILD_PREFIX + fingerprint[:12])
    live = _live_entries(out_dir)
    _finish_swap(out_dir, live)
    for name in os.listdir(out_dir):
        path = os.path.join(out_dir, name)
        if name.startswith(BUILD_PREFIX) and name not in live and path != build:
            shutil.rmtree(path)
        elif name.startswith(".") and ".tmp-" in name:  # utils.fs temporaries of metadata.json / truth.json
            os.remove(path)
    for pattern in ("*.tmp", ".*.tmp-*"):  # this module's part files, and utils.fs's temporaries
        for tmp in glob.glob(os.path.join(glob.escape(build), "**", pattern), recursive=True):
            os.remove(tmp)
    plan = os.path.join(build, PROGRESS_DIR, "plan.json")
    same = False
    if os.path.exists(plan):
        with open(plan) as f:
            try:
                same = json.load(f).get("fingerprint") == fingerprint
            except json.JSONDecodeError:
                same = False
    if not same:
        shutil.rmtree(build, ignore_errors=True)
        os.makedirs(os.path.join(build, PROGRESS_DIR))
        write_json_atomic(plan, {"fingerprint": fingerprint})
    return build


def _publish(out_dir: str, build: str, meta: DatasetMetadata, sources: list[Source]) -> None:
    """Make the finished ``build`` the dataset of ``out_dir`` (one rename), then drop the old one."""
    name = os.path.basename(build)
    superseded = sorted(_live_entries(out_dir) - {name})
    write_json_atomic(os.path.join(build, PROGRESS_DIR, "superseded.json"), superseded)
    save_metadata(out_dir, meta)  # the swap
    _copy_truth(sources, out_dir)
    _finish_swap(out_dir, {name})


def _copy_truth(sources: list[Source], out_dir: str) -> None:
    """Copy the generator's truth.json beside the inputs, or remove a previous dataset's."""
    for directory in dict.fromkeys(os.path.dirname(s.path) for s in sources):
        truth = os.path.join(directory, TRUTH_FILE)
        if os.path.isfile(truth):
            with atomic_path(os.path.join(out_dir, TRUTH_FILE)) as tmp:
                shutil.copyfile(truth, tmp)
            return
    if os.path.exists(os.path.join(out_dir, TRUTH_FILE)):
        os.remove(os.path.join(out_dir, TRUTH_FILE))
