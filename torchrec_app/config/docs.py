"""Field documentation of the config tree, read from the docstrings under each field.

Every config field is followed by a string literal that documents it (the convention of
:mod:`torchrec_app.config.schema`); Python keeps no reference to such strings, so they
are read from the source with :mod:`ast`. ``torchrec-app show-config`` prints them.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import textwrap
from typing import Any, Iterator


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """``field name -> docstring`` of dataclass ``cls`` (fields without one are absent).

    >>> from torchrec_app.config.schema import TrainConfig
    >>> field_docs(TrainConfig)["batch_size"]
    'Rows per rank per step (the global batch is this x world size).'
    """
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, following in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant) and isinstance(following.value.value, str)):  # fmt: skip
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def documented_fields(config: Any, prefix: str = "") -> Iterator[tuple[str, Any, str]]:
    """``(dotted key, value, doc)`` of every leaf field of a config tree, depth first.

    >>> from torchrec_app.config.schema import CrossConfig
    >>> next(documented_fields(CrossConfig(), "model.cross."))
    ('model.cross.kind', 'low_rank', 'full (CrossNet), low_rank (LowRankCrossNet) or mixture (LowRankMixtureCrossNet).')
    """
    docs = field_docs(type(config))
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            yield from documented_fields(value, f"{prefix}{field.name}.")
        else:
            yield f"{prefix}{field.name}", value, docs.get(field.name, "")


def section_doc(cls: type) -> str:
    """The first paragraph of a config section's class docstring, on one line."""
    return " ".join((inspect.getdoc(cls) or "").split("\n\n")[0].split())
