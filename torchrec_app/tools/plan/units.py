"""Formatting of bytes and rank lists, shared by the plan report and the plan diff.

Pure Python on purpose: ``torchrec-app plan --diff`` of two JSON files imports nothing heavier.
"""

from __future__ import annotations

from typing import Sequence

GIB = 1024**3


def gib(n: float) -> str:
    """Bytes as GiB, 2 decimals.

    >>> gib(3 * 1024**3 / 2)
    '1.50'
    """
    return f"{n / GIB:.2f}"


def collapse_ranks(ranks: Sequence[int]) -> str:
    """Rank list as ranges.

    >>> collapse_ranks([0, 1, 2, 3, 5, 8, 9])
    '0-3,5,8-9'
    >>> collapse_ranks([])
    '-'
    """
    ranks = sorted(set(ranks))
    if not ranks:
        return "-"
    parts, start, prev = [], ranks[0], ranks[0]
    for r in ranks[1:] + [None]:
        if r is not None and r == prev + 1:
            prev = r
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if r is not None:
            start = prev = r
    return ",".join(parts)
