import gzip
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.data.conftest import TINY_CSV, TINY_TSV, make_line, preprocess, read_all, reference_rows, write_lines
from torchrec_app.cli import main as cli_main
from torchrec_app.config.data import GeneratorConfig, PreprocessConfig
from torchrec_app.data.criteo_format import DataFormatError
from torchrec_app.data.generate import generate_dataset
from torchrec_app.data.metadata import load_metadata
from torchrec_app.data.preprocess import count_rows, preprocess_dataset
from torchrec_app.data.preprocess.write import PartWriter
from torchrec_app.data.splits import policy_sources
from torchrec_app.data.vocab import Vocabulary

QUIET = dict(log=lambda *a: None)


def test_tsv_round_trip_keeps_every_value(tmp_path):
    meta = preprocess(tmp_path / "out", [TINY_TSV], id_strategy="hash", hash_size=2**40)
    expected = reference_rows(TINY_TSV)
    rows = read_all(str(tmp_path / "out"), "train", batch_size=5)
    assert len(rows) == len(expected) == meta.split_rows["train"]
    for (label, dense, ids), (e_label, e_dense, e_ids) in zip(rows, expected):
        assert label == e_label
        assert np.array_equal(np.array(dense, np.float32), np.array(e_dense, np.float32))  # exact transform
        assert [i[0] for i in ids] == [0 if v is None else v for v in e_ids]  # missing one-hot -> raw id 0
    assert any(v is None for _, _, e in expected for v in e) and any(d[1] == 0 for _, d, _ in expected)


def test_vocab_ids_map_through_saved_vocabularies(tmp_path):
    out = tmp_path / "out"
    meta = preprocess(out, [TINY_TSV])
    expected = reference_rows(TINY_TSV)
    rows = read_all(str(out), "train")
    for f, feature in enumerate(meta.sparse_features):
        vocab = Vocabulary.load(os.path.join(out, meta.vocab_dir, f"{feature}.parquet"))
        raw = np.array([0 if e[2][f] is None else e[2][f] for e in expected], np.uint64)
        assert [r[2][f][0] for r in rows] == vocab.lookup(raw).tolist()
        assert meta.num_embeddings[feature] == vocab.num_embeddings == len(np.unique(raw)) + 1
        assert min(r[2][f][0] for r in rows) >= 1  # every train id kept at min_frequency=1


def test_csv_with_header_gives_the_same_dataset_as_tsv(tmp_path):
    preprocess(tmp_path / "tsv", [TINY_TSV])
    meta = preprocess(tmp_path / "csv", [TINY_CSV])
    assert meta.split_rows == {"train": 24}
    assert read_all(str(tmp_path / "csv"), "train") == read_all(str(tmp_path / "tsv"), "train")


def test_vocab_threshold_uses_train_only(tmp_path):
    ids = lambda first: [first] + [f"{0x1000 + i:08x}" for i in range(1, 26)]  # noqa: E731
    train = write_lines(tmp_path / "train.txt", [make_line(sparse=ids(v)) for v in ["000000aa"] * 3 + ["000000bb"]])
    valid = write_lines(tmp_path / "valid.txt", [make_line(sparse=ids(v)) for v in ["000000aa", "000000bb", "000000cc"] * 4])
    meta = preprocess(tmp_path / "out", [str(train)], [str(valid)], min_frequency=2)
    assert meta.num_embeddings["C1"] == 2  # aa kept, bb rare -> reserved 0
    got = [r[2][0][0] for r in read_all(str(tmp_path / "out"), "valid")]
    assert got == [1, 0, 0] * 4  # cc (valid only, frequent there) is still unseen
    vocab = Vocabulary.load(os.path.join(tmp_path, "out", meta.vocab_dir, "C1.parquet"))
    assert dict(zip(vocab.ids.tolist(), vocab.counts.tolist())) == {0xAA: 3, 0xBB: 1}


def _numbered(path, n, gz=False):
    """Rows whose I1 is the row number (to see where each row went)."""
    lines = [make_line(dense=[str(i)] + ["1"] * 12) for i in range(n)]
    if gz:
        with gzip.open(path, "wt") as f:
            f.write("".join(line + "\n" for line in lines))
        return str(path)
    return str(write_lines(path, lines))


def _row_numbers(out, split):
    return [round(float(np.expm1(r[1][0]))) for r in read_all(str(out), split)]


def test_kaggle_days_split(tmp_path):
    path = _numbered(tmp_path / "train.txt", 70)
    sources = policy_sources("kaggle_days", [path], 0, count_rows)
    meta = preprocess_dataset(str(tmp_path / "out"), sources, PreprocessConfig(workers=1), split_policy="kaggle_days", **QUIET)
    assert meta.split_rows == {"train": 60, "valid": 5, "test": 5}
    assert _row_numbers(tmp_path / "out", "train") == list(range(60))
    assert _row_numbers(tmp_path / "out", "valid") == list(range(60, 65))
    assert _row_numbers(tmp_path / "out", "test") == list(range(65, 70))


