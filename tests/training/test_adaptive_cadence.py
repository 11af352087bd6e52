"""train.eval_adaptive: on a planted validation curve (a U-shaped logloss with known noise), the
adaptive cadence finds a best step whose true loss is within the noise of the best that validating
after every step finds, stops earlier than the fixed cadence it starts from, restores the best
state through the real checkpoint code, and rebuilds itself on resume."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from torchrec_app.config.schema import TrainConfig
from torchrec_app.models.task import Task
from torchrec_app.training.validator import Validator

NOISE = 5e-4  # standard deviation of the planted validation noise
MAX_STEPS = 400


def true_logloss(step: int) -> float:
    """Falls fast, flattens, then rises (overfitting): the minimum is at step 139 (0.4469)."""
    return 0.44 + 0.08 * math.exp(-step / 50) + 1e-4 * max(0, step - 120)


class Weights(nn.Module):
    """Stands for the model: its one parameter is the step it was trained to, so a restored state shows its step."""

    def __init__(self) -> None:
        super().__init__()
        self.step = nn.Parameter(torch.zeros(()), requires_grad=False)


class PlantedEvaluator:
    """The validation logloss of the weights it is shown: the planted curve plus seeded noise."""

    def update(self, model: Weights, batch: object) -> None:
        self.step = int(model.step.item())

    def compute(self) -> dict[str, float]:
        noise = float(np.random.default_rng(self.step).normal(0.0, NOISE))
        return {"logloss": true_logloss(self.step) + noise, "rows": 1.0}


def _train(tmp_path, name: str, **train) -> tuple[Validator, Weights, int]:
    """Step to MAX_STEPS the way the trainer does (segments up to the next validation), stopping early if told."""
    config = replace(TrainConfig(), **train)
    validator = Validator(Task("planted", "criteo", None, None), config, PlantedEvaluator, lambda split: [None],
                          steps_per_epoch=MAX_STEPS, best_root=tmp_path / name, log=lambda message: None)  # fmt: skip
    model, step = Weights(), 0
    while step < MAX_STEPS and not validator.should_stop:
        step = min(MAX_STEPS, validator.next_due(step))
        model.step.fill_(step)
        if validator.is_due(step):
            validator.validate(model, step, 0, {})
    return validator, model, step


def test_adaptive_cadence_finds_the_dense_best_within_noise_stops_earlier_and_restores_it(tmp_path):
    dense, _, _ = _train(tmp_path, "dense", eval_every=1, early_stop_patience=MAX_STEPS, restore_best=False)
    fixed, _, fixed_stop = _train(tmp_path, "fixed", eval_every=40, early_stop_patience=2)
    adaptive, model, adaptive_stop = _train(tmp_path, "adaptive", eval_every=40, early_stop_patience=2, eval_adaptive=True)

    assert fixed.should_stop and adaptive.should_stop
    assert adaptive_stop < fixed_stop
    assert true_logloss(adaptive.best_step) - true_logloss(dense.best_step) <= 2 * NOISE
    steps = [r["step"] for r in adaptive.history]
    assert steps[:3] == [40, 80, 120] and min(b - a for a, b in zip(steps, steps[1:])) == 10  # denser, down to 40 // 4

    final = adaptive.final_metrics(model, adaptive_stop, ["valid"])
    assert int(model.step.item()) == adaptive.best_step != adaptive_stop  # the best state, read back from <run>/best
    assert final["valid"]["logloss"] == adaptive.best_value

    resumed = Validator(adaptive.task, adaptive.config, PlantedEvaluator, lambda split: [None], MAX_STEPS, tmp_path / "r",
                        log=lambda message: None)  # fmt: skip
    resumed.load_state_dict(adaptive.state_dict())
    assert resumed.next_due(adaptive_stop) == adaptive.next_due(adaptive_stop)
    assert resumed.adaptive.interval == adaptive.adaptive.interval == 10
