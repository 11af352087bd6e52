"""The checkpointer: when to save, how many to keep, what to resume from.

It saves the trainer's whole state (``Trainer.state_dict()``: model, optimizers, LR
schedule, reader position, validator, counters) through :mod:`torchrec_app.training.checkpoint`
(atomic DCP saves, keep-K, safe and verified loading), every ``checkpoint.every`` steps
and at the end (``checkpoint.at_end``). Before training it restores, in this order:

1. ``checkpoint.resume``: the newest checkpoint of this run directory that verifies
   (damaged ones are skipped with a warning naming each) — the whole state, so training
   continues exactly where it stopped;
2. ``checkpoint.load_from=DIR``: model and optimizer state of another run's checkpoint
   (any plan, any world size); counters start at zero.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol

from torchrec_app.config.schema import CheckpointConfig
from torchrec_app.training.checkpoint import load_checkpoint, newest_valid_checkpoint, save_checkpoint


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any], skipped: list[str] | None = None) -> None: ...


#: What ``checkpoint.load_from`` restores: the learned state, not the run's position.
WEIGHTS_ONLY = ("model", "optimizer")


class Checkpointer:
    """Cadence, keep-K and restore of the trainer's checkpoints under ``root``."""

    def __init__(self, root: Path, config: CheckpointConfig, log: Callable[[str], None]) -> None:
        self.root, self.config, self.log = Path(root), config, log

    def is_due(self, step: int) -> bool:
        return bool(self.config.every) and step > 0 and step % self.config.every == 0

    def next_due(self, step: int) -> float:
        """The first step after ``step`` with a periodic save (infinity without ``checkpoint.every``)."""
        every = self.config.every
        return (step // every + 1) * every if every else float("inf")

    def save(self, step: int, target: Stateful) -> Path:
        """Save ``target``'s state as the checkpoint of ``step`` (collective)."""
        return save_checkpoint(self.root, step, target.state_dict(), self.config.keep)

    def restore(self, target: Stateful) -> str | None:
        """Resume or load as configured (collective); the checkpoint used, or None."""
        latest = newest_valid_checkpoint(self.root, self.config.verify_checksums) if self.config.resume else None
        if latest is not None:  # just verified, checksums included: the load checks sizes only
            self.load(latest, target, verify_checksums=False)
            return str(latest)
        if self.config.load_from:
            self.load(Path(self.config.load_from), target, parts=WEIGHTS_ONLY)
            return self.config.load_from
        return None

    def load(self, path: Path, target: Stateful, parts: tuple[str, ...] | None = None,
             verify_checksums: bool | None = None) -> None:  # fmt: skip
        """Verify checkpoint ``path``, then load it into ``target`` (collective): all of its state, or only ``parts``."""
        state = target.state_dict()
        if parts is not None:
            state = {k: v for k, v in state.items() if k in parts}
        checksums = self.config.verify_checksums if verify_checksums is None else verify_checksums
        loaded, skipped = load_checkpoint(path, state, checksums)
        if skipped:
            self.log(f"warning: {len(skipped)} optimizer state tensor(s) in {path} do not fit this plan's layout "
                     f"and start fresh, e.g. {skipped[0]}")  # fmt: skip
        target.load_state_dict(loaded, skipped)
