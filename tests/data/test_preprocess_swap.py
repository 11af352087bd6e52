"""A rerun of preprocess into a complete dataset: built beside it, swapped in only on success."""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from tests.data.conftest import make_line, preprocess, read_all, write_lines
from torchrec_app.config.data import PreprocessConfig
from torchrec_app.data.criteo_format import DataFormatError
from torchrec_app.data.metadata import load_metadata
from torchrec_app.data.preprocess import output, preprocess_dataset, run
from torchrec_app.data.splits import explicit_sources


def _snapshot(root) -> dict[str, str]:
    """sha256 of every file under ``root`` by relative path."""
    out = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            out[os.path.relpath(path, root)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


def _rows(tmp_path, name: str, n: int, first: int = 0, bad_at: int | None = None) -> str:
    lines = [make_line(dense=[str(first + i)] + ["1"] * 12) for i in range(n)]
    if bad_at is not None:
        lines[bad_at] = make_line(dense=["inf"] + ["1"] * 12)
    return str(write_lines(tmp_path / name, lines))


def _firsts(out) -> list[int]:
    return [round(float(np.expm1(r[1][0]))) for r in read_all(str(out), "train", batch_size=64)]


def _builds(out) -> list[str]:
    return sorted(p for p in os.listdir(out) if p.startswith("build-"))


def test_a_failed_rerun_leaves_the_previous_dataset_byte_identical_and_loadable(tmp_path):
    out = tmp_path / "out"
    preprocess(out, [_rows(tmp_path, "a.txt", 50)], [_rows(tmp_path, "v.txt", 10, first=100)])
    before = _snapshot(out)
    rows_before = _firsts(out)
    with pytest.raises(DataFormatError, match="b.txt:30: field I1: expected an integer"):
        preprocess(out, [_rows(tmp_path, "b.txt", 60, first=1000, bad_at=29)], [_rows(tmp_path, "v.txt", 10, first=100)],
                   block_bytes=2000)  # fmt: skip
    after = _snapshot(out)
    assert {path: digest for path, digest in after.items() if path in before} == before  # nothing old changed or went
    assert all(path.startswith("build-") for path in set(after) - set(before))  # only the new, unpublished build
    assert _firsts(out) == rows_before and load_metadata(str(out)).split_rows == {"train": 50, "valid": 10}


def test_a_successful_rerun_replaces_the_dataset_and_deletes_the_old_and_abandoned_builds(tmp_path):
    out = tmp_path / "out"
    preprocess(out, [_rows(tmp_path, "a.txt", 50)])
    (old,) = _builds(out)
    with pytest.raises(DataFormatError):
        preprocess(out, [_rows(tmp_path, "bad.txt", 20, bad_at=3)])
    assert len(_builds(out)) == 2  # the abandoned one is kept until the next run
    (out / "notes.txt").write_text("the user's own file")
    meta = preprocess(out, [_rows(tmp_path, "c.txt", 40, first=500)])
    assert _firsts(out) == list(range(500, 540)) and meta.split_rows == {"train": 40}
    (new,) = _builds(out)
    assert new != old and all(entry.path.startswith(new + "/") for entries in meta.files.values() for entry in entries)
    assert (out / "notes.txt").read_text() == "the user's own file"


def test_a_rerun_with_the_same_inputs_resumes_the_unfinished_build(tmp_path, monkeypatch):
    out = tmp_path / "out"
    train = [_rows(tmp_path, f"t{i}.txt", 30, first=100 * i) for i in range(3)]
    preprocess(out, [_rows(tmp_path, "a.txt", 5)])
    before = _snapshot(out)
    original = run.convert_task
    done = []

    def failing_third(task, *args):
        if task.index == 2:
            raise KeyboardInterrupt("killed")
        done.append(task.index)
        return original(task, *args)

    monkeypatch.setattr(run, "convert_task", failing_third)
    with pytest.raises(KeyboardInterrupt):
        preprocess(out, train)
    assert {p: d for p, d in _snapshot(out).items() if p in before} == before and _firsts(out) == list(range(5))
    monkeypatch.setattr(run, "convert_task", original)
    logs = []
    meta = preprocess_dataset(str(out), explicit_sources({"train": train}), PreprocessConfig(workers=1),
                                                log=logs.append)  # fmt: skip
    assert any("resuming: 2 of 3 tasks already done" in line for line in logs)
    assert meta.split_rows == {"train": 90} and _firsts(out) == [100 * i + j for i in range(3) for j in range(30)]
    assert len(_builds(out)) == 1


def test_a_kill_after_the_swap_leaves_the_new_dataset_and_the_next_run_finishes_the_cleanup(tmp_path, monkeypatch):
    out = tmp_path / "out"
    preprocess(out, [_rows(tmp_path, "a.txt", 5)])
    (old,) = _builds(out)

    def killed(*args):
        raise KeyboardInterrupt("killed between the swap and the cleanup")

    monkeypatch.setattr(output, "copy_truth", killed)  # runs after the swap, before the cleanup
    new_inputs = [_rows(tmp_path, "b.txt", 7, first=10)]
    with pytest.raises(KeyboardInterrupt):
        preprocess(out, new_inputs)
    assert _firsts(out) == list(range(10, 17)) and old in _builds(out)  # the new one is published, the old not yet gone
    monkeypatch.undo()
    preprocess(out, new_inputs)
    assert old not in _builds(out) and len(_builds(out)) == 1 and _firsts(out) == list(range(10, 17))


def test_a_kill_before_the_swap_leaves_the_old_dataset(tmp_path, monkeypatch):
    out = tmp_path / "out"
    preprocess(out, [_rows(tmp_path, "a.txt", 5)])
    before = _snapshot(out)

    def killed(*args):
        raise KeyboardInterrupt("killed before the swap")

    monkeypatch.setattr(output, "save_metadata", killed)
    with pytest.raises(KeyboardInterrupt):
        preprocess(out, [_rows(tmp_path, "b.txt", 7, first=10)])
    assert {p: d for p, d in _snapshot(out).items() if p in before} == before and _firsts(out) == list(range(5))


def test_a_dataset_in_the_flat_layout_of_earlier_versions_is_replaced_cleanly(tmp_path):
    out = tmp_path / "out"
    meta = preprocess(out, [_rows(tmp_path, "a.txt", 5)])
    (build,) = _builds(out)
    for entry in os.listdir(out / build):  # move to OUT/train, OUT/vocab, OUT/_progress as earlier versions wrote
        shutil.move(str(out / build / entry), str(out / entry))
    os.rmdir(out / build)
    raw = json.load(open(out / "metadata.json"))
    raw["vocab_dir"] = "vocab"
    raw["files"] = {s: [{**e, "path": e["path"].split("/", 1)[1]} for e in entries] for s, entries in raw["files"].items()}
    (out / "metadata.json").write_text(json.dumps(raw))
    assert _firsts(out) == list(range(5)) and meta.split_rows == load_metadata(str(out)).split_rows
    (out / "mine").mkdir()
    preprocess(out, [_rows(tmp_path, "b.txt", 7, first=10)])
    assert sorted(os.listdir(out)) == [*_builds(out), "metadata.json", "mine"] and _firsts(out) == list(range(10, 17))
