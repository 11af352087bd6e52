"""The syntax of ``sparse.compress`` values: ``full``, ``hash:C``, ``qr:C[:OP]``, ``mr:K[:OP]``.

Config owns what a user may write and validates it at start-up; what a spec *means* (how
many rows each partition table gets, how ids map to partitions, how vectors compose) is
model logic in :mod:`torchrec_app.models.compression`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchrec_app.config.errors import check_choice

COMPRESSION_METHODS = ("full", "hash", "qr", "mr")
COMPOSE_OPERATIONS = ("mult", "add", "concat")


@dataclass(frozen=True, slots=True)
class CompressionSpec:
    """How one table is stored; parsed from ``sparse.compress`` strings (see :func:`parse_compression`)."""

    method: str = "full"
    """full, hash (id mod ceil(n/c)), qr (remainder x quotient) or mr (k mixed-radix digits)."""
    collisions: int = 1
    """hash and qr: about this many ids share one row of the (remainder) table."""
    operation: str = "mult"
    """qr and mr: how the partition vectors compose: mult, add or concat."""
    partitions: int = 1
    """Number of tables the id is split across (1 for full and hash, 2 for qr, k for mr)."""


def parse_compression(spec: str, where: str = "sparse.compress") -> CompressionSpec:
    """Parse ``full``, ``hash:C``, ``qr:C[:OP]`` or ``mr:K[:OP]`` (OP: mult, add, concat).

    >>> parse_compression("qr:4:add")
    CompressionSpec(method='qr', collisions=4, operation='add', partitions=2)
    >>> parse_compression("mr:3")
    CompressionSpec(method='mr', collisions=1, operation='mult', partitions=3)
    >>> parse_compression("qr:1", 'sparse.compress["C3"]')
    Traceback (most recent call last):
    ...
    ValueError: sparse.compress["C3"]='qr:1': collisions must be an integer >= 2 (how many ids share a row), got '1'
    """
    parts = spec.split(":")
    method, args = parts[0], parts[1:]
    check_choice(where.rsplit(".", 1)[0], where.rsplit(".", 1)[-1] + " method", method, COMPRESSION_METHODS)
    usage = {"full": "full", "hash": "hash:C", "qr": "qr:C[:OP]", "mr": "mr:K[:OP]"}[method]
    if len(args) not in {"full": (0,), "hash": (1,), "qr": (1, 2), "mr": (1, 2)}[method]:
        raise ValueError(f"{where}={spec!r}: expected {usage} (C collisions, K partitions, OP one of {', '.join(COMPOSE_OPERATIONS)})")
    if method == "full":
        return CompressionSpec()
    count = args[0]
    what = "partitions must be an integer >= 2 (tables per id)" if method == "mr" else "collisions must be an integer >= 2 (how many ids share a row)"
    if not count.isdigit() or int(count) < 2:
        raise ValueError(f"{where}={spec!r}: {what}, got {count!r}")
    if method == "hash":
        return CompressionSpec(method="hash", collisions=int(count))
    operation = args[1] if len(args) == 2 else "mult"
    if operation not in COMPOSE_OPERATIONS:
        raise ValueError(f"{where}={spec!r}: operation {operation!r} is not one of {', '.join(COMPOSE_OPERATIONS)}")
    if method == "qr":
        return CompressionSpec(method="qr", collisions=int(count), operation=operation, partitions=2)
    return CompressionSpec(method="mr", operation=operation, partitions=int(count))
