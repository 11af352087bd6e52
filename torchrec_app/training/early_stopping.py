"""Early stopping on validation logloss: stop once it has not improved for ``patience``
validations in a row, and remember where the best one was.

CTR models on Criteo-like data overfit after about one epoch (rare ids are memorised),
and when that happens depends on the data. Stopping on validation, not a tuned epoch
count, makes one recipe serve different datasets.
"""

from __future__ import annotations

import math


class EarlyStopping:
    """Tracks the best validation logloss and the validations since it.

    >>> stopper = EarlyStopping(patience=2)
    >>> [stopper.update(step, loss) for step, loss in [(10, 0.50), (20, 0.48), (30, 0.49), (40, 0.485)]]
    [True, True, False, False]
    >>> stopper.should_stop, stopper.best_step, stopper.best_logloss
    (True, 20, 0.48)
    """

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best_logloss = math.inf
        self.best_step: int | None = None
        self.since_best = 0

    def update(self, step: int, logloss: float) -> bool:
        """Record a validation; return True if it is the best so far."""
        if logloss < self.best_logloss - self.min_delta:
            self.best_logloss, self.best_step, self.since_best = logloss, step, 0
            return True
        self.since_best += 1
        return False

    @property
    def should_stop(self) -> bool:
        """True once ``patience`` validations in a row brought no improvement (never if patience is 0)."""
        return self.patience > 0 and self.since_best >= self.patience
