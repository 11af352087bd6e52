"""The Criteo text layout, and parsing it into arrays with exact errors for bad rows.

Every labeled input (Criteo Kaggle ``train.txt``, Criteo 1TB ``day_N``, users' own files
and Kaggle-style CSV exports) has the 40 columns ``label, I1..I13, C1..C26``; Kaggle's
unlabeled ``test.txt`` has the 39 columns ``I1..I13, C1..C26`` (scoring data). Files may
be gzip-compressed (detected by their magic bytes, not their name).

What a field accepts (the same rule on every path, so whether a row is bad never depends
on the other rows of its block):

* **integer** (``I1..I13``, ``label``, a CSV's ``Id``): an optional ``-``, decimal digits,
  optionally ``.`` and zeros as spreadsheets export them (``1382``, ``-2``, ``007``,
  ``1382.0``), within the int64 range. Not ``+5``, ``1.5``, ``1e3``, ``inf``, ``nan``,
  ``0x10``, spaces, or ``99999999999999999999``. Empty is a missing dense value.
* **label**: an integer equal to 0 or 1 (``1.0`` is fine), never empty.
* **categorical** (``C1..C26``): 1-16 hex digits, any case (Criteo writes 8); empty is
  missing. Multi-hot: hex ids joined by the separator, no empty parts.

Headers (line 1) are recognised by naming a column (``label``, ``Id`` or ``I1``; C-names are
hex and prove nothing) and matched **by name**, case-insensitively and in any order,
after an optional UTF-8 byte-order mark: Kaggle's ``Id,Label,I1..I13,C1..C26`` works, the
``Id`` column is ignored except for scoring data, a header without ``Label`` marks an
unlabeled file, and unknown, duplicate or missing names are an error listing them.

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

Error messages quote at most :data:`QUOTE_CHARS` characters of an offending value.
"""

from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Collection, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

LABEL = "label"
ID = "id"
DENSE_FEATURES = [f"I{i}" for i in range(1, 14)]
SPARSE_FEATURES = [f"C{i}" for i in range(1, 27)]
COLUMNS = [LABEL, *DENSE_FEATURES, *SPARSE_FEATURES]
UNLABELED_COLUMNS = COLUMNS[1:]
GZIP_MAGIC = b"\x1f\x8b"
BOM = b"\xef\xbb\xbf"
QUOTE_CHARS = 80
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

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
_LOG1P = np.log1p(np.arange(1 << 16, dtype=np.float64)).astype(np.float32)  # dense_transform of 0..65535
_INTEGER_RE = re.compile(rb"(-?)([0-9]+)(?:\.0+)?")
_INTEGER_PATTERN = r"^-?[0-9]+(\.0+)?$"  # the same rule for pyarrow's RE2
_HEX_RE = re.compile(rb"[0-9a-fA-F]{1,16}")
# Bytes pyarrow's int64 conversion tolerates but the integer rule does not (" 5", "0x5").
_LENIENT_BYTES = (b" ", b"\t", b"x", b"X")
_HEADER_NAMES = {LABEL: LABEL, ID: ID, **{f.lower(): f for f in DENSE_FEATURES + SPARSE_FEATURES}}


class DataFormatError(ValueError):
    """Input that is not Criteo text: the message names the file, the line and the field."""


@dataclass(frozen=True, slots=True)
class TextFormat:
    """How one input file is laid out.

    Attributes:
        delimiter: ``"\\t"`` (Criteo TSV) or ``","`` (CSV export).
        header: whether line 1 is a header naming the columns.
        gzip: whether the file is gzip-compressed.
        float_dense: whether numbers are written as floats (``1382.0``, CSV exports):
            validated as text first; otherwise parsed as int64 (faster). Only a hint for
            speed: both ways accept exactly the same values.
        columns: the column of each field in file order (``label``, ``id``, ``I1``, ...).
    """

    delimiter: str
    header: bool
    gzip: bool
    float_dense: bool = False
    columns: tuple[str, ...] = tuple(COLUMNS)

    @property
    def labeled(self) -> bool:
        return LABEL in self.columns

    def describe_columns(self) -> str:
        """The expected layout in words, for error messages."""
        if self.header:
            return f"{len(self.columns)} fields as named by the header"
        return f"{len(self.columns)} fields ({'label, ' if self.labeled else ''}I1..I13, C1..C26)"


