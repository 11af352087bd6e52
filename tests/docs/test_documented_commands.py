"""Docs that work when copied: every ``torchrec-app`` command in README.md and docs/*.md parses
(its flags exist for that command) and its recipe and overrides resolve to a valid config."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from torchrec_app.cli import COMMANDS, parse_command_line
from torchrec_app.config import resolve_config

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def documented_commands() -> list[tuple[str, str]]:
    """``(file:line, command)`` for each ``torchrec-app`` command in a code block or in backticks."""
    found = []
    for path in DOCS:
        lines = path.read_text().splitlines()
        in_block = False
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.strip().startswith("```"):
                in_block = not in_block
            elif in_block and line.strip().startswith("torchrec-app "):
                start, text = i, line.strip()
                while text.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    text = text[:-1] + " " + lines[i].strip()
                found.append((f"{path.name}:{start + 1}", text.split(" #")[0]))
            elif not in_block:
                found += [(f"{path.name}:{i + 1}", m) for m in re.findall(r"`(torchrec-app [^`]+)`", line)]
            i += 1
    return found


def _runnable(command: str) -> bool:
    """Commands with shell substitutions, elisions, ``N`` placeholders or prose are templates,
    not copy-paste commands."""
    return not any(mark in command for mark in ("$(", "...", "<", "[", "|", "(")) and " N" not in f"{command} "


COMMANDS_IN_DOCS = [c for c in documented_commands() if _runnable(c[1])]


def test_the_docs_show_commands():
    assert len(COMMANDS_IN_DOCS) >= 20


@pytest.mark.parametrize("where,command", COMMANDS_IN_DOCS, ids=[w for w, _ in COMMANDS_IN_DOCS])
def test_documented_command_parses_and_its_config_resolves(where, command):
    words = shlex.split(command)[1:]
    assert words and words[0] in COMMANDS, f"{where}: unknown command in {command!r}"
    if "--help" in words or "-h" in words:
        return
    args = parse_command_line(words)  # argparse exits (a failure here) on an unknown flag
    resolve_config(args.recipe, args.overrides)  # raises ConfigError on an unknown key or bad value


def documented_overrides() -> list[tuple[str, str]]:
    """``(file:line, override)`` for each ``section.key=value`` shown in backticks (shell quoting removed)."""
    found = []
    for path in DOCS:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            for text in re.findall(r"`([a-z_]+(?:\.[a-z_]+)+=[^`]*)`", line):
                found += [(f"{path.name}:{number}", word) for word in shlex.split(text) if "=" in word]
    return found


OVERRIDES_IN_DOCS = [o for o in documented_overrides()
                     if _runnable(o[1]) and not o[1].startswith("section.key=") and not re.search(r"=(N|value)$", o[1])]


@pytest.mark.parametrize("where,override", OVERRIDES_IN_DOCS, ids=[f"{w}:{o.split('=')[0]}" for w, o in OVERRIDES_IN_DOCS])
def test_documented_override_applies(where, override):
    from torchrec_app.config import AppConfig, apply_overrides

    apply_overrides(AppConfig(), [override])