def test_criteo_1tb_days_split(tmp_path):
    files = [_numbered(tmp_path / "day_0.gz", 5, gz=True), _numbered(tmp_path / "day_1", 4), _numbered(tmp_path / "day_23", 6)]
    sources = policy_sources("criteo_1tb_days", files, 0, count_rows)
    meta = preprocess_dataset(str(tmp_path / "out"), sources, PreprocessConfig(workers=1), split_policy="criteo_1tb_days", **QUIET)
    assert meta.split_rows == {"train": 9, "valid": 3, "test": 3}
    assert _row_numbers(tmp_path / "out", "valid") == [0, 1, 2] and _row_numbers(tmp_path / "out", "test") == [3, 4, 5]
    with pytest.raises(ValueError, match="day_0 .. day_23"):
        policy_sources("criteo_1tb_days", [str(tmp_path / "train.txt")], 0, count_rows)


def test_random_split_is_8_1_1_and_seeded(tmp_path):
    path = _numbered(tmp_path / "all.txt", 3000)
    results = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        config = PreprocessConfig(workers=1, split_seed=seed, block_bytes=20_000)  # many blocks
        sources = policy_sources("random", [path], seed, count_rows)
        meta = preprocess_dataset(str(tmp_path / name), sources, config, split_policy="random", **QUIET)
        results.append(_row_numbers(tmp_path / name, "valid"))
    assert results[0] == results[1] != results[2]
    assert abs(meta.split_rows["train"] - 2400) < 120 and abs(meta.split_rows["valid"] - 300) < 60
    assert sum(meta.split_rows.values()) == 3000


@pytest.mark.parametrize(
    "line_fn, where",
    [
        (lambda: make_line()[: make_line().rindex("\t")], ":3: expected 40 fields"),
        (lambda: make_line(dense=["1.5"] + ["1"] * 12), ":3: field I1: expected an integer"),
        (lambda: make_line(dense=["1"] * 5 + ["abc"] + ["1"] * 7), ":3: field I6: expected an integer"),
        (lambda: make_line(sparse=["1234abcd"] * 7 + ["xyz"] + ["1234abcd"] * 18), ":3: field C8: expected a hex id"),
        (lambda: make_line(label="2"), ":3: field label: expected 0 or 1"),
    ],
)
def test_bad_rows_are_named_by_file_line_and_field(tmp_path, line_fn, where):
    path = write_lines(tmp_path / "bad.txt", [make_line(), make_line(), line_fn(), make_line()])
    with pytest.raises(DataFormatError) as err:
        preprocess(tmp_path / "out", [str(path)])
    assert f"{path}{where}" in str(err.value)
    assert not os.path.exists(tmp_path / "out" / "metadata.json")


def test_bad_row_far_into_a_file_names_its_line(tmp_path):
    lines = [make_line()] * 5000
    lines[4321] = make_line(sparse=["1234abcd"] * 25 + ["nothex!!"])
    path = write_lines(tmp_path / "big.txt", lines)
    with pytest.raises(DataFormatError, match=f"{path}:4322: field C26"):
        preprocess(tmp_path / "out", [str(path)], block_bytes=50_000)


def test_truncated_gzip_empty_and_missing_files(tmp_path):
    path = tmp_path / "day.gz"
    with gzip.open(path, "wt") as f:
        f.write("".join(make_line() + "\n" for _ in range(3000)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match=f"{path}: the compressed stream is corrupt or truncated"):
        preprocess(tmp_path / "out", [str(path)])
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataFormatError, match=f"{empty}: the file is empty"):
        preprocess(tmp_path / "out", [str(empty)])
    with pytest.raises(DataFormatError, match=f"{tmp_path}/nope.txt: no such file"):
        preprocess(tmp_path / "out", [str(tmp_path / "nope.txt")])


def test_skip_mode_counts_bad_rows_and_still_fails_past_the_limit(tmp_path):
    lines = [make_line(dense=[str(i)] + ["1"] * 12) for i in range(20)]
    lines[3] = make_line(label="x")
    lines[7] = "1\t2"
    lines[11] = make_line(dense=["7.25"] + ["1"] * 12)
    path = write_lines(tmp_path / "bad.txt", lines)
    meta = preprocess(tmp_path / "out", [str(path)], on_bad_rows="skip", max_bad_rows=3)
    assert meta.bad_rows_skipped == 3 and meta.split_rows == {"train": 17}
    assert _row_numbers(tmp_path / "out", "train") == [i for i in range(20) if i not in (3, 7, 11)]
    with pytest.raises(DataFormatError, match="more than --max-bad-rows=2"):
        preprocess(tmp_path / "out2", [str(path)], on_bad_rows="skip", max_bad_rows=2)