@dataclass(slots=True)
class ParsedRows:
    """Rows parsed from one block.

    Attributes:
        labels: ``n`` float32 in {0, 1}; None when not kept (unlabeled or scoring data).
        dense: ``13 x n`` float32 (each feature's values contiguous, as columns are written),
            already ``log(1 + max(x, 0))``.
        sparse: per sparse feature, its raw ids (all values of the feature, row after
            row): a uint64 array, or an :class:`EncodedIds` when parsed with ``encode_ids``
            (:meth:`raw_ids` gives the uint64 array either way).
        lengths: per sparse feature, ``n`` int32 ids per row (multi-hot), or None (one-hot:
            exactly one id per row).
        row_ids: ``n`` int64 of the file's ``Id`` column when kept, else None.
    """

    labels: np.ndarray | None
    dense: np.ndarray
    sparse: list[np.ndarray]
    lengths: list[np.ndarray] | None
    row_ids: np.ndarray | None = None

    @property
    def num_rows(self) -> int:
        return self.dense.shape[1]

    def raw_ids(self, f: int) -> np.ndarray:
        """The uint64 raw ids of sparse feature ``f`` (decoded if encoded)."""
        ids = self.sparse[f]
        return ids.decode() if isinstance(ids, EncodedIds) else ids


@dataclass(slots=True)
class EncodedIds:
    """One feature's raw ids of a block, dictionary-encoded: the ids are ``distinct[indices]``.

    What the text is parsed into when each value only needs a lookup (vocabulary counts and
    ids, ``raw % hash_size``): the hex text is decoded once per distinct string, not once per
    value. ``distinct`` holds one value per distinct *string*, so a value written two ways
    (``ab`` and ``00AB``) may appear twice; counting by value and looking values up are
    unaffected.

    >>> e = EncodedIds(np.array([1, 0, 1], np.int32), np.array([7, 9], np.uint64))
    >>> e.decode().tolist(), e.map(lambda d: d % np.uint64(4)).tolist()
    ([9, 7, 9], [1, 3, 1])
    """

    indices: np.ndarray  # int32, one per value (n values)
    distinct: np.ndarray  # uint64, len(distinct) <= n

    def decode(self) -> np.ndarray:
        """The uint64 raw id of every value."""
        return self.distinct[self.indices]

    def map(self, fn) -> np.ndarray:
        """``fn`` (elementwise over uint64 raw ids) of every value, computed on the distinct ids only."""
        return fn(self.distinct)[self.indices]


def quote(value: bytes) -> str:
    """``repr`` of a field for an error message, cut to :data:`QUOTE_CHARS` characters.

    >>> quote(b"abc")
    "'abc'"
    >>> quote(b"7" * 1000)
    "'77777777777777777777777777777777777777777777777777777777777777777777777777777...' (1000 bytes)"
    """
    text = value[: QUOTE_CHARS * 4].decode(errors="replace")
    if len(text) <= QUOTE_CHARS and len(value) <= QUOTE_CHARS * 4:
        return repr(text)
    return f"{text[: QUOTE_CHARS - 3] + '...'!r} ({len(value)} bytes)"


def _shorten(message: str, limit: int = 2 * QUOTE_CHARS) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


def parse_integer(text: bytes) -> int | None:
    """The value of an integer field (see the module docstring), or None if it is not one.

    >>> [parse_integer(v) for v in (b"12", b"-3", b"12.00", b"007", b"1.5", b"1e3", b"inf", b"+5", b" 5")]
    [12, -3, 12, 7, None, None, None, None, None]
    >>> parse_integer(b"9223372036854775807"), parse_integer(b"9223372036854775808")
    (9223372036854775807, None)
    """
    match = _INTEGER_RE.fullmatch(text)
    if match is None:
        return None
    digits = match.group(2).lstrip(b"0") or b"0"
    if len(digits) > 19:
        return None
    value = -int(digits) if match.group(1) else int(digits)
    return value if INT64_MIN <= value <= INT64_MAX else None


