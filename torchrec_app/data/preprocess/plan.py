"""Planning: each input file cut into tasks, the unit of work of one process.

A plain file is cut into byte ranges of 64-512 MiB (about two per worker) that start at
line starts; a gzip file cannot be entered in the middle, so it is one task. Row-order
split policies need each task's first line number, counted here (one pass over the
bytes, no parsing).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from torchrec_app.data import criteo_format as fmt_
from torchrec_app.data.criteo_format import TextFormat
from torchrec_app.data.splits import Source, SplitRule

_MIN_TASK_BYTES = 64 << 20
_MAX_TASK_BYTES = 512 << 20


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
                line += count_newlines(source.path, start, end - start)
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


def count_newlines(path: str, start: int, length: int) -> int:
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
