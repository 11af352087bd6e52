"""Side-by-side heatmaps of a cross layer's block scores: Frobenius norm vs per-dimension RMS."""

from __future__ import annotations

from pathlib import Path

from torchrec_app.tools.explain.blocks import BlockScores


def write_heatmaps(scores: BlockScores, path: Path, title: str = "") -> Path:
    """Write a PNG with ``||W_ij||_F`` (left) and ``||W_ij||_F / sqrt(e_i e_j)`` (right).

    Rows are output features ``i``, columns input features ``j``; tick labels carry each
    block's name and width.

    >>> import tempfile, torch
    >>> from torchrec_app.tools.explain.blocks import InputLayout, block_scores
    >>> scores = block_scores(torch.ones(6, 6), InputLayout.of(1, ["a", "b"], [1, 4]))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     (Path(tmp) / "x.png").exists() or write_heatmaps(scores, Path(tmp) / "x.png").stat().st_size > 0
    True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{name} ({width})" for name, width in zip(scores.layout.names, scores.layout.widths)]
    size = max(6.0, 0.28 * len(labels) + 2.5)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1.5, size), constrained_layout=True)
    panels = (
        (scores.plain, "plain: ||W_ij||_F"),
        (scores.normalized, "normalized: ||W_ij||_F / sqrt(e_i e_j)"),
    )
    for ax, (matrix, name) in zip(axes, panels):
        image = ax.imshow(matrix.numpy(), cmap="viridis")
        ax.set_title(name)
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel("input feature j")
        ax.set_ylabel("output feature i")
        fig.colorbar(image, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
