"""What a person watching training sees, and the ``metrics.jsonl`` lines of each log interval.

On a terminal (rank 0, stdout a TTY) a tqdm bar shows step, loss and samples/s. When
stdout is not a terminal — under torchx, torchrun, a scheduler or a pipe, where every
bar refresh would become a new log line — a plain line is printed at most every
``train.progress_seconds`` seconds instead: step, epoch %, loss, samples/s and ETA.
"""

from __future__ import annotations

import sys
import time
from typing import Any


class ProgressReporter:
    """Progress on rank 0: a bar on a terminal, a line every ``every_seconds`` otherwise.

    Args:
        total_steps: steps the run will take (for the bar and the ETA).
        initial_step: where a resumed run starts.
        steps_per_epoch: for the epoch percentage.
        enabled: show anything at all (rank 0 and ``train.progress_bar``).
        every_seconds: the minimum time between two plain lines.
    """

    def __init__(self, total_steps: int, initial_step: int, steps_per_epoch: int, enabled: bool, every_seconds: float,
                 stream=None) -> None:  # fmt: skip
        self.total, self.steps_per_epoch, self.every = total_steps, max(1, steps_per_epoch), every_seconds
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.bar = None
        self.start_step, self.start_time = initial_step, time.perf_counter()
        self.last_line = -float("inf")
        self.step = initial_step
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=initial_step, desc="train", unit="step", dynamic_ncols=True,
                            file=self.stream)  # fmt: skip

    def advance(self, step: int) -> None:
        """One more step done."""
        if self.bar is not None:
            self.bar.update(step - self.step)
        self.step = step

    def show(self, record: dict[str, Any]) -> None:
        """A log interval's figures (``loss``, ``samples_per_second``): on the bar, or as a line if due."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", sps=f"{record['samples_per_second']:.0f}")
            return
        now = time.perf_counter()
        if now - self.last_line < self.every and self.step < self.total:
            return
        self.last_line = now
        done = self.step - self.start_step
        eta = (now - self.start_time) / done * (self.total - self.step) if done else float("nan")
        epoch = self.step / self.steps_per_epoch
        print(f"step {self.step}/{self.total} | epoch {epoch:.2f} | loss {record['loss']:.4f} | "
              f"{record['samples_per_second']:,.0f} samples/s | ETA {_duration(eta)}", file=self.stream, flush=True)  # fmt: skip

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    """``1h02m``, ``3m05s``, ``12s``; ``?`` when unknown.

    >>> _duration(3725), _duration(185), _duration(12.4), _duration(float("nan"))
    ('1h02m', '3m05s', '12s', '?')
    """
    if seconds != seconds:
        return "?"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
