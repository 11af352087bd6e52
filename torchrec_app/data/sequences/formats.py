"""Readers of user-item interaction files: MovieLens as distributed, and a generic layout.

==========  =====================  =========================================  =============
format      file                   a line                                     side file
==========  =====================  =========================================  =============
ml-100k     ``u.data`` (tab)       ``196<TAB>242<TAB>3<TAB>881250949``        ``u.item`` (``|``)
ml-1m       ``ratings.dat``        ``1::1193::5::978300760``                  ``movies.dat``
ml-csv      ``ratings.csv``        header ``userId,movieId,rating,timestamp``  ``movies.csv``
            (20M, 25M, 32M, latest)
interactions  CSV or Parquet       header with ``user,item,timestamp[,rating]``  --
==========  =====================  =========================================  =============

:func:`read_interactions` returns a ``pyarrow.Table`` with columns ``user``, ``item`` (the
raw ids, int64 for MovieLens), ``timestamp`` (int64 seconds) and ``rating`` (float32, null
when the file has none), in file order. Parsing is pyarrow's (``pyarrow.csv``, tens of
millions of lines per minute); only when pyarrow rejects the file, or a value fails a
vectorised check, is the file scanned line by line to name the **file, line and field**
(:class:`DataFormatError`). With ``on_bad_rows="skip"`` the bad lines are dropped and
counted instead (and the read still fails past ``max_bad_rows``).

:func:`read_items` reads the movies file: ``item``, ``title`` (without the year),
``year`` (int32, 0 = unknown) and ``genres`` (list of names). The year comes from the
title's trailing ``(YYYY)``; the repair the files need: trailing blanks and quotes
(``"Hyena Road (2015) "``), ranges (``(2007-2013)``, ``(2007- )``), a year followed by
another parenthesis (``(2004) (TV)``), and, for ml-100k, the release date when the title
has none; titles with no year anywhere get 0. ``(no genres listed)`` and ml-100k's
``unknown`` flag mean no genres.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from torchrec_app.data.criteo_format import DataFormatError

INTERACTION_COLUMNS = ("user", "item", "timestamp", "rating")
#: ml-100k's genre flags of ``u.item``, in column order.
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
NO_GENRES = ("(no genres listed)", "unknown", "")
RATINGS_FILES = {"u.data": "ml-100k", "ratings.dat": "ml-1m", "ratings.csv": "ml-csv"}
ITEMS_FILES = {"ml-100k": "u.item", "ml-1m": "movies.dat", "ml-csv": "movies.csv"}


@dataclass(frozen=True, slots=True)
class _Layout:
    """How one ratings format is written: pyarrow's view of it and the per-field checks."""

    delimiter: str
    header: tuple[str, ...] | None  # expected header names as written, None: no header
    columns: tuple[str, ...]  # pyarrow column names, "" for the empty pieces between "::"
    fields: tuple[tuple[str, str], ...]  # (our name, kind) of each non-empty column: int | float


_LAYOUTS = {
    "ml-100k": _Layout("\t", None, ("user", "item", "rating", "timestamp"),
                       (("user", "int"), ("item", "int"), ("rating", "float"), ("timestamp", "int"))),
    # "1::1193::5::978300760" read with ':' as the delimiter: the pieces between the two colons are empty
    "ml-1m": _Layout(":", None, ("user", "_1", "item", "_2", "rating", "_3", "timestamp"),
                     (("user", "int"), ("item", "int"), ("rating", "float"), ("timestamp", "int"))),
    "ml-csv": _Layout(",", ("userId", "movieId", "rating", "timestamp"), ("user", "item", "rating", "timestamp"),
                      (("user", "int"), ("item", "int"), ("rating", "float"), ("timestamp", "int"))),
}  # fmt: skip
_FIELD_LABELS = {"ml-csv": {"user": "userId", "item": "movieId"}}


