"""Readers of raw feed impressions: Parquet with list columns, and JSON Lines (schema: :mod:`.schema`).

:func:`read_feed_file` returns a ``pyarrow.Table`` with exactly the columns and types of
:data:`~torchrec_app.data.feed.schema.RAW_SCHEMA`, in file order. Parsing is pyarrow's
(``pyarrow.parquet``, ``pyarrow.json``); the values are then checked vectorised (ids >= 0,
labels 0 or 1, finite dense values, price >= 0, hour in [0, 24], no null inside a list).
A bad row raises :class:`~torchrec_app.data.criteo_format.DataFormatError` naming the
**file, the line (JSON Lines) or row (Parquet, 1-based), the field and what was expected**;
with ``on_bad_rows="skip"`` bad rows are dropped and counted (the read still fails past
``max_bad_rows``). Extra columns are ignored; a missing column is an error naming it. A
null list (or a missing list key in JSON) means an empty list; a null scalar is bad.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from torchrec_app.data.criteo_format import DataFormatError
from torchrec_app.data.feed.schema import DENSE_FEATURES, LABEL_COLUMNS, RAW_SCHEMA

_LIST_COLUMNS = tuple(f.name for f in RAW_SCHEMA if pa.types.is_list(f.type))
_ID_COLUMNS = tuple(f.name for f in RAW_SCHEMA if f.type == pa.int64() and f.name not in LABEL_COLUMNS)


@dataclass(slots=True)
class FeedRead:
    """One file's rows (``RAW_SCHEMA``), how many bad rows were skipped, and the format read."""

    table: pa.Table
    bad_rows: int
    format: str