def open_text(path: str) -> BinaryIO:
    """A binary stream of the text of ``path``, decompressed if it is gzip.

    Raises:
        DataFormatError: ``path`` is missing or empty.
    """
    if not os.path.isfile(path):
        raise DataFormatError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise DataFormatError(f"{path}: the file is empty; expected Criteo rows (label, I1..I13, C1..C26)")
    return pa.input_stream(path, compression="gzip" if _is_gzip(path) else None)


def _is_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def read_text(stream: BinaryIO, size: int, path: str) -> bytes:
    """``stream.read(size)``; a corrupt or truncated gzip stream raises a :class:`DataFormatError`
    naming ``path`` and how much text could be read (see :func:`unreadable_message`)."""
    try:
        return bytes(stream.read(size))
    except (OSError, EOFError) as err:
        raise DataFormatError(unreadable_message(path, err)) from None


def unreadable_message(path: str, err: BaseException) -> str:
    """Why ``path`` could not be read, with the position reached in its text.

    For gzip the file is decompressed again with :mod:`zlib` to find how many bytes (and
    lines) of text precede the damage; only on this error path.
    """
    if not _is_gzip(path):
        return f"{path}: cannot read the file ({_shorten(str(err))})"
    text_bytes, lines = _gzip_readable(path)
    return (f"{path}: the compressed stream is corrupt or truncated after {text_bytes:,} bytes of text "
            f"(in line {lines + 1:,}; {_shorten(str(err))}); re-download or re-compress the file")  # fmt: skip


def _gzip_readable(path: str) -> tuple[int, int]:
    """Bytes and newlines of text that decompress before a gzip file's damage (all members)."""
    text_bytes = lines = 0
    inflate = zlib.decompressobj(wbits=31)
    with open(path, "rb") as f:
        try:
            while chunk := f.read(1 << 14):
                while chunk:
                    out = inflate.decompress(chunk)
                    text_bytes, lines = text_bytes + len(out), lines + out.count(b"\n")
                    chunk = b""
                    if inflate.eof:  # a member ended: the rest (if any) starts the next one
                        chunk, inflate = inflate.unused_data, zlib.decompressobj(wbits=31)
        except zlib.error:
            pass
    return text_bytes, lines


def sniff_format(path: str) -> TextFormat:
    """Detect gzip, the delimiter and the columns (a header line, or the field count).

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x.csv")
    >>> _ = open(p, "w").write("\\ufeffId,Label," + ",".join(COLUMNS[1:]) + "\\n")
    >>> f = sniff_format(p)
    >>> f.delimiter, f.header, f.columns[:3]
    (',', True, ('id', 'label', 'I1'))
    >>> _ = open(p, "w").write("I2,I1\\n")
    >>> sniff_format(p)
    Traceback (most recent call last):
    ...
    torchrec_app.data.criteo_format.DataFormatError: ...x.csv:1: the header does not name the Criteo columns: missing I3, ...

    Raises:
        DataFormatError: missing, empty or unreadable file, or a header that does not name
            the columns (lists unknown, duplicate and missing names).
    """
    with open_text(path) as stream:  # checks that the file exists and is not empty
        head = read_text(stream, 1 << 16, path)
    if head.startswith(BOM):
        head = head[len(BOM) :]
    if not head.strip():
        raise DataFormatError(f"{path}: the file has no rows; expected Criteo rows (label, I1..I13, C1..C26)")
    lines = head.split(b"\n")
    first = lines[0].rstrip(b"\r")
    tabs = first.count(b"\t")  # multi-hot TSV may hold many commas inside fields
    delimiter = "\t" if tabs >= len(UNLABELED_COLUMNS) - 1 or tabs >= first.count(b",") else ","
    names = [field.strip().decode(errors="replace") for field in first.split(delimiter.encode())]
    header = any(name.lower() in (LABEL, ID, *(f.lower() for f in DENSE_FEATURES)) for name in names)
    if header:
        columns = _header_columns(path, names)
    else:
        columns = tuple(UNLABELED_COLUMNS if len(names) == len(UNLABELED_COLUMNS) else COLUMNS)
    data_line = lines[1] if header and len(lines) > 1 else lines[0]
    numbers = [i for i, c in enumerate(columns) if c == LABEL or c == ID or c in DENSE_FEATURES]
    values = data_line.rstrip(b"\r").split(delimiter.encode())
    float_dense = any(b"." in values[i] for i in numbers if i < len(values))
    return TextFormat(delimiter=delimiter, header=header, gzip=_is_gzip(path), float_dense=float_dense, columns=columns)


