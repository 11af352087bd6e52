"""The run directory: everything a run leaves behind, written by rank 0.

    config.json     resolved config (recipe + overrides)
    plan.txt        the sharding plan, as TorchRec prints it
    plan.json       the same plan, loadable with ``sharding.plan_file``
    metrics.jsonl   one line per log interval / evaluation
    summary.json    final metrics and run facts

Files are written under a temporary name and renamed, so a reader never sees half a
file; ``metrics.jsonl`` is appended line by line and flushed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torchrec_app.utils.fs import write_json_atomic, write_text_atomic


class RunDir:
    """Writes run files under ``path`` when ``enabled`` (rank 0); a no-op elsewhere."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.mkdir(parents=True, exist_ok=True)

    def write_json(self, name: str, data: Any) -> None:
        if self.enabled:
            write_json_atomic(self.path / name, data, sort_keys=True)

    def write_text(self, name: str, text: str) -> None:
        if self.enabled:
            write_text_atomic(self.path / name, text)

    def log_metrics(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record, default=str) + "\n")