def detect_feed_format(path: str) -> str:
    """``parquet`` or ``jsonl`` from the file name.

    >>> detect_feed_format("a/train.parquet"), detect_feed_format("train.jsonl.gz")
    ('parquet', 'jsonl')
    """
    name = os.path.basename(path).lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if any(name.endswith(ext) for ext in (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz")):
        return "jsonl"
    raise DataFormatError(f"{path}: cannot tell the feed format from the name; expected .parquet or .jsonl "
                          "(or set feed_preprocess.format=parquet|jsonl)")  # fmt: skip


def read_feed_file(path: str, fmt: str = "auto", on_bad_rows: str = "error", max_bad_rows: int = 1000) -> FeedRead:
    """Read and check one raw file (see the module docstring).

    Raises:
        DataFormatError: a missing column, a row that is not valid (file, line/row, field,
            expected), or more than ``max_bad_rows`` bad rows when skipping.
    """
    fmt = detect_feed_format(path) if fmt == "auto" else fmt
    if fmt == "parquet":
        table, unparsed, lines = _read_parquet(path), 0, None
    else:
        table, unparsed, lines = _read_jsonl(path, on_bad_rows, max_bad_rows)
    table = _empty_for_null_lists(table)
    bad, reasons = _bad_rows(table)
    first = int(np.argmax(bad)) if bad.any() else -1
    if first >= 0 and on_bad_rows == "error":
        raise DataFormatError(
            f"{_where(path, fmt, first, lines)}: {reasons[first]} (use feed_preprocess.on_bad_rows=skip to drop bad rows)"
        )
    skipped = int(bad.sum()) + unparsed
    if skipped > max_bad_rows:
        raise DataFormatError(f"{path}: {skipped} bad rows, more than feed_preprocess.max_bad_rows={max_bad_rows}; "
                              f"the first: {_where(path, fmt, first, lines)}: {reasons[first]}")  # fmt: skip
    if skipped:
        table = table.filter(pa.array(~bad))
    return FeedRead(table=table, bad_rows=skipped, format=fmt)


def _empty_for_null_lists(table: pa.Table) -> pa.Table:
    """A null list (or a missing list key in JSON) is an empty list."""
    for name in _LIST_COLUMNS:
        column = table.column(name)
        if column.null_count:
            empty = pa.scalar([], column.type)
            table = table.set_column(table.schema.get_field_index(name), name, pc.fill_null(column, empty))
    return table


def _read_parquet(path: str) -> pa.Table:
    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataFormatError(f"{path}: not a readable Parquet file ({err})") from None
    names = set(file.schema_arrow.names)
    missing = [name for name in RAW_SCHEMA.names if name not in names]
    if missing:
        raise DataFormatError(f"{path}: missing column(s) {missing}; a feed file has {list(RAW_SCHEMA.names)} (docs/DATA.md)")
    table = file.read(columns=list(RAW_SCHEMA.names))
    columns = []
    for field in RAW_SCHEMA:
        column = table.column(field.name)
        try:
            columns.append(column.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise DataFormatError(f"{path}: column {field.name!r} has type {column.type}, expected {field.type} ({err})") from None
    return pa.Table.from_arrays(columns, schema=RAW_SCHEMA)


def _read_jsonl(path: str, on_bad_rows: str, max_bad_rows: int) -> tuple[pa.Table, int, np.ndarray | None]:
    """pyarrow's reader; when it rejects the file, a line-by-line scan names the first bad line (or drops bad lines).

    Returns the rows, the lines dropped, and the line number of each row when lines were dropped."""
    options = pajson.ParseOptions(explicit_schema=RAW_SCHEMA, unexpected_field_behavior="ignore")
    try:
        table = pajson.read_json(path, parse_options=options)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return _scan_jsonl(path, on_bad_rows, max_bad_rows)
    return table.select(list(RAW_SCHEMA.names)), 0, None


def _scan_jsonl(path: str, on_bad_rows: str, max_bad_rows: int) -> tuple[pa.Table, int, np.ndarray]:
    """The lines the schema accepts, how many were dropped, and the line number of each row kept."""
    rows, numbers, skipped = [], [], 0
    opener = _open_text(path)
    with opener as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            problem, row = _check_json_line(line)
            if problem is None:
                rows.append(row)
                numbers.append(number)
                continue
            if on_bad_rows == "error":
                raise DataFormatError(f"{path}:{number}: {problem} (use feed_preprocess.on_bad_rows=skip to drop bad rows)")
            skipped += 1
            if skipped > max_bad_rows:
                raise DataFormatError(f"{path}: more than feed_preprocess.max_bad_rows={max_bad_rows} bad lines; "
                                      f"e.g. line {number}: {problem}")  # fmt: skip
    return pa.Table.from_pylist(rows, schema=RAW_SCHEMA), skipped, np.asarray(numbers, dtype=np.int64)


def _open_text(path: str):
    if path.endswith(".gz"):
        import gzip

        return gzip.open(path, "rt")
    return open(path)


def _check_json_line(line: str) -> tuple[str | None, dict | None]:
    """``(problem, None)`` for a line the schema rejects, else ``(None, row)``."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        return f"not valid JSON ({err.msg} at column {err.colno})", None
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}", None
    for field in RAW_SCHEMA:
        value = row.get(field.name)
        if pa.types.is_list(field.type):
            if value is None:
                row[field.name] = []
            elif not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                return f"field {field.name!r}: expected a list of integer ids, got {json.dumps(value)[:60]}", None
        elif field.name not in row:
            return f"field {field.name!r} is missing", None
        elif field.type == pa.float64():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                return f"field {field.name!r}: expected a number, got {json.dumps(value)[:60]}", None
        elif not isinstance(value, int) or isinstance(value, bool):
            return f"field {field.name!r}: expected an integer, got {json.dumps(value)[:60]}", None
    return None, row


def _bad_rows(table: pa.Table) -> tuple[np.ndarray, list[str]]:
    """Mask of rows failing a value check, and the first failing check's message of each row (by row index)."""
    n = table.num_rows
    reason = np.full(n, -1, dtype=np.int32)
    messages: list[str] = []

    def flag(mask: np.ndarray, message: str) -> None:
        reason[mask & (reason < 0)] = len(messages)
        messages.append(message)

    for name in _ID_COLUMNS:
        column = table.column(name)
        flag(pc.is_null(column).to_numpy(zero_copy_only=False), f"field {name!r} is missing or null, expected an integer id >= 0")
        flag(pc.fill_null(pc.less(column, 0), False).to_numpy(zero_copy_only=False), f"field {name!r}: expected an id >= 0")
    for name in LABEL_COLUMNS:
        column = table.column(name)
        ok = pc.fill_null(pc.is_in(column, value_set=pa.array([0, 1], pa.int64())), False).to_numpy(zero_copy_only=False)
        flag(~ok, f"field {name!r}: expected a label 0 or 1")
    for name in DENSE_FEATURES:
        values = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)  # nulls -> NaN
        flag(~np.isfinite(values), f"field {name!r}: expected a finite number")
        if name == "price":
            flag(values < 0, "field 'price': expected a price >= 0")
        if name == "hour":
            flag((values < 0) | (values > 24), "field 'hour': expected an hour of day in [0, 24]")
        if name == "position":
            flag(values < 0, "field 'position': expected a feed slot >= 0")
    for name in _LIST_COLUMNS:
        column = table.column(name).combine_chunks() if n else table.column(name)
        if not n:
            continue
        flat = pc.list_flatten(column)
        if flat.null_count or (len(flat) and pc.min(flat).as_py() < 0):
            parents = pc.list_parent_indices(column).to_numpy()
            values = flat.to_numpy(zero_copy_only=False).astype(np.float64)
            rows = np.zeros(n, dtype=bool)
            rows[parents[np.isnan(values) | (values < 0)]] = True
            flag(rows, f"field {name!r}: expected a list of ids >= 0 (no nulls)")
    bad = reason >= 0
    return bad, [messages[r] if r >= 0 else "" for r in reason[: int(np.argmax(bad)) + 1]] if bad.any() else []


def _where(path: str, fmt: str, row: int, lines: np.ndarray | None) -> str:
    """``file:line`` of row ``row`` (0-based) of a JSON Lines file, or ``file: row N`` of a Parquet file."""
    if fmt == "parquet":
        return f"{path}: row {row + 1}"
    if lines is not None:
        return f"{path}:{int(lines[row])}"
    seen = -1
    with _open_text(path) as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                seen += 1
                if seen == row:
                    return f"{path}:{number}"
    return f"{path}: record {row + 1}"
