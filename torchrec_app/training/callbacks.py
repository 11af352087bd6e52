"""The small interface through which tools attach to the one training loop.

The loop calls every callback at fixed points; each method is a no-op by default, so a
callback implements only what it needs. The benchmark's step profiler, its in-memory
ceiling and its stop-at-target-AUC attach this way (:mod:`torchrec_app.tools.bench.callbacks`),
so the loop carries no benchmark code and no benchmark config.
"""

from __future__ import annotations

from typing import Any, Iterator

from torchrec_app.models.task import ModelOutput

#: The :class:`~torchrec_app.training.trainer.Trainer` calling the hooks (named, not imported:
#: the trainer imports this module).
Trainer = Any


class Callback:
    """Hooks of the training loop (all optional)."""

    def on_train_start(self, trainer: Trainer) -> None:
        """After set-up and any resume, before the first step."""

    def wrap_batches(self, batches: Iterator[Any]) -> Iterator[Any]:
        """The batches of one training segment, before its timed steps begin (may read them all now)."""
        return batches

    def on_step(self, trainer: Trainer, output: ModelOutput) -> None:
        """After each optimizer step (``trainer.step`` already counts it)."""

    def on_validation(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        """After each validation during training; may call ``trainer.request_stop(reason)``."""

    def on_train_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        """Before ``summary.json`` is written; may add entries to ``summary``."""


class Callbacks(Callback):
    """Several callbacks called in order."""

    def __init__(self, callbacks: list[Callback] | tuple[Callback, ...] = ()) -> None:
        self.callbacks = list(callbacks)

    def on_train_start(self, trainer: Trainer) -> None:
        for c in self.callbacks:
            c.on_train_start(trainer)

    def wrap_batches(self, batches: Iterator[Any]) -> Iterator[Any]:
        for c in self.callbacks:
            batches = c.wrap_batches(batches)
        return batches

    def on_step(self, trainer: Trainer, output: ModelOutput) -> None:
        for c in self.callbacks:
            c.on_step(trainer, output)

    def on_validation(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        for c in self.callbacks:
            c.on_validation(trainer, metrics)

    def on_train_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        for c in self.callbacks:
            c.on_train_end(trainer, summary)
