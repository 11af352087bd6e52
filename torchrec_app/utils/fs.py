"""Atomic file writes: a reader sees the old file or the whole new one, never half of it.

Every file the app writes that another process (or a rerun) may read goes through here:
the content is written to a hidden temporary name in the same directory and renamed over
the target (``os.replace`` is atomic on one filesystem). A failure removes the temporary
file and leaves the previous file untouched.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "a.json"
>>> write_json_atomic(path, {"x": 1})
>>> path.read_text()
'{\\n  "x": 1\\n}\\n'
>>> with atomic_path(path) as tmp:
...     _ = tmp.write_text("half")
...     raise RuntimeError("crash")
Traceback (most recent call last):
...
RuntimeError: crash
>>> path.read_text()  # unchanged, and no temporary file left behind
'{\\n  "x": 1\\n}\\n'
>>> sorted(p.name for p in path.parent.iterdir())
['a.json']
"""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None``, so it is valid JSON.

    Python's ``json`` writes ``NaN`` and ``Infinity``, which no strict parser accepts.

    >>> strict_json({"auc": float("nan"), "xs": [1.0, float("inf")], "n": 3})
    {'auc': None, 'xs': [1.0, None], 'n': 3}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def write_json_atomic(path: str | os.PathLike, value: Any, *, indent: int | None = 2, sort_keys: bool = False) -> None:
    """Write ``value`` as strict JSON (non-finite floats become ``null``) to ``path`` atomically."""
    text = json.dumps(strict_json(value), indent=indent, sort_keys=sort_keys, default=str, allow_nan=False)
    write_text_atomic(path, text + "\n")
