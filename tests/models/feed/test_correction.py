"""Negative downsampling's calibration correction recovers the full-rate probabilities (models/feed/correction.py)."""

from __future__ import annotations

import pytest
import torch

from torchrec_app.config.errors import ConfigError
from torchrec_app.models.feed.correction import any_positive, corrected_any_logit, corrected_logits, negative_keep_rate

CELLS = 40
#: per-objective rates when engaged / not engaged: click common, chat / hide / report rare
ENGAGED = torch.tensor([0.12, 0.06, 0.02, 0.002, 0.001])
IDLE = torch.tensor([0.02, 0.01, 0.0005, 0.008, 0.001])


def planted_world(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``CELLS`` feature cells with engagement probability ``g`` (a shared cause of every objective).

    Labels are independent given engagement, so the exact probabilities are
    ``p_k = g c_k + (1 - g) b_k`` and ``p_any = 1 - g prod(1 - c) - (1 - g) prod(1 - b)``.
    Returns ``g`` (``CELLS``), ``p`` (``CELLS x 5``), ``p_any`` (``CELLS``)."""
    g = torch.rand(CELLS, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 0.5
    g64, c, b = g[:, None], ENGAGED.double(), IDLE.double()
    p = g64 * c + (1 - g64) * b
    p_any = 1 - g * (1 - c).prod() - (1 - g) * (1 - b).prod()
    return g, p, p_any


def sample_rows(g: torch.Tensor, rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows`` impressions from the planted world: (cell ``rows``, labels ``rows x 5``)."""
    generator = torch.Generator().manual_seed(seed)
    cell = torch.randint(CELLS, (rows,), generator=generator)
    engaged = torch.rand(rows, generator=generator, dtype=torch.float64) < g[cell]
    rates = torch.where(engaged[:, None], ENGAGED.double(), IDLE.double())
    labels = (torch.rand(rows, 5, generator=generator, dtype=torch.float64) < rates).double()
    return cell, labels


@pytest.mark.parametrize("keep_rate", [0.01, 0.1, 0.5, 1.0])
def test_exact_sampled_probabilities_are_corrected_to_the_truth(keep_rate: float) -> None:
    """q = P(y | x, kept) computed exactly from p; the corrections give p back."""
    _, p, p_any = planted_world()
    kept = p_any + keep_rate * (1 - p_any)  # P(kept | x)
    q, q_any = p / kept[:, None], p_any / kept
    corrected = torch.sigmoid(corrected_logits(torch.logit(q), torch.logit(q_any), keep_rate))
    assert torch.allclose(corrected, p, rtol=1e-9, atol=0)
    assert torch.allclose(torch.sigmoid(corrected_any_logit(torch.logit(q_any), keep_rate)), p_any, rtol=1e-9)


def test_downsampled_fit_is_calibrated_after_correction_and_off_by_one_over_r_before() -> None:
    """Simulate the lever: sample, keep all positives and a fraction r of all-negative rows, fit q per
    cell (the exact maximum-likelihood fit of a per-cell model), then score a full-rate validation split."""
    keep_rate = 0.1
    g, p, p_any = planted_world()
    cell, labels = sample_rows(g, 600_000, seed=1)
    keep = (any_positive(labels) > 0) | (torch.rand(len(cell), generator=torch.Generator().manual_seed(2)) < keep_rate)
    cell, labels = cell[keep], labels[keep]
    count = torch.bincount(cell, minlength=CELLS).double()
    q = torch.stack([torch.bincount(cell, weights=labels[:, k], minlength=CELLS) for k in range(5)], dim=1) / count[:, None]
    q_any = torch.bincount(cell, weights=any_positive(labels), minlength=CELLS) / count
    eps = 1e-6  # a cell without positives of a rare objective would give logit -inf
    z, z_any = torch.logit(q.clamp(eps, 1 - eps)), torch.logit(q_any.clamp(eps, 1 - eps))
    corrected = torch.sigmoid(corrected_logits(z, z_any, keep_rate))
    # per cell: the fitted-and-corrected click probability is the truth up to sampling noise (~4% per cell)
    relative_error = (corrected[:, 0] / p[:, 0] - 1).abs()
    assert float(relative_error.mean()) < 0.05 and float(relative_error.max()) < 0.15

    valid_cell, valid_labels = sample_rows(g, 300_000, seed=3)  # the full-rate validation split
    observed = valid_labels.sum(dim=0)
    calibration_corrected = corrected[valid_cell].sum(dim=0) / observed
    calibration_sampled = q[valid_cell].sum(dim=0) / observed
    assert calibration_corrected.tolist() == pytest.approx([1.0] * 5, abs=0.08)
    # uncorrected, objective k is over-predicted by E[p_k / D] / E[p_k] with D = p_any + r (1 - p_any):
    # about 1 / r when all-negative rows dominate (here p_any ~ 8%, so ~1 / (r + p_any))
    inflation = (p / (p_any + keep_rate * (1 - p_any))[:, None]).sum(dim=0) / p.sum(dim=0)
    assert calibration_sampled.tolist() == pytest.approx(inflation.tolist(), rel=0.08)
    assert (calibration_sampled[2:] > 0.5 / keep_rate).all()


def test_corrected_logits_are_finite_at_extremes_and_keep_rate_is_read_from_metadata() -> None:
    z = torch.tensor([[-40.0, 0.0, 40.0]])
    out = corrected_logits(z, torch.tensor([40.0]), 0.05)
    assert torch.isfinite(out).all() and (out <= z).all()  # downsampling only ever lowers probabilities
    assert negative_keep_rate({"sampling": {"negative_keep_rate": 0.05}}) == 0.05
    with pytest.raises(ConfigError, match="data/x/metadata.json: extra.sampling.negative_keep_rate must be a number in"):
        negative_keep_rate({"sampling": {"negative_keep_rate": "half"}}, source="data/x/metadata.json")