def _header_columns(path: str, names: list[str]) -> tuple[str, ...]:
    columns = tuple(_HEADER_NAMES.get(name.lower(), "") for name in names)
    unknown = [name for name, c in zip(names, columns) if not c]
    duplicate = sorted({name for name, c in zip(names, columns) if c and columns.count(c) > 1})
    missing = [f for f in DENSE_FEATURES + SPARSE_FEATURES if f not in columns]
    if unknown or duplicate or missing:
        problems = [f"{what} {', '.join(repr(n) if what == 'unknown' else n for n in found)}"
                    for what, found in (("unknown", unknown), ("duplicate", duplicate), ("missing", missing)) if found]  # fmt: skip
        raise DataFormatError(
            f"{path}:1: the header does not name the Criteo columns: {'; '.join(problems)}; expected "
            "[Id,] [Label,] I1..I13, C1..C26 in any order (case-insensitive; no Label: unlabeled rows for --score)"
        )
    return columns


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
        data = read_text(stream, size, path) if size > 0 else b""
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


class BlockRejected(Exception):
    """A block that the fast path rejects; :func:`find_bad_lines` says where."""


def _numbers(fmt: TextFormat, keep_label: bool, keep_id: bool) -> list[str]:
    """The integer columns parsed from a file: dense, and label / Id when kept."""
    kept = [c for c in fmt.columns if (c == LABEL and keep_label) or (c == ID and keep_id)]
    return kept + DENSE_FEATURES


def _read_table(block: bytes, fmt: TextFormat, numbers: list[str], as_text: bool, multi_hot: bool, use_threads: bool) -> pa.Table:
    """pyarrow's parse of ``block``; an empty line is a row of nulls when the label is kept
    (the label's null check rejects it), else skipped (the line count check rejects it)."""
    number_type = pa.string() if as_text else pa.int64()
    types = {name: number_type for name in numbers}
    types.update({name: pa.binary() for name in SPARSE_FEATURES})
    # pyarrow tokenizes and converts 2 MiB at a time: the parsed fields stay in cache while each
    # column is converted (a third less CPU than one pass over a 16 MiB block).
    read = pacsv.ReadOptions(column_names=list(fmt.columns), use_threads=use_threads, block_size=1 << 21)
    parse = pacsv.ParseOptions(delimiter=fmt.delimiter, quote_char=False, ignore_empty_lines=LABEL not in numbers)
    convert = pacsv.ConvertOptions(
        column_types=types,
        include_columns=numbers + SPARSE_FEATURES,
        strings_can_be_null=multi_hot or as_text,
        quoted_strings_can_be_null=False,
        check_utf8=False,
        null_values=[""],
    )
    return pacsv.read_csv(pa.BufferReader(block), read, parse, convert)


