"""Loading a checkpoint never runs code: crafted payloads through `export`, `load_from` and resume.

Each payload would create a marker file if it ran. Every crafted checkpoint carries a
manifest consistent with the payload (an attacker can write one: checksums are
integrity, not authenticity), so what refuses it is the allow-list unpickler or
``weights_only`` loading, not the checksum. Each command must fail with exit status 2
and one line naming the crafted file, and the marker must not exist.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import pickle
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch

from torchrec_app.cli import main as cli_main
from torchrec_app.training.checkpoint import latest_checkpoint, write_manifest

DCP_FS = "torch.distributed.checkpoint.filesystem"


# -- payloads (hand-assembled pickles; protocol 4 resolves dotted names in find_class) ----

def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _bytes(data: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(data)) + data


PROTO4, TUPLE1, TUPLE2, REDUCE, STOP = b"\x80\x04", b"\x85", b"\x86", b"R", b"."


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def os_system_reduce(marker: Path) -> bytes:
    """The textbook payload: ``os.system`` via ``__reduce__``."""
    return pickle.dumps(_RunsShell(marker))


def methodcaller_chain(marker: Path) -> bytes:
    """``methodcaller("load")(pickle.Unpickler(io.BytesIO(inner)))``, every name reached as a
    dotted name under a DCP module (262 bytes: the issue's payload)."""
    inner = os_system_reduce(marker)
    return (PROTO4 + _global(DCP_FS, "operator.methodcaller") + _str("load") + TUPLE1 + REDUCE
            + _global(DCP_FS, "pickle.Unpickler") + _global(DCP_FS, "io.BytesIO") + _bytes(inner) + TUPLE1 + REDUCE
            + TUPLE1 + REDUCE + TUPLE1 + REDUCE + STOP)


def file_io(marker: Path) -> bytes:
    """``io.FileIO(marker, "w")`` through a DCP module: creates or truncates any file."""
    return PROTO4 + _global(DCP_FS, "io.FileIO") + _str(str(marker)) + _str("w") + TUPLE2 + REDUCE + STOP


def dotted_builtins(marker: Path) -> bytes:
    """``exec`` reached as the dotted builtins name ``print.__self__.exec``."""
    return PROTO4 + _global("builtins", "print.__self__.exec") + _str(f"open({str(marker)!r}, 'w').close()") \
        + TUPLE1 + REDUCE + STOP


def builtins_through_dcp_globals(marker: Path) -> bytes:
    """``exec`` from the ``__builtins__`` of a DCP module's globals, via attrgetter/itemgetter."""
    return (PROTO4 + _global(DCP_FS, "operator.itemgetter") + _str("exec") + TUPLE1 + REDUCE
            + _global(DCP_FS, "operator.itemgetter") + _str("__builtins__") + TUPLE1 + REDUCE
            + _global(DCP_FS, "operator.attrgetter") + _str("__init__.__globals__") + TUPLE1 + REDUCE
            + _global(DCP_FS, "FileSystemReader") + TUPLE1 + REDUCE + TUPLE1 + REDUCE + TUPLE1 + REDUCE
            + _str(f"open({str(marker)!r}, 'w').close()") + TUPLE1 + REDUCE + STOP)


METADATA_PAYLOADS = [os_system_reduce, methodcaller_chain, file_io, dotted_builtins, builtins_through_dcp_globals]


def _torch_saved_payload(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save(_RunsShell(marker), buffer)
    return buffer.getvalue()


def _craft_metadata(checkpoint: Path, payload: Callable[[Path], bytes], marker: Path) -> Path:
    """Replace ``.metadata`` with ``payload``; return the file the error must name."""
    (checkpoint / ".metadata").write_bytes(payload(marker))
    write_manifest(checkpoint)
    return checkpoint / ".metadata"


def _craft_entry(checkpoint: Path, is_target: Callable[[str], bool], marker: Path) -> Path:
    """Point one stored entry (a tensor slice or a plain value) at a ``torch.save``d payload
    appended to its data file; return that file."""
    metadata = pickle.loads((checkpoint / ".metadata").read_bytes())  # our own fresh checkpoint: trusted
    index = next(i for i in sorted(metadata.storage_data, key=lambda i: i.fqn) if is_target(i.fqn))
    info = metadata.storage_data[index]
    data_file = checkpoint / info.relative_path
    payload = _torch_saved_payload(marker)
    offset = data_file.stat().st_size
    with open(data_file, "ab") as f:
        f.write(payload)
    metadata.storage_data[index] = dataclasses.replace(info, offset=offset, length=len(payload))
    (checkpoint / ".metadata").write_bytes(pickle.dumps(metadata))
    write_manifest(checkpoint)
    return data_file


def _is_dense_tensor(fqn: str) -> bool:
    return fqn.startswith("model.") and "over_arch" in fqn


def _is_plain_value(fqn: str) -> bool:
    return fqn == "progress.step"


# -- running the command line ----------------------------------------------------------

def cli(args: list[str]) -> tuple[int, str]:
    """Run ``torchrec-app ARGS`` in this process (a single-process run); return exit status and stderr."""
    saved = dict(os.environ)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            code = cli_main(args)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return code, err.getvalue()


def assert_refused(code: int, stderr: str, command: str, file: Path, marker: Path) -> None:
    assert not marker.exists(), "the payload ran"
    assert code == 2, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    assert last.startswith(f"torchrec-app {command}: error: {file}:"), stderr[-2000:]
    assert "refusing to load it (it could run code)" in last


@pytest.fixture(scope="module")
def base_run(tiny_dataset, tmp_path_factory) -> Path:
    """A real single-process run with checkpoints at steps 1 and 2."""
    out = tmp_path_factory.mktemp("secure") / "run"
    code, stderr = cli(["train", "--recipe", "tiny", "--data", str(tiny_dataset), "--out", str(out),
                        "train.max_steps=2", "checkpoint.every=1"])
    assert code == 0, stderr[-3000:]
    return out


def _crafted_copy(base_run: Path, where: Path) -> Path:
    shutil.copytree(latest_checkpoint(base_run / "checkpoints"), where)
    return where


def _commands(base_run: Path, data: Path, tmp: Path, checkpoint: Path) -> dict[str, tuple[str, list[str]]]:
    return {
        "export": ("export", ["export", "--checkpoint", str(checkpoint), "--out", str(tmp / "model.pt")]),
        "load_from": ("train", ["train", "--recipe", "tiny", "--data", str(data), "--out", str(tmp / "fresh"),
                                f"checkpoint.load_from={checkpoint}", "train.max_steps=1"]),
        "resume": ("train", ["train", "--recipe", "tiny", "--data", str(data), "--out", str(base_run),
                             "train.max_steps=3"]),
    }


def _where(entry: str, base_run: Path, tmp: Path) -> tuple[Path, Path]:
    """(run dir the command uses, crafted checkpoint path): resume crafts the run's newest checkpoint."""
    if entry == "resume":
        run = tmp / "run"
        shutil.copytree(base_run, run)
        return run, run / "checkpoints" / "step_00000099"
    return base_run, tmp / "crafted"


@pytest.mark.parametrize("entry", ["export", "load_from", "resume"])
@pytest.mark.parametrize("payload", METADATA_PAYLOADS, ids=lambda p: p.__name__)
def test_crafted_metadata_never_runs(base_run, tiny_dataset, tmp_path, entry, payload):
    marker = tmp_path / "marker"
    run, where = _where(entry, base_run, tmp_path)
    file = _craft_metadata(_crafted_copy(base_run, where), payload, marker)
    command, args = _commands(run, tiny_dataset, tmp_path, where)[entry]
    code, stderr = cli(args)
    assert_refused(code, stderr, command, file, marker)


@pytest.mark.parametrize("entry", ["export", "load_from", "resume"])
def test_payload_in_a_tensor_slice_never_runs(base_run, tiny_dataset, tmp_path, entry):
    marker = tmp_path / "marker"
    run, where = _where(entry, base_run, tmp_path)
    file = _craft_entry(_crafted_copy(base_run, where), _is_dense_tensor, marker)
    command, args = _commands(run, tiny_dataset, tmp_path, where)[entry]
    code, stderr = cli(args)
    assert_refused(code, stderr, command, file, marker)
    assert "GLOBAL posix.system" in stderr or "GLOBAL os.system" in stderr


def test_payload_in_a_plain_value_never_runs(base_run, tiny_dataset, tmp_path):
    """Resume reads every plain value (the run's position): the payload is refused."""
    marker = tmp_path / "marker"
    run, where = _where("resume", base_run, tmp_path)
    file = _craft_entry(_crafted_copy(base_run, where), _is_plain_value, marker)
    command, args = _commands(run, tiny_dataset, tmp_path, where)["resume"]
    code, stderr = cli(args)
    assert_refused(code, stderr, command, file, marker)
    assert "progress.step" in stderr


def test_load_from_never_reads_the_runs_plain_values(base_run, tiny_dataset, tmp_path):
    """load_from takes model and optimizer state only (export: model only), so a payload in the
    run's position is never read: nothing runs, and the weights load."""
    marker = tmp_path / "marker"
    run, where = _where("load_from", base_run, tmp_path)
    _craft_entry(_crafted_copy(base_run, where), _is_plain_value, marker)
    for entry in ("load_from", "export"):
        code, stderr = cli(_commands(run, tiny_dataset, tmp_path, where)[entry][1])
        assert code == 0, stderr[-2000:]
        assert not marker.exists(), "the payload ran"


def test_tampered_newest_checkpoint_stops_resume_instead_of_falling_back(base_run, tiny_dataset, tmp_path):
    # A damaged checkpoint is skipped (see test_checkpoint_integrity); a tampered one is an
    # attack, so resume stops rather than quietly continuing from the older checkpoint.
    marker = tmp_path / "marker"
    run, where = _where("resume", base_run, tmp_path)
    _craft_metadata(_crafted_copy(base_run, where), methodcaller_chain, marker)
    code, stderr = cli(_commands(run, tiny_dataset, tmp_path, where)["resume"][1])
    assert code == 2 and not marker.exists()
    assert not (run / "checkpoints" / "step_00000003").exists()  # nothing trained, nothing written


@pytest.mark.parametrize("entry", ["export", "load_from", "resume"])
def test_methodcaller_chain_through_the_real_command(base_run, tiny_dataset, tmp_path, entry):
    """The issue's 262-byte payload, through ``python -m torchrec_app`` in a fresh process."""
    marker = tmp_path / "marker"
    run, where = _where(entry, base_run, tmp_path)
    file = _craft_metadata(_crafted_copy(base_run, where), methodcaller_chain, marker)
    assert len(methodcaller_chain(marker)) < 400
    command, args = _commands(run, tiny_dataset, tmp_path, where)[entry]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    proc = subprocess.run([sys.executable, "-m", "torchrec_app", *args], capture_output=True, text=True,
                          env=env, timeout=300)
    assert_refused(proc.returncode, proc.stderr, command, file, marker)