def test_interrupted_run_leaves_no_complete_looking_output_and_rerun_completes(tmp_path, monkeypatch):
    text = tmp_path / "text"
    generate_dataset(str(text), GeneratorConfig(rows=3000, seed=2))
    out = tmp_path / "out"
    files = ([str(text / "train.txt")], [str(text / "valid.txt")], [str(text / "test.txt")])

    original = PartWriter.close
    calls = {"n": 0}

    def flaky_close(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated interruption")
        return original(self)

    monkeypatch.setattr(PartWriter, "close", flaky_close)
    with pytest.raises(KeyboardInterrupt):
        preprocess(out, *files, row_group_rows=500)
    assert not (out / "metadata.json").exists()
    with pytest.raises(FileNotFoundError, match="not a complete preprocessed dataset"):
        load_metadata(str(out))
    (build,) = out.glob("build-*")
    (build / "test").mkdir(exist_ok=True)
    (build / "test" / "part-00002.parquet.tmp").write_bytes(b"half a file")  # leftover of a killed writer
    monkeypatch.setattr(PartWriter, "close", original)
    meta = preprocess(out, *files, row_group_rows=500)
    assert meta.split_rows == {"train": 2400, "valid": 300, "test": 300}
    assert not list(out.rglob("*.tmp"))
    assert read_all(str(out), "test", batch_size=300) == read_all(str(out), "test", batch_size=300)
    for split, entries in meta.files.items():
        for entry in entries:
            assert pq.ParquetFile(out / entry.path).metadata.num_rows == entry.rows


def test_metadata_and_truth_beside_the_data(generated):
    text, out = generated
    meta = load_metadata(out)
    assert meta.split_rows == {"train": 16000, "valid": 2000, "test": 2000}
    assert meta.dense_features == [f"I{i}" for i in range(1, 14)] and len(meta.sparse_features) == 26
    assert all(n >= 2 for n in meta.num_embeddings.values())
    assert {s["split"] for s in meta.sources} == {"train", "valid", "test"}
    assert all(s["bytes"] == os.path.getsize(s["path"]) for s in meta.sources)
    assert json.load(open(os.path.join(out, "truth.json"))) == json.load(open(os.path.join(text, "truth.json")))
    groups = pq.ParquetFile(os.path.join(out, meta.files["train"][0].path)).metadata
    assert groups.row_group(0).num_rows == 1000


def test_multi_hot_round_trip(tmp_path):
    text = tmp_path / "text"
    generate_dataset(str(text), GeneratorConfig(rows=300, seed=4, multi_hot=True))
    out = tmp_path / "out"
    meta = preprocess(out, [str(text / "train.txt")], [str(text / "valid.txt")], multi_hot=True, id_strategy="hash", hash_size=2**40)
    assert meta.multi_hot
    rows = read_all(str(out), "valid", batch_size=16)
    lines = open(text / "valid.txt").read().splitlines()
    assert len(rows) == len(lines) == 30
    for (label, _, ids), line in zip(rows, lines):
        fields = line.split("\t")
        assert label == float(fields[0])
        assert ids == [[int(v, 16) for v in field.split(",")] if field else [] for field in fields[14:]]


def test_cli_preprocess_and_generate(tmp_path, capsys):
    assert cli_main(["generate", "--rows", "500", "--out", str(tmp_path / "text"), "--seed", "1"]) == 0
    args = ["preprocess", "--input", str(tmp_path / "text" / "train.txt"), "--split", "random", "--out", str(tmp_path / "out"),
            "preprocess.min_frequency=2", "--workers", "1"]  # fmt: skip
    assert cli_main(args) == 0
    assert load_metadata(str(tmp_path / "out")).min_frequency == 2
    bad = write_lines(tmp_path / "bad.txt", [make_line(label="7")])
    assert cli_main(["preprocess", "--train", str(bad), "--out", str(tmp_path / "o2")]) == 1
    assert f"{bad}:1: field label" in capsys.readouterr().err


def test_parallel_workers_match_one_worker(tmp_path):
    text = tmp_path / "text"
    generate_dataset(str(text), GeneratorConfig(rows=4000, seed=9))
    files = [str(text / "train.txt"), str(text / "valid.txt")]
    sources = policy_sources("random", files, 1, count_rows)
    one = preprocess_dataset(str(tmp_path / "one"), sources, PreprocessConfig(workers=1), split_policy="random", **QUIET)
    two = preprocess_dataset(str(tmp_path / "two"), sources, PreprocessConfig(workers=2), split_policy="random", **QUIET)
    assert one.split_rows == two.split_rows and one.num_embeddings == two.num_embeddings
    assert read_all(str(tmp_path / "one"), "valid", batch_size=512) == read_all(str(tmp_path / "two"), "valid", batch_size=512)
