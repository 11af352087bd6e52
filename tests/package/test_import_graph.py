"""The package reads as the data flow: no module imports a layer above its own, and no import cycle.

Layers, bottom to top (a module may import its own layer and those below)::

    utils, config, metrics, env_check   shared vocabulary: typed config, file writes, metric math
    data                                raw files -> Parquet -> per-rank batches
    models                              tables, towers, losses
    distributed                         runtime, sharders, planning, build_sharded_model
    training                            trainer, checkpointer, validator, optimizers, run dir
    tools                               plan, bench, explain, export (over models / runs)
    commands, cli, train, __main__      the command line

Every import counts, including ones inside functions ("lazy" imports are still edges).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "torchrec_app"
LAYERS = [
    {"utils", "config", "metrics", "env_check"},
    {"data"},
    {"models"},
    {"distributed"},
    {"training"},
    {"tools"},
    {"commands", "cli", "train", "__main__"},
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """First-party modules imported anywhere in ``path`` (resolved to the deepest module that exists)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] == "torchrec_app" and _exists(n))
    return found


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"{module}: its top-level name {top!r} is in no layer; add it to LAYERS and docs/ARCHITECTURE.md")


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m != name} for name, path in modules.items()}


def test_no_import_against_the_flow():
    upward = sorted(
        f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
        for module, targets in _graph().items() if module != "torchrec_app"
        for target in targets if target != "torchrec_app" and _layer(target) > _layer(module)
    )
    assert not upward, "imports against the data flow:\n  " + "\n  ".join(upward)


def test_no_import_cycle():
    edges = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))