def _integers(column: pa.ChunkedArray, as_text: bool) -> pa.Array:
    """int64 values of a number column (nulls stay null); BlockRejected if any breaks the rule."""
    column = column.combine_chunks()
    if not as_text:
        return column
    valid = pc.match_substring_regex(column, _INTEGER_PATTERN)
    if pc.any(pc.invert(valid)).as_py():
        raise BlockRejected("not an integer")
    try:
        return pc.cast(pc.replace_substring_regex(column, r"\.0+$", ""), pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:  # out of the int64 range
        raise BlockRejected(str(err)) from None


def _has_lenient_bytes(block: bytes, fmt: TextFormat, separator: str) -> bool:
    """Whether ``block`` holds bytes that pyarrow's int64 parser tolerates but the integer
    rule does not (``" 5"``, ``"0x5"``): then numbers are checked as text instead."""
    allowed = (fmt.delimiter.encode(), separator.encode())
    return any(b in block for b in _LENIENT_BYTES if b not in allowed)


def _has_lone_carriage_return(block: bytes) -> bool:
    """Whether a ``\\r`` is not followed by ``\\n``: pyarrow would end a line there, the rules do not."""
    if b"\r" not in block:
        return False
    text = np.frombuffer(block, dtype=np.uint8)
    after = np.flatnonzero(text == 13) + 1
    return bool(after[-1] == len(text) or (text[after[after < len(text)]] != 10).any())


def count_lines(block: bytes) -> int:
    """Lines in a block of whole lines (its newlines)."""
    return int(np.count_nonzero(np.frombuffer(block, dtype=np.uint8) == 10))


def parse_block(block: bytes, fmt: TextFormat, *, multi_hot: bool, separator: str, keep_label: bool = True,
                keep_id: bool = False, use_threads: bool = False, encode_ids: Collection[str] = ()) -> ParsedRows:  # fmt: skip
    """Parse a block of whole lines; raises ``BlockRejected`` when any line is bad.

    ``keep_label``: parse the label (labeled files); ``keep_id``: parse the ``Id`` column
    (scoring data with one); ``encode_ids``: the sparse features returned as
    :class:`EncodedIds` (for vocabulary features: their counting and lookups need the
    distinct ids anyway). Accepts exactly the rows :func:`find_bad_lines` accepts.
    """
    keep_label = keep_label and fmt.labeled
    keep_id = keep_id and ID in fmt.columns
    if _has_lone_carriage_return(block):
        raise BlockRejected("a carriage return inside a line")
    numbers = _numbers(fmt, keep_label, keep_id)
    table, message = None, ""
    for as_text in (True,) if fmt.float_dense or _has_lenient_bytes(block, fmt, separator) else (False, True):
        try:
            table = _read_table(block, fmt, numbers, as_text, multi_hot, use_threads)
            columns = {name: _integers(table.column(name), as_text) for name in numbers}
            break
        except (pa.ArrowInvalid, pa.ArrowTypeError, BlockRejected) as err:
            table, message = None, str(err)
    if table is None:
        raise BlockRejected(_shorten(message))
    if not keep_label and table.num_rows != count_lines(block):  # an empty line was skipped: a bad row by the rules
        raise BlockRejected("rows and lines differ")
    labels = row_ids = None
    if keep_label:
        label = columns[LABEL]
        if label.null_count or not pc.all(pc.is_in(label, pa.array([0, 1], pa.int64()))).as_py():
            raise BlockRejected(LABEL)
        labels = label.to_numpy().astype(np.float32)
    if keep_id:
        if columns[ID].null_count:
            raise BlockRejected(ID)
        row_ids = columns[ID].to_numpy()
    dense = np.empty((len(DENSE_FEATURES), table.num_rows), dtype=np.float32)
    for j, name in enumerate(DENSE_FEATURES):
        dense[j] = dense_transform(columns[name])
    sparse, lengths = [], ([] if multi_hot else None)
    for name in SPARSE_FEATURES:
        column = table.column(name).combine_chunks()
        if multi_hot:
            lists = pc.split_pattern(column, separator)
            lengths.append(pc.fill_null(pc.list_value_length(lists), 0).to_numpy().astype(np.int32))
            column = pc.list_flatten(lists)
            if column.null_count:
                raise BlockRejected(name)
        values = (encode_hex if name in encode_ids else parse_hex)(column, missing_is_error=multi_hot)
        if values is None:
            raise BlockRejected(name)
        sparse.append(values)
    return ParsedRows(labels=labels, dense=dense, sparse=sparse, lengths=lengths, row_ids=row_ids)


def dense_transform(column: pa.Array) -> np.ndarray:
    """DLRM's dense transform ``log(1 + max(x, 0))`` as float32 of an int64 column, null -> 0.

    Values below 2**16 (nearly all Criteo counts) come from a table of the same float64
    ``log1p`` rounded to float32, so the result is exactly that of computing each value.

    >>> dense_transform(pa.array([None, -3, 0, 1382, 2**40])).tolist()
    [0.0, 0.0, 0.0, 7.232010364532471, 27.725887298583984]
    """
    x = pc.fill_null(column, 0).to_numpy()
    out = _LOG1P[np.clip(x, 0, len(_LOG1P) - 1)]
    big = x >= len(_LOG1P)
    if big.any():
        out[big] = np.log1p(x[big].astype(np.float64)).astype(np.float32)
    return out


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
    if missing_is_error and not lengths.all():
        return None
    if not (lengths & ~np.int32(8)).any():  # each 8 digits or empty
        # Criteo's 8-digit hashes lie back to back in the data buffer: no gather needed.
        values = _decode_hex8(data[int(offsets[0]) : int(offsets[-1])])
        if values is None or len(values) == n:
            return values
        out = np.zeros(n, dtype=np.uint64)
        out[lengths > 0] = values
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


def _decode_hex8(text: np.ndarray) -> np.ndarray | None:
    """uint64 values of back-to-back 8-digit hex strings (uint8 text, 8 bytes each); None if any is not hex."""
    if text.ctypes.data % 2:  # pairs must start on an even address for the uint16 view
        text = text.copy()
    pairs = _PAIR_LUT[text.view(np.uint16)]
    if pairs.size and pairs.max() > 255:
        return None
    return pairs.astype(np.uint8).view(">u4").astype(np.uint64)


def encode_hex(array: pa.Array, *, missing_is_error: bool = False) -> EncodedIds | None:
    """:func:`parse_hex` as :class:`EncodedIds`: the strings are dictionary-encoded first, so
    only the distinct ones are decoded; None if any is not hex.

    When every string has 8 characters (Criteo's ids) each is hashed as one uint64 word of
    its bytes, cheaper than hashing strings.

    >>> e = encode_hex(pa.array([b"68fd1e64", None, b"ff", b"68fd1e64", b"FF"], pa.binary()))
    >>> e.decode().tolist(), len(e.distinct)
    ([1761418852, 0, 255, 1761418852, 255], 4)
    >>> encode_hex(pa.array([b"12zz"], pa.binary())) is None
    True
    """
    n = len(array)
    if n == 0:
        return EncodedIds(np.zeros(0, np.int32), np.zeros(0, np.uint64))
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int32)[array.offset : array.offset + n + 1]
    start, end = int(offsets[0]), int(offsets[-1])
    lengths = np.diff(offsets)
    all_eight = end - start == 8 * n and lengths.max() == 8  # (lengths sum to 8n, none above 8)
    if all_eight or (not missing_is_error and not (lengths & ~np.int32(8)).any()):  # 8 digits each, or missing (-> 0)
        text = np.frombuffer(buffers[2], dtype=np.uint8)[start:end]  # the present strings, back to back
        words = text.view(np.uint64) if text.ctypes.data % 8 == 0 else text.copy().view(np.uint64)
        encoded = pc.dictionary_encode(pa.array(words))
        distinct = _decode_hex8(encoded.dictionary.to_numpy().view(np.uint8))
        if distinct is None:
            return None
        if all_eight:
            return EncodedIds(encoded.indices.to_numpy(), distinct)
        indices = np.full(n, len(distinct), dtype=np.int32)  # missing: the extra last entry, raw id 0
        indices[lengths > 0] = encoded.indices.to_numpy()
        return EncodedIds(indices, np.append(distinct, np.uint64(0)))
    encoded = pc.dictionary_encode(array, null_encoding="encode")
    distinct = parse_hex(encoded.dictionary, missing_is_error=missing_is_error)
    return None if distinct is None else EncodedIds(encoded.indices.to_numpy(), distinct)


