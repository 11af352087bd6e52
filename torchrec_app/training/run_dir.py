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

from torchrec_app.utils.fs import strict_json, write_json_atomic, write_text_atomic

METRICS_FILE = "metrics.jsonl"


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
        """Append ``record`` as one strict-JSON line of ``metrics.jsonl``."""
        if self.enabled:
            with open(self.path / METRICS_FILE, "a") as f:
                f.write(json.dumps(strict_json(record), default=str, allow_nan=False) + "\n")

    def drop_metrics_after(self, step: int) -> None:
        """Forget the ``metrics.jsonl`` lines of steps after ``step``: a resumed run replays those
        steps and logs them again, and each step must appear once."""
        path = self.path / METRICS_FILE
        if not self.enabled or not path.exists():
            return
        lines = path.read_text().splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
        if len(kept) != len(lines):
            write_text_atomic(path, "".join(line + "\n" for line in kept))
