"""Training never ends quietly in NaN: the guard names the step and the tensor, nothing bad is saved."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from torchrec_app.cli import main as cli_main
from torchrec_app.training.checkpoint import latest_checkpoint
from torchrec_app.training.guard import NonFiniteGuard, TrainingDiverged


def strict_loads(text: str):
    """``json.loads`` that refuses ``NaN`` / ``Infinity`` (Python's parser accepts them; no other does)."""
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def _model_and_optimizer(guard_factory):
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    guard = guard_factory(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer.register_step_pre_hook(guard.check_gradients)
    return model, optimizer, guard


def test_a_non_finite_loss_is_reported_with_its_step():
    model, optimizer, guard = _model_and_optimizer(lambda m: NonFiniteGuard(m, torch.device("cpu")))
    for step, scale in enumerate([1.0, 1.0, float("nan"), 1.0], start=1):
        guard.observe(step, torch.tensor(scale))
        if step == 2:
            guard.check()  # nothing yet
    with pytest.raises(TrainingDiverged, match="the loss became non-finite at step 3"):
        guard.check()


def test_a_non_finite_dense_gradient_names_the_parameter():
    model, optimizer, guard = _model_and_optimizer(lambda m: NonFiniteGuard(m, torch.device("cpu")))
    for step in (1, 2):
        optimizer.zero_grad()
        x = torch.ones(4, 3) if step == 1 else torch.full((4, 3), float("inf"))
        loss = model(x).sum() * 0 if step == 2 else model(x).sum()
        loss.backward()
        optimizer.step()  # as in the loop: the step (gradient check inside), then the loss is observed
        guard.observe(step, loss.detach().nan_to_num())  # a finite loss: only the gradient is bad
    with pytest.raises(TrainingDiverged, match=r"a dense gradient became non-finite at step 2; first non-finite tensor: 0\.weight"):
        guard.check()


def test_a_diverging_run_stops_keeps_the_last_good_checkpoint_and_exits_non_zero(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli_main(["train", "--recipe", "tiny", "--data", str(tiny_dataset), "--out", str(out),
                         "optim.dense_lr=1e30", "optim.sparse_lr=1e30", "optim.dense=sgd", "optim.sparse=sgd",
                         "train.log_every=1", "checkpoint.every=1", "train.epochs=1"])  # fmt: skip
    message = [line for line in err.getvalue().splitlines() if line.strip()][-1]
    assert code == 1, err.getvalue()[-2000:]
    assert message.startswith("torchrec-app train: error: ") and "non-finite at step" in message
    bad_step = int(message.split("non-finite at step ")[1].split(";")[0])
    newest = latest_checkpoint(out / "checkpoints")
    assert newest is None or int(newest.name.split("_")[1]) < bad_step  # nothing saved from the bad step on
    for line in (out / "metrics.jsonl").read_text().splitlines():
        strict_loads(line)  # strict JSON, even with non-finite values around
    assert not (out / "summary.json").exists() or strict_loads((out / "summary.json").read_text())


def test_summary_files_are_strict_json(tmp_path: Path):
    from torchrec_app.training.run_dir import RunDir

    run = RunDir(tmp_path, enabled=True)
    run.write_json("summary.json", {"valid_auc": float("nan"), "history": [{"loss": float("inf")}]})
    run.log_metrics({"step": 1, "loss": float("nan")})
    assert strict_loads((tmp_path / "summary.json").read_text()) == {"history": [{"loss": None}], "valid_auc": None}
    assert strict_loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "loss": None}