@dataclass(frozen=True, slots=True)
class BadLine:
    """One bad line of a block: its 0-based index in the block, the field and what is wrong."""

    index: int
    field: str
    message: str


def find_bad_lines(block: bytes, fmt: TextFormat, *, multi_hot: bool, separator: str, keep_label: bool = True,
                   keep_id: bool = False) -> list[BadLine]:  # fmt: skip
    """Check every line of ``block`` in Python; the slow path, run only on rejected blocks.

    >>> fmt = TextFormat(delimiter="\\t", header=False, gzip=False)
    >>> good = "\\t".join(["1"] + ["5"] * 13 + ["68fd1e64"] * 26)
    >>> bad = good.replace("68fd1e64", "xyz", 1)
    >>> find_bad_lines((good + "\\n" + bad + "\\n").encode(), fmt, multi_hot=False, separator=",")
    [BadLine(index=1, field='C1', message="expected a hex id (1-16 hex digits), got 'xyz'")]
    """
    keep_label = keep_label and fmt.labeled
    keep_id = keep_id and ID in fmt.columns
    checks = [(i, name) for i, name in enumerate(fmt.columns) if name != ID or keep_id]
    order = {name: k for k, name in enumerate([ID, LABEL, *DENSE_FEATURES, *SPARSE_FEATURES])}
    checks.sort(key=lambda check: order[check[1]])  # report the first bad field in the usual column order
    delimiter, sep = fmt.delimiter.encode(), separator.encode()
    bad = []
    lines = block.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for index, line in enumerate(lines):
        problem = _check_line(line.removesuffix(b"\r"), fmt, checks, keep_label, delimiter, multi_hot, sep)
        if problem is not None:
            bad.append(BadLine(index, *problem))
    return bad


