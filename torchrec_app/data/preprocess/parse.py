"""Parsing one task: its rows block by block, each with its split, under the bad-row policy.

Blocks of whole lines go through the fast path of :func:`criteo_format.parse_block`; a
rejected block is checked line by line (:func:`criteo_format.find_bad_lines`) to name the
first bad row (``--on-bad-rows error``) or drop and record the bad ones (``skip``). A
row's split comes from its position in the file (row-order policies, scoring ids) or its
byte offset (the random policy), so skipping a row never moves another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Iterator

import numpy as np

from torchrec_app.config.data import PreprocessConfig
from torchrec_app.data import criteo_format as fmt_
from torchrec_app.data.criteo_format import BOM, DataFormatError
from torchrec_app.data.preprocess.plan import Task, count_newlines


@dataclass(slots=True)
class Chunk:
    rows: fmt_.ParsedRows
    splits: np.ndarray  # split code per row


def iter_task_rows(task: Task, config: PreprocessConfig, use_threads: bool, bad_rows: list,
                   encode_ids: Collection[str] = ()) -> Iterator[Chunk]:  # fmt: skip
    """Parsed rows of a task with their split, block by block; the features in ``encode_ids``
    as :class:`~torchrec_app.data.criteo_format.EncodedIds`.

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
            chunk, lines = _parse_block(task, config, use_threads, bad_rows, block, offset, line_in_task, encode_ids)
            yield chunk
            line_in_task += lines
            data_lines += lines
        if task.start == 0 and data_lines == 0:
            raise DataFormatError(f"{task.path}: the file has no data rows; expected Criteo rows (label, I1..I13, C1..C26)")
    finally:
        stream.close()


def _parse_block(task, config, use_threads, bad_rows, block: bytes, offset: int, line_in_task: int, encode_ids) -> tuple[Chunk, int]:
    """The rows of one block and the number of lines it held."""
    kept = None
    original = block
    scoring = task.rule.split == "score"
    options = dict(multi_hot=config.multi_hot, separator=config.multi_hot_separator, keep_label=not scoring, keep_id=scoring)
    try:
        rows = fmt_.parse_block(block, task.fmt, use_threads=use_threads, encode_ids=encode_ids, **options)
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
            rows = fmt_.parse_block(block, task.fmt, use_threads=use_threads, encode_ids=encode_ids, **options)
        except fmt_.BlockRejected as err2:
            raise DataFormatError(f"{task.path}:{first_line}: rows unreadable after skipping bad ones ({err2})") from None
    lines = rows.num_rows if kept is None else original.count(b"\n")  # the fast path accepts a block only if each line is a row
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
    return Chunk(rows, splits), lines


def _first_line(task: Task) -> int:
    return task.first_line if task.first_line is not None else 1 + count_newlines(task.path, 0, task.start)


def _describe(path: str, line: int, bad: fmt_.BadLine) -> str:
    where = f"field {bad.field}: " if bad.field else ""
    return f"{path}:{line}: {where}{bad.message}"


def _hint() -> str:
    return " (fix the file, or pass --on-bad-rows skip to drop and count bad rows)"


def _too_many(bad_rows: list[str], limit: int) -> str:
    shown = "\n  ".join(bad_rows[:5])
    return f"more than --max-bad-rows={limit} bad rows skipped ({len(bad_rows)} so far); first ones:\n  {shown}"