def detect_format(path: str) -> str:
    """The ratings format of ``path`` from its name (``u.data``, ``ratings.dat``, ``ratings.csv``; else interactions).

    >>> detect_format("data/external/ml-1m/ratings.dat"), detect_format("x/u.data"), detect_format("clicks.parquet")
    ('ml-1m', 'ml-100k', 'interactions')
    """
    return RATINGS_FILES.get(os.path.basename(path), "interactions")


def items_path_for(ratings_path: str, fmt: str) -> str | None:
    """The movies file distributed beside a MovieLens ratings file, if it is there."""
    name = ITEMS_FILES.get(fmt)
    path = os.path.join(os.path.dirname(ratings_path), name) if name else None
    return path if path and os.path.isfile(path) else None


# ------------------------------------------------------------------ ratings / interactions


@dataclass(slots=True)
class ReadResult:
    """Interactions read from one file, and how many bad lines were skipped."""

    table: pa.Table
    bad_rows: int = 0


def read_interactions(path: str, fmt: str = "auto", on_bad_rows: str = "error", max_bad_rows: int = 1000) -> ReadResult:
    """Read a ratings / interactions file (see the module docstring for the formats).

    Raises:
        DataFormatError: missing or empty file, or a bad line (``file:line: field F: ...``),
            or more than ``max_bad_rows`` bad lines when skipping.
    """
    fmt = detect_format(path) if fmt == "auto" else fmt
    if not os.path.isfile(path):
        raise DataFormatError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise DataFormatError(f"{path}: the file is empty; expected {_expected(fmt)}")
    if fmt == "interactions":
        return _read_generic(path, on_bad_rows, max_bad_rows)
    return _read_layout(path, fmt, _LAYOUTS[fmt], on_bad_rows, max_bad_rows)


def _expected(fmt: str) -> str:
    return {
        "ml-100k": "tab-separated lines 'user item rating timestamp' (MovieLens 100K u.data)",
        "ml-1m": "lines 'user::item::rating::timestamp' (MovieLens 1M ratings.dat)",
        "ml-csv": "a header 'userId,movieId,rating,timestamp' and comma-separated lines (MovieLens ratings.csv)",
        "interactions": "a header naming user, item, timestamp and optionally rating (CSV), or a Parquet file with those columns",
    }[fmt]


def _read_layout(path: str, fmt: str, layout: _Layout, on_bad_rows: str, max_bad_rows: int) -> ReadResult:
    with open(path, "rb") as f:
        data = f.read()
    header_lines = 0
    if layout.header is not None:
        first = data.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")
        names = tuple(name.strip().lower() for name in first.split(layout.delimiter))
        if names != tuple(n.lower() for n in layout.header):
            raise DataFormatError(f"{path}:1: header {first!r}; expected {layout.delimiter.join(layout.header)}")
        header_lines = 1
        data = data.split(b"\n", 1)[1] if b"\n" in data else b""
    if not data.strip():
        raise DataFormatError(f"{path}: the file has no rows; expected {_expected(fmt)}")
    error = None
    try:
        table = _parse(data, layout)
        clean = not len(_invalid_rows(table, layout))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        clean, error = False, err
    bad_count = 0
    if not clean:
        bad_lines = _scan_lines(data, layout)
        if not bad_lines:  # pyarrow rejected what the line scan accepts: say what pyarrow said
            raise DataFormatError(f"{path}: cannot parse ({error}); expected {_expected(fmt)}")
        first_line, field, problem = bad_lines[0]
        if on_bad_rows == "error" or len(bad_lines) > max_bad_rows:
            more = f" ({len(bad_lines)} bad lines, more than max_bad_rows={max_bad_rows})" if on_bad_rows == "skip" else ""
            what = "" if field == "line" else f"field {_label(fmt, field)}: "
            raise DataFormatError(f"{path}:{first_line + header_lines}: {what}{problem}{more}; expected {_expected(fmt)}")
        table = _parse(_drop_lines(data, {line for line, _, _ in bad_lines}), layout)
        bad_count = len(bad_lines)
    columns = {name: table.column(name) for name, _ in layout.fields}
    out = pa.table({
        "user": columns["user"], "item": columns["item"], "timestamp": columns["timestamp"],
        "rating": pc.cast(columns["rating"], pa.float32()),
    })
    return ReadResult(out, bad_count)


