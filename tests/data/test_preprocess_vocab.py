"""Vocabulary ids: the text is parsed once, staged rows are mapped, nothing staged is left behind."""

import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.data.conftest import make_line, preprocess, read_all, write_lines
from torchrec_app.config.data import PreprocessConfig
from torchrec_app.data import criteo_format
from torchrec_app.data.preprocess import preprocess_dataset, vocab_pass
from torchrec_app.data.splits import explicit_sources
from torchrec_app.data.vocab import Vocabulary


def _lines(n: int, seed: int, multi_hot: bool = False) -> list[str]:
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        ids = [",".join(f"{v:x}" for v in rng.integers(0, 40, rng.integers(0, 4))) if multi_hot else f"{rng.integers(0, 40):08x}"
               for _ in range(26)]  # fmt: skip
        lines.append(make_line(label=str(i % 2), dense=[str(i)] + ["1"] * 12, sparse=ids))
    return lines


def test_the_text_is_parsed_once_and_no_staged_file_is_left(tmp_path, monkeypatch):
    train = write_lines(tmp_path / "train.txt", _lines(3000, 0))
    valid = write_lines(tmp_path / "valid.txt", _lines(500, 1))
    blocks = {"parsed": 0}
    original = criteo_format.parse_block

    def counting(*args, **kwargs):
        blocks["parsed"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(criteo_format, "parse_block", counting)
    meta = preprocess(tmp_path / "out", [str(train)], [str(valid)], block_bytes=50_000)
    expected = sum(-(-os.path.getsize(p) // 50_000) for p in (train, valid))  # blocks of whole lines, at most this many
    assert 0 < blocks["parsed"] <= expected
    build = tmp_path / "out" / meta.vocab_dir.split("/")[0]
    assert not (build / "_staged").exists() and not list(build.glob("_progress/staged-*"))
    assert not list((tmp_path / "out").rglob("*.arrow*")) and not list((tmp_path / "out").rglob("*.tmp*"))


@pytest.mark.parametrize("multi_hot", [False, True])
def test_mixed_strategies_map_every_id_like_the_saved_vocabularies(tmp_path, multi_hot):
    lines = _lines(400, 2, multi_hot)
    train = write_lines(tmp_path / "train.txt", lines[:300])
    valid = write_lines(tmp_path / "valid.txt", lines[300:])
    strategies = {f"C{i}": "hash" for i in range(1, 27, 3)}
    meta = preprocess(tmp_path / "out", [str(train)], [str(valid)], multi_hot=multi_hot, feature_strategies=strategies,
                      hash_size=7, min_frequency=2, block_bytes=8_000)  # fmt: skip
    for split, text in (("train", lines[:300]), ("valid", lines[300:])):
        rows = read_all(str(tmp_path / "out"), split, batch_size=64)
        assert len(rows) == len(text)
        for f, feature in enumerate(meta.sparse_features):
            raw = [[int(v, 16) for v in line.split("\t")[14 + f].split(",") if v] or ([] if multi_hot else [0]) for line in text]
            if feature in strategies:
                expected = [[v % 7 for v in bag] for bag in raw]
            else:
                vocab = Vocabulary.load(os.path.join(tmp_path / "out", meta.vocab_dir, f"{feature}.parquet"))
                expected = [vocab.lookup(np.array(bag, np.uint64)).tolist() for bag in raw]
            assert [r[2][f] for r in rows] == expected, (split, feature)


def test_a_kill_in_the_vocabulary_pass_resumes_the_parsed_tasks(tmp_path, monkeypatch):
    train = [str(write_lines(tmp_path / f"t{i}.txt", _lines(200, 10 + i))) for i in range(3)]
    sources = explicit_sources({"train": train})
    original = vocab_pass.stage_task

    def killed_at_third(task, *args):
        if task.index == 2:
            raise KeyboardInterrupt("killed")
        return original(task, *args)

    monkeypatch.setattr(vocab_pass, "stage_task", killed_at_third)
    with pytest.raises(KeyboardInterrupt):
        preprocess_dataset(str(tmp_path / "out"), sources, PreprocessConfig(workers=1), log=lambda *a: None)
    monkeypatch.undo()
    logs = []
    meta = preprocess_dataset(str(tmp_path / "out"), sources, PreprocessConfig(workers=1), log=logs.append)
    assert any("resuming: 2 of 3 tasks already parsed" in line for line in logs)
    fresh = preprocess_dataset(str(tmp_path / "fresh"), sources, PreprocessConfig(workers=1), log=lambda *a: None)
    assert meta.num_embeddings == fresh.num_embeddings
    assert read_all(str(tmp_path / "out"), "train", batch_size=128) == read_all(str(tmp_path / "fresh"), "train", batch_size=128)
    for entries in meta.files.values():
        for entry in entries:
            assert pq.ParquetFile(tmp_path / "out" / entry.path).metadata.num_rows == entry.rows
