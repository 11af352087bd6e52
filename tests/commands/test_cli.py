"""The command line behaves like the tools users know: flags and overrides in any order, each
command showing only its flags, fast help, documented config, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from torchrec_app.cli import COMMANDS, command_parser, main, parse_command_line

ROOT = Path(__file__).resolve().parents[2]


def test_overrides_may_come_before_and_after_flags():
    args = parse_command_line(["train", "--recipe", "default", "model.name=dlrm", "--data", "D", "train.max_steps=5"])
    assert args.recipe == "default" and args.data == "D" and args.overrides == ["model.name=dlrm", "train.max_steps=5"]
    args = parse_command_line(["preprocess", "--train", "a.txt", "b.txt", "preprocess.min_frequency=3", "--out", "O"])
    assert args.train == ["a.txt", "b.txt"] and args.overrides == ["preprocess.min_frequency=3"] and args.out == "O"


@pytest.mark.parametrize("command,absent", [("generate", ["--data"]), ("export", ["--recipe", "--data"]),
                                            ("explain", ["--recipe"]), ("preprocess", ["--data"])])
def test_each_command_lists_only_the_flags_it_uses(command, absent):
    text = command_parser(command).format_help()
    assert all(flag not in text for flag in absent), text
    assert "--verbose" in text


def _imports_torch(code: str) -> bool:
    probe = f"import sys\n{code}\nprint('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1] == "True"


def test_help_and_plan_diff_never_load_torch(tmp_path):
    """Answering in well under 2 s means not importing torch / torchrec (10-20 s on a busy machine)."""
    assert not _imports_torch("from torchrec_app.cli import main\nfor c in " + repr(list(COMMANDS))
                              + ":\n    __import__('torchrec_app.cli').cli.command_parser(c).format_help()\nmain(['--help'])")
    plan = {"format": "torchrec_app.plan", "version": 1, "fits": True, "plan": {"m": {"t_a": {
        "sharding_type": "table_wise", "compute_kernel": "fused", "ranks": [0],
        "shards": [{"offsets": [0, 0], "sizes": [10, 4], "placement": "rank:0/cpu"}]}}}, "ranks": [], "tables": []}
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(plan))
    plan["plan"]["m"]["t_a"]["ranks"] = [1]
    plan["plan"]["m"]["t_a"]["shards"][0]["placement"] = "rank:1/cpu"
    b.write_text(json.dumps(plan))
    assert not _imports_torch(f"from torchrec_app.cli import main\nassert main(['plan', '--diff', {str(a)!r}, {str(b)!r}]) == 0")


def test_show_config_documents_every_field(capsys):
    assert main(["show-config", "--recipe", "default"]) == 0
    out = capsys.readouterr().out
    assert "train.evals_per_epoch = 4" in out and "validate this many times per epoch" in out.lower()
    assert main(["show-config", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "cap on the largest tables" in listing  # the whole description, not its first line


def test_a_missing_dataset_is_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["train", "--recipe", "tiny", "--data", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("torchrec-app train: error: ") and "nope" in err[0]