def _label(fmt: str, field: str) -> str:
    return _FIELD_LABELS.get(fmt, {}).get(field, field)


def _parse(data: bytes, layout: _Layout) -> pa.Table:
    types = {name: pa.int64() if kind == "int" else pa.float64() for name, kind in layout.fields}
    types.update({name: pa.string() for name in layout.columns if name.startswith("_")})
    return pacsv.read_csv(
        pa.BufferReader(data),
        read_options=pacsv.ReadOptions(column_names=list(layout.columns), block_size=1 << 24),
        parse_options=pacsv.ParseOptions(delimiter=layout.delimiter, quote_char=False, ignore_empty_lines=False),
        convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=False, quoted_strings_can_be_null=False),
    )


def _invalid_rows(table: pa.Table, layout: _Layout) -> np.ndarray:
    """Rows (0-based) that parsed but hold an impossible value (vectorised)."""
    bad = np.zeros(table.num_rows, dtype=bool)
    for name, kind in layout.fields:
        values = table.column(name)
        bad |= np.asarray(values.is_null().to_numpy(zero_copy_only=False))
        numbers = values.to_numpy(zero_copy_only=False)
        if name == "rating":
            bad |= ~np.isfinite(numbers) | (numbers < 0)
        elif name == "timestamp":
            bad |= numbers < 0
    for name in layout.columns:
        if name.startswith("_"):
            bad |= np.asarray(pc.not_equal(table.column(name), "").to_numpy(zero_copy_only=False))
    return np.flatnonzero(bad)


def _check_fields(text: str, layout: _Layout) -> tuple[str, str] | None:
    """The first problem of one line: (field, message), or None."""
    if layout.delimiter == ":":  # ml-1m: '::' separates the fields
        parts = text.split("::")
        if len(parts) != 4:
            if "::" not in text and text.count(":") >= 3:
                return "line", "fields must be separated by '::'"
            return "line", f"{len(parts)} '::'-separated fields, expected 4"
        fields = [parts[0], "", parts[1], "", parts[2], "", parts[3]]
    else:
        fields = text.split(layout.delimiter)
    if len(fields) != len(layout.columns):
        return "line", f"{len(fields)} fields, expected {len(layout.columns)}"
    values = dict(zip(layout.columns, fields))
    for name, kind in layout.fields:
        text = values[name].strip()
        try:
            value = int(text) if kind == "int" else float(text)
        except ValueError:
            return name, f"{values[name]!r} is not {'an integer' if kind == 'int' else 'a number'}"
        if name == "rating" and not (value >= 0 and np.isfinite(value)):
            return name, f"rating {values[name]!r} must be a number >= 0"
        if name == "timestamp" and value < 0:
            return name, f"timestamp {value} must be >= 0 (Unix seconds)"
    return None


def _scan_lines(data: bytes, layout: _Layout) -> list[tuple[int, str, str]]:
    """(1-based line of ``data``, field, problem) of every bad line, the slow obvious way."""
    bad = []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        try:
            text = raw.rstrip(b"\r").decode("utf-8")
        except UnicodeDecodeError:
            bad.append((number, "line", "not UTF-8 text"))
            continue
        problem = _check_fields(text, layout)
        if problem:
            bad.append((number, *problem))
    return bad


def _drop_lines(data: bytes, numbers: set[int]) -> bytes:
    lines = data.split(b"\n")
    return b"\n".join(line for i, line in enumerate(lines, start=1) if i not in numbers)


