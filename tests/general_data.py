"""Small generated data for the general recommenders' tests: planted sequences -> sequences -> both user-item protocols."""

from __future__ import annotations

from pathlib import Path

from torchrec_app.cli import main as cli_main

GENERATE = ["generate_sequences.users=160", "generate_sequences.items=80", "generate_sequences.mean_len=16",
            "generate_sequences.max_len=40"]


def make_general_datasets(root: Path) -> dict[str, Path]:
    """``{"sequences": DIR, "general": DIR, "sequential": DIR}`` made by the command line (~2 s)."""
    assert cli_main(["generate", "--kind", "sequences", "--out", str(root / "raw"), *GENERATE]) == 0
    assert cli_main(["preprocess", "--kind", "sequences", "--recipe", "sasrec_tiny", "--input", str(root / "raw" / "ratings.dat"),
                     "--out", str(root / "sequences")]) == 0
    for protocol in ("general", "sequential"):
        assert cli_main(["preprocess", "--kind", "user_items", "--input", str(root / "sequences"), "--out", str(root / protocol),
                         f"user_items.protocol={protocol}"]) == 0
    return {name: root / name for name in ("sequences", "general", "sequential")}