def _check_line(line: bytes, fmt: TextFormat, checks: list[tuple[int, str]], keep_label: bool, delimiter: bytes,
                multi_hot: bool, sep: bytes) -> tuple[str, str] | None:  # fmt: skip
    if b"\r" in line:
        return "", "a carriage return inside the line; lines end with \\n or \\r\\n"
    fields = line.split(delimiter)
    if len(fields) != len(fmt.columns):
        name = "tab" if delimiter == b"\t" else repr(delimiter.decode())
        return "", f"expected {fmt.describe_columns()} separated by {name}, got {len(fields)}"
    for i, name in checks:
        value = fields[i]
        if name == LABEL:
            if keep_label and parse_integer(value) not in (0, 1):
                return LABEL, f"expected 0 or 1, got {quote(value)}"
        elif (name in DENSE_FEATURES and value) or name == ID:
            if parse_integer(value) is None:
                what = "an integer row id" if name == ID else "an integer such as 12, -3 or 12.0 (or empty for missing)"
                overflow = " (outside the int64 range)" if _INTEGER_RE.fullmatch(value) else ""
                return name, f"expected {what}, got {quote(value)}{overflow}"
        elif value:
            for part in value.split(sep) if multi_hot else (value,):
                if not _HEX_RE.fullmatch(part):
                    return name, f"expected a hex id (1-16 hex digits), got {quote(part)}"
    return None


def drop_lines(block: bytes, indices: set[int]) -> tuple[bytes, np.ndarray]:
    """``block`` without the lines at ``indices``, and the original index of each kept line."""
    lines = block.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    kept = [i for i in range(len(lines)) if i not in indices]
    text = b"".join(lines[i] + b"\n" for i in kept)
    return text, np.asarray(kept, dtype=np.int64)
