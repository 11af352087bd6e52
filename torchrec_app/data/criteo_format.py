"""The Criteo text layout, and parsing it into arrays with exact errors for bad rows.

Every input (Criteo Kaggle ``train.txt``, Criteo 1TB ``day_N``, users' own files and
Kaggle-style CSV exports) has the same 40 columns: ``label, I1..I13, C1..C26``. Dense
values are integers (``1382.0`` is accepted; I2 may be negative), categorical values are
hex hashes (Criteo writes 8 digits; 1..16 are accepted), an empty field is a missing
value. Files may be gzip-compressed (detected by their magic bytes, not their name).

Text is cut into blocks of whole lines (:func:`iter_blocks`, bounded memory) and each
block is parsed by ``pyarrow.csv`` with explicit column types (:func:`parse_block`).
Only when pyarrow or a vectorised check rejects a block is that block re-scanned line
by line in Python (:func:`find_bad_lines`) to name the exact line and field, or to drop
the bad lines when skipping. Own block cutting (rather than one ``open_csv`` stream per
file) is what makes that possible: a failed ``open_csv`` stream cannot be resumed past
the bad row, and it does not say at which byte or line the failing batch began.

Parsed values:

* label: ``0`` or ``1``;
* dense: ``log(1 + max(x, 0))`` as float32, missing -> 0 (the DLRM transform);
* sparse: raw ids as uint64; a missing one-hot value is raw id 0 (as in DLRM's and
  torchrec's Criteo preprocessing), a missing multi-hot field is an empty bag.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

LABEL = "label"
DENSE_FEATURES = [f"I{i}" for i in range(1, 14)]
SPARSE_FEATURES = [f"C{i}" for i in range(1, 27)]
COLUMNS = [LABEL, *DENSE_FEATURES, *SPARSE_FEATURES]
GZIP_MAGIC = b"\x1f\x8b"

_HEX_LUT = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX_LUT[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX_LUT[_c] = 10 + _i
# Two hex digits at once (little-endian uint16 of the pair) -> byte value, 0xFFFF if not hex.
_PAIR_LUT = np.full(1 << 16, 0xFFFF, dtype=np.uint16)
_HEX_DIGITS = np.flatnonzero(_HEX_LUT < 16)
_PAIR_LUT[(_HEX_DIGITS[:, None] | (_HEX_DIGITS[None, :] << 8)).ravel()] = (
    (_HEX_LUT[_HEX_DIGITS][:, None] << 4) | _HEX_LUT[_HEX_DIGITS][None, :]
).ravel()
_DENSE_RE = re.compile(rb"[+-]?[0-9]+(\.0*)?")
_HEX_RE = re.compile(rb"[0-9a-fA-F]{1,16}")


class DataFormatError(ValueError):
    """Input that is not Criteo text: the message names the file, the line and the field."""


@dataclass(frozen=True, slots=True)
class TextFormat:
    """How one input file is laid out.

    Attributes:
        delimiter: ``"\\t"`` (Criteo TSV) or ``","`` (CSV export).
        header: whether line 1 is a ``label,I1,...,C26`` header.
        gzip: whether the file is gzip-compressed.
        float_dense: whether dense values are written as floats (``1382.0``, CSV exports):
            parsed as float64 and checked to be whole; otherwise parsed as int64 (faster).
    """

    delimiter: str
    header: bool
    gzip: bool
    float_dense: bool = False


@dataclass(slots=True)
class ParsedRows:
    """Rows parsed from one block.

    Attributes:
        labels: ``n`` float32 in {0, 1}.
        dense: ``n x 13`` float32, already ``log(1 + max(x, 0))``.
        sparse: one uint64 array of raw ids per sparse feature (all values of the feature,
            row after row).
        lengths: per sparse feature, ``n`` int32 ids per row (multi-hot), or None (one-hot:
            exactly one id per row).
    """

    labels: np.ndarray
    dense: np.ndarray
    sparse: list[np.ndarray]
    lengths: list[np.ndarray] | None

    @property
    def num_rows(self) -> int:
        return len(self.labels)


def open_text(path: str) -> BinaryIO:
    """A binary stream of the text of ``path``, decompressed if it is gzip.

    Raises:
        DataFormatError: ``path`` is missing or empty.
    """
    if not os.path.isfile(path):
        raise DataFormatError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise DataFormatError(f"{path}: the file is empty; expected Criteo rows (label, I1..I13, C1..C26)")
    with open(path, "rb") as f:
        compressed = f.read(2) == GZIP_MAGIC
    return pa.input_stream(path, compression="gzip" if compressed else None)


def sniff_format(path: str) -> TextFormat:
    """Detect the delimiter, a header line and gzip from the first line of ``path``.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x.csv")
    >>> _ = open(p, "w").write(",".join(COLUMNS) + "\\n")
    >>> sniff_format(p)
    TextFormat(delimiter=',', header=True, gzip=False, float_dense=False)
    """
    with open_text(path) as stream:  # checks that the file exists and is not empty
        head = bytes(stream.read(1 << 16))
    with open(path, "rb") as f:
        compressed = f.read(2) == GZIP_MAGIC
    if not head.strip():
        raise DataFormatError(f"{path}: the file has no rows; expected Criteo rows (label, I1..I13, C1..C26)")
    first = head.split(b"\n", 1)[0].rstrip(b"\r")
    header = first.lower().startswith(LABEL.encode())
    tabs = first.count(b"\t")  # multi-hot TSV may hold many commas inside fields
    delimiter = "\t" if tabs >= len(COLUMNS) - 1 or tabs >= first.count(b",") else ","
    lines = head.split(b"\n")
    data_line = lines[1] if header and len(lines) > 1 else lines[0]
    float_dense = any(b"." in value for value in data_line.split(delimiter.encode())[:14])
    return TextFormat(delimiter=delimiter, header=header, gzip=compressed, float_dense=float_dense)


def iter_blocks(stream: BinaryIO, block_bytes: int, path: str, limit: int | None = None) -> Iterator[tuple[int, bytes]]:
    r"""Yield ``(byte offset, block)`` where each block holds whole lines (ends with a newline).

    Reads at most ``limit`` bytes (a range of a plain file that ends at a line start);
    offsets count from where the stream was positioned. A last line without a newline
    gets one.

    >>> import io
    >>> list(iter_blocks(io.BytesIO(b"a\nbb\nc"), 3, "x"))
    [(0, b'a\n'), (2, b'bb\n'), (5, b'c\n')]

    Raises:
        DataFormatError: the stream is truncated or corrupt (e.g. a cut gzip file).
    """
    offset = 0
    carry = b""
    remaining = limit
    while True:
        size = block_bytes if remaining is None else min(block_bytes, remaining)
        try:
            data = bytes(stream.read(size)) if size > 0 else b""
        except (OSError, EOFError) as err:
            raise DataFormatError(
                f"{path}: the compressed stream is corrupt or truncated after {offset + len(carry)} bytes of text "
                f"({err}); re-download or re-compress the file"
            ) from None
        if remaining is not None:
            remaining -= len(data)
        if not data:
            if carry:
                yield offset, carry + b"\n"
            return
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            carry += data
            continue
        block = carry + memoryview(data)[:cut] if carry or cut < len(data) else data  # one copy at most
        yield offset, block
        offset += len(block)
        carry = data[cut:]


def _read_options(use_threads: bool) -> pacsv.ReadOptions:
    return pacsv.ReadOptions(column_names=COLUMNS, use_threads=use_threads, block_size=1 << 26)


def _convert_options(float_dense: bool) -> pacsv.ConvertOptions:
    number = pa.float64() if float_dense else pa.int64()
    types = {LABEL: number, **{name: number for name in DENSE_FEATURES}}
    types.update({name: pa.binary() for name in SPARSE_FEATURES})
    return pacsv.ConvertOptions(
        column_types=types,
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
        check_utf8=False,
        null_values=[""],
    )


class BlockRejected(Exception):
    """A block that the fast path rejects; :func:`find_bad_lines` says where."""


def parse_block(block: bytes, fmt: TextFormat, *, multi_hot: bool, separator: str, use_threads: bool = False) -> ParsedRows:
    """Parse a block of whole lines; raises ``BlockRejected`` when any line is bad."""
    parse_options = pacsv.ParseOptions(delimiter=fmt.delimiter, quote_char=False, ignore_empty_lines=False)
    table = None
    for float_dense in (fmt.float_dense, True) if not fmt.float_dense else (True,):
        try:
            table = pacsv.read_csv(pa.BufferReader(block), _read_options(use_threads), parse_options, _convert_options(float_dense))
            break
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            message = str(err)
    if table is None:
        raise BlockRejected(message)
    labels = _column_numpy(table, LABEL)
    if np.isnan(labels).any() or not np.isin(labels, (0.0, 1.0)).all():
        raise BlockRejected("label")
    dense = np.empty((table.num_rows, len(DENSE_FEATURES)), dtype=np.float32)
    for j, name in enumerate(DENSE_FEATURES):
        x = _column_numpy(table, name)
        present = ~np.isnan(x)
        if not np.array_equal(np.trunc(x[present]), x[present]):  # also rejects inf
            raise BlockRejected(name)
        dense[:, j] = dense_transform(x)
    sparse, lengths = [], ([] if multi_hot else None)
    for name in SPARSE_FEATURES:
        column = table.column(name).combine_chunks()
        if multi_hot:
            lists = pc.split_pattern(column, separator)
            lengths.append(pc.fill_null(pc.list_value_length(lists), 0).to_numpy().astype(np.int32))
            column = pc.list_flatten(lists)
            if column.null_count:
                raise BlockRejected(name)
        values = parse_hex(column, missing_is_error=multi_hot)
        if values is None:
            raise BlockRejected(name)
        sparse.append(values)
    return ParsedRows(labels=labels.astype(np.float32), dense=dense, sparse=sparse, lengths=lengths)


def _column_numpy(table: pa.Table, name: str) -> np.ndarray:
    column = table.column(name)
    if column.null_count == 0:
        return column.to_numpy().astype(np.float64, copy=False)
    return column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)  # nulls -> NaN


def dense_transform(x: np.ndarray) -> np.ndarray:
    """DLRM's dense transform ``log(1 + max(x, 0))`` as float32, NaN (missing) -> 0.

    >>> dense_transform(np.array([np.nan, -3.0, 0.0, 1382.0])).tolist()
    [0.0, 0.0, 0.0, 7.232010364532471]
    """
    x = np.maximum(x, 0.0)  # NaN stays NaN
    if np.isnan(x).any():
        x[np.isnan(x)] = 0.0
    return np.log1p(x, out=x).astype(np.float32)


def parse_hex(array: pa.Array, *, missing_is_error: bool = False) -> np.ndarray | None:
    """Raw ids (uint64) of a binary array of hex strings; null/empty -> 0; None if any is not hex.

    >>> parse_hex(pa.array([b"68fd1e64", None, b"ff", b"0"], pa.binary())).tolist()
    [1761418852, 0, 255, 0]
    >>> parse_hex(pa.array([b"12zz"], pa.binary())) is None
    True
    """
    n = len(array)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int32)[array.offset : array.offset + n + 1]
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    if missing_is_error and (lengths == 0).any():
        return None
    present = lengths > 0
    out = np.zeros(n, dtype=np.uint64)
    if (lengths[present] == 8).all():
        # Criteo's 8-digit hashes lie back to back in the data buffer: no gather needed.
        start, end = int(offsets[0]), int(offsets[-1])
        if start % 2:  # pairs must start on an even address for the uint16 view
            pairs = _PAIR_LUT[data[start:end].copy().view(np.uint16)]
        else:
            pairs = _PAIR_LUT[data[start:end].view(np.uint16)]
        if pairs.size and pairs.max() > 255:
            return None
        values = pairs.astype(np.uint8).view(">u4")
        if len(values) == n:
            return values.astype(np.uint64)
        out[present] = values
        return out
    if lengths.max() > 16:
        return None
    width = int(lengths.max())
    pos = np.arange(width)
    inside = pos[None, :] < lengths[:, None]
    idx = np.where(inside, offsets[:-1, None] + pos[None, :], 0)
    nib = np.where(inside, _HEX_LUT[data[idx]] if len(data) else 0, 0).astype(np.uint64)
    if (nib > 15).any():
        return None
    shift = (4 * np.maximum(lengths[:, None] - 1 - pos[None, :], 0)).astype(np.uint64)
    return np.bitwise_or.reduce(np.where(inside, nib << shift, np.uint64(0)), axis=1).astype(np.uint64)


@dataclass(frozen=True, slots=True)
class BadLine:
    """One bad line of a block: its 0-based index in the block, the field and what is wrong."""

    index: int
    field: str
    message: str


def find_bad_lines(block: bytes, fmt: TextFormat, *, multi_hot: bool, separator: str) -> list[BadLine]:
    """Check every line of ``block`` in Python; the slow path, run only on rejected blocks.

    >>> fmt = TextFormat(delimiter="\\t", header=False, gzip=False)
    >>> good = "\\t".join(["1"] + ["5"] * 13 + ["68fd1e64"] * 26)
    >>> bad = good.replace("68fd1e64", "xyz", 1)
    >>> find_bad_lines((good + "\\n" + bad + "\\n").encode(), fmt, multi_hot=False, separator=",")
    [BadLine(index=1, field='C1', message="expected a hex id (1-16 hex digits), got 'xyz'")]
    """
    delimiter = fmt.delimiter.encode()
    sep = separator.encode()
    bad = []
    lines = block.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for index, line in enumerate(lines):
        problem = _check_line(line.rstrip(b"\r"), delimiter, multi_hot, sep)
        if problem is not None:
            bad.append(BadLine(index, *problem))
    return bad


def _check_line(line: bytes, delimiter: bytes, multi_hot: bool, sep: bytes) -> tuple[str, str] | None:
    fields = line.split(delimiter)
    if len(fields) != len(COLUMNS):
        name = "tab" if delimiter == b"\t" else repr(delimiter.decode())
        return "", f"expected {len(COLUMNS)} fields (label, I1..I13, C1..C26) separated by {name}, got {len(fields)}"
    if fields[0] not in (b"0", b"1", b"0.0", b"1.0"):
        return LABEL, f"expected 0 or 1, got {fields[0].decode(errors='replace')!r}"
    for name, value in zip(DENSE_FEATURES, fields[1:14]):
        if value and not _DENSE_RE.fullmatch(value):
            return name, f"expected an integer (or empty for missing), got {value.decode(errors='replace')!r}"
    for name, value in zip(SPARSE_FEATURES, fields[14:]):
        if not value:
            continue
        for part in value.split(sep) if multi_hot else (value,):
            if not _HEX_RE.fullmatch(part):
                return name, f"expected a hex id (1-16 hex digits), got {part.decode(errors='replace')!r}"
    return None


def drop_lines(block: bytes, indices: set[int]) -> tuple[bytes, np.ndarray]:
    """``block`` without the lines at ``indices``, and the original index of each kept line."""
    lines = block.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    kept = [i for i in range(len(lines)) if i not in indices]
    text = b"".join(lines[i] + b"\n" for i in kept)
    return text, np.asarray(kept, dtype=np.int64)


def count_lines(block: bytes) -> int:
    """Lines in a block of whole lines."""
    return block.count(b"\n")