def _read_generic(path: str, on_bad_rows: str, max_bad_rows: int) -> ReadResult:
    """``user,item,timestamp[,rating]`` with a header (CSV, any column order) or a Parquet file."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"PAR1":
        table = pq.read_table(path)
        where = "row"
    else:
        try:
            table = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(ignore_empty_lines=False))
        except pa.ArrowInvalid as err:
            raise DataFormatError(f"{path}: not a CSV file with a header ({err}); expected {_expected('interactions')}") from None
        where = "line"
    missing = [c for c in ("user", "item", "timestamp") if c not in table.column_names]
    if missing:
        raise DataFormatError(f"{path}: no column(s) {missing} (columns: {table.column_names}); expected {_expected('interactions')}")
    offset = 2 if where == "line" else 0  # CSV: header is line 1; Parquet: 0-based row index
    columns: dict[str, pa.ChunkedArray] = {}
    bad = np.zeros(table.num_rows, dtype=bool)
    problems: dict[int, tuple[str, str]] = {}
    for name in ("user", "item", "timestamp", "rating"):
        if name not in table.column_names:
            columns[name] = pa.chunked_array([pa.nulls(table.num_rows, pa.float32())])
            continue
        column = table.column(name)
        if name in ("user", "item") and not (pa.types.is_integer(column.type) or pa.types.is_string(column.type)):
            column = pc.cast(column, pa.string())
        if name == "timestamp":
            column, rows = _cast_rows(column, pa.int64())
        elif name == "rating":
            column, rows = _cast_rows(column, pa.float32())
        else:
            rows = np.zeros(table.num_rows, dtype=bool)
        rows |= np.asarray(column.is_null().to_numpy(zero_copy_only=False))
        if name == "timestamp":
            rows |= np.asarray(pc.fill_null(pc.less(column, 0), False).to_numpy(zero_copy_only=False))
        for index in np.flatnonzero(rows & ~bad)[:1]:
            problems[int(index)] = (name, f"{table.column(name)[int(index)].as_py()!r} is missing or invalid")
        bad |= rows
        columns[name] = column
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        field, problem = problems.get(index, ("line", "invalid"))
        count = int(bad.sum())
        if on_bad_rows == "error" or count > max_bad_rows:
            place = f"{path}: row {index}" if where == "row" else f"{path}:{index + offset}"
            raise DataFormatError(f"{place}: field {field}: {problem}; expected {_expected('interactions')}")
        keep = pa.array(~bad)
        columns = {name: column.filter(keep) for name, column in columns.items()}
    else:
        count = 0
    return ReadResult(pa.table({name: columns[name] for name in INTERACTION_COLUMNS}), count)


def _cast_rows(column: pa.ChunkedArray, to: pa.DataType) -> tuple[pa.ChunkedArray, np.ndarray]:
    """``column`` cast to ``to`` value by value (failures become null), and which rows failed."""
    if column.type == to:
        return column, np.zeros(len(column), dtype=bool)
    try:
        return pc.cast(column, to), np.zeros(len(column), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = []
        for value in column.to_pylist():
            try:
                values.append(None if value is None else (int(value) if pa.types.is_integer(to) else float(value)))
            except (TypeError, ValueError):
                values.append(None)
        out = pa.chunked_array([pa.array(values, to)])
        failed = np.array([v is None for v in values]) & ~np.asarray(column.is_null().to_numpy(zero_copy_only=False))
        return out, failed


# ------------------------------------------------------------------ movies (side information)

_YEAR_AT_END = re.compile(r"\((\d{4})(?:\s*[-–]\s*(?:\d{4})?\s*)?\)\s*$")
_YEAR_ANYWHERE = re.compile(r"\((\d{4})(?:\s*[-–]\s*(?:\d{4})?\s*)?\)")


def title_and_year(title: str, fallback_year: int = 0) -> tuple[str, int]:
    """The title without its year, and the year (``fallback_year`` when the title has none).

    >>> title_and_year("Toy Story (1995)")
    ('Toy Story', 1995)
    >>> title_and_year('Hyena Road (2015) "'), title_and_year("Fawlty Towers (1975-1979)")
    (('Hyena Road', 2015), ('Fawlty Towers', 1975))
    >>> title_and_year("Deadly Dollars (2004) (TV)"), title_and_year("Babylon 5"), title_and_year("Babylon 5", 1994)
    (('Deadly Dollars (TV)', 2004), ('Babylon 5', 0), ('Babylon 5', 1994))
    """
    clean = title.strip().strip('"').strip()
    match = _YEAR_AT_END.search(clean) or None
    if match is None:
        matches = list(_YEAR_ANYWHERE.finditer(clean))
        match = matches[-1] if matches else None
    if match is None:
        return clean, fallback_year
    year = int(match.group(1))
    rest = (clean[: match.start()] + clean[match.end():]).strip()
    return " ".join(rest.split()), year if 1870 <= year <= 2100 else fallback_year


def read_items(path: str, fmt: str) -> pa.Table:
    """The movies file of a MovieLens format as ``item, title, year, genres`` (see the module docstring).

    Raises:
        DataFormatError: a line with the wrong number of fields or a non-integer id (file and line).
    """
    if not os.path.isfile(path):
        raise DataFormatError(f"{path}: no such file")
    rows: list[tuple[int, str, int, list[str]]] = []
    if fmt == "ml-100k":
        lines = _text_lines(path, "latin-1")
        for number, line in lines:
            fields = line.split("|")
            if len(fields) != 5 + len(ML100K_GENRES):
                raise DataFormatError(f"{path}:{number}: {len(fields)} '|'-separated fields, expected {5 + len(ML100K_GENRES)} (MovieLens 100K u.item)")
            release = re.search(r"(\d{4})\s*$", fields[2])
            title, year = title_and_year(fields[1], int(release.group(1)) if release else 0)
            genres = [g for g, flag in zip(ML100K_GENRES, fields[5:]) if flag.strip() == "1" and g not in NO_GENRES]
            rows.append((_item_id(path, number, fields[0]), title, year, genres))
    elif fmt == "ml-1m":
        for number, line in _text_lines(path, "latin-1"):
            head, sep, genres = line.rpartition("::")
            item, sep2, title = head.partition("::")
            if not sep or not sep2:
                raise DataFormatError(f"{path}:{number}: expected 'item::title::genres' (MovieLens 1M movies.dat)")
            title, year = title_and_year(title)
            rows.append((_item_id(path, number, item), title, year, [g for g in genres.split("|") if g not in NO_GENRES]))
    elif fmt == "ml-csv":
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or [h.strip().lower() for h in header] != ["movieid", "title", "genres"]:
                raise DataFormatError(f"{path}:1: header {header}; expected movieId,title,genres (MovieLens movies.csv)")
            for fields in reader:
                number = reader.line_num
                if len(fields) != 3:
                    raise DataFormatError(f"{path}:{number}: {len(fields)} fields, expected 3 (movieId,title,genres)")
                title, year = title_and_year(fields[1])
                rows.append((_item_id(path, number, fields[0]), title, year, [g for g in fields[2].split("|") if g not in NO_GENRES]))
    else:
        raise ValueError(f"no movies file for format {fmt!r}")
    return pa.table({
        "item": pa.array([r[0] for r in rows], pa.int64()),
        "title": pa.array([r[1] for r in rows], pa.string()),
        "year": pa.array([r[2] for r in rows], pa.int32()),
        "genres": pa.array([r[3] for r in rows], pa.list_(pa.string())),
    })


def _text_lines(path: str, encoding: str) -> list[tuple[int, str]]:
    with io.open(path, encoding=encoding, newline="") as f:
        return [(n, line.rstrip("\r\n")) for n, line in enumerate(f, start=1) if line.strip()]


def _item_id(path: str, number: int, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise DataFormatError(f"{path}:{number}: field item: {text!r} is not an integer id") from None
