"""From export to serving: raw Criteo rows scored through the saved vocabularies give the
trained model's own predictions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from torchrec_app.cli import main as cli_main
from torchrec_app.config.data import ReaderConfig
from torchrec_app.data.reader import read_batches
from torchrec_app.metrics.binary import roc_auc
from torchrec_app.tools.scoring import CTRScorer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exported(tiny_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("serve") / "run"
    assert cli_main(["train", "--recipe", "tiny", "--data", str(tiny_dataset), "--out", str(run), "train.batch_size=256", "train.epochs=2"]) == 0
    assert cli_main(["export", "--run", str(run), "--out", str(run / "model.pt")]) == 0
    return run


def test_raw_rows_score_like_the_preprocessed_rows(exported, tiny_dataset):
    scorer = CTRScorer.load(exported / "model.pt", exported, tiny_dataset)
    raw = (tiny_dataset.parent / "raw" / "valid.txt").read_text().splitlines()[:500]
    from_text = scorer.score_lines(raw)
    batch = next(iter(read_batches(str(tiny_dataset), "valid", batch_size=500, rank=0, world_size=1,
                                   config=ReaderConfig(max_ind_range=1000, prefetch_batches=0), shuffle=False, seed=0)))
    with torch.no_grad():
        _, output = scorer.model(batch)
    np.testing.assert_allclose(from_text, torch.sigmoid(output.predictions["label"]).numpy(), rtol=1e-5, atol=1e-6)
    labels = np.array([float(line.split("\t")[0]) for line in raw])
    assert roc_auc(from_text, labels) > 0.55  # the trained signal, not noise
    unlabeled = [line.split("\t", 1)[1] for line in raw[:20]]  # Kaggle test.txt rows: 39 fields
    np.testing.assert_allclose(scorer.score_lines(unlabeled), from_text[:20], rtol=1e-6)


def test_the_documented_example_runs(exported, tiny_dataset):
    rows = "".join((tiny_dataset.parent / "raw" / "test.txt").read_text().splitlines(keepends=True)[:5])
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "score_criteo_rows.py"), "--model",
                             str(exported / "model.pt"), "--run", str(exported), "--data", str(tiny_dataset)],
                            input=rows, capture_output=True, text=True, timeout=300, cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    probabilities = [float(x) for x in result.stdout.split()]
    assert len(probabilities) == 5 and all(0.0 < p < 1.0 for p in probabilities)
