"""Vocabulary ids from dictionary-encoded text: the same dataset as mapping every parsed id.

The vocabulary pass decodes each block's distinct id strings only (``encode_hex``); these
tests hold it to the straightforward path (``parse_hex`` of every value, counts over the
train file, ``Vocabulary.lookup`` of every id), including ids written two ways (``ab`` and
``000000AB``), missing values and multi-hot bags.
"""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.data.conftest import preprocess, write_lines
from torchrec_app.config.data import GeneratorConfig, PreprocessConfig
from torchrec_app.data import criteo_format as fmt_
from torchrec_app.data.generate import generate_dataset
from torchrec_app.data.preprocess.write import parquet_schema, rows_to_table
from torchrec_app.data.vocab import Counts, Vocabulary


@pytest.mark.parametrize(
    "values, missing_is_error",
    [
        ([b"68fd1e64", b"", b"000000ff", b"68fd1e64", b""], False),  # 8 digits or missing
        ([b"ab", b"000000AB", b"00ab", b"AB", b"ffffffffffffffff", b"0"], False),  # one id written four ways
        ([b"1", None, b"2"], False),  # null: missing
        ([b"68fd1e64", b"68FD1E64"], True),
    ],
)
def test_encoded_ids_decode_to_the_parsed_ids(values, missing_is_error):
    array = pa.array(values, pa.binary())
    encoded = fmt_.encode_hex(array, missing_is_error=missing_is_error)
    assert encoded.decode().tolist() == fmt_.parse_hex(array, missing_is_error=missing_is_error).tolist()
    assert len(encoded.distinct) <= len(values)


@pytest.mark.parametrize("values", [[b"68fd1e64", b"68fd1e6z"], [b"12", b"x"], [b"68fd1e64", b""], [b"1234567890abcdef0"]])
def test_encoded_ids_reject_what_parsing_rejects(values):
    array = pa.array(values, pa.binary())
    missing_is_error = b"" in values
    assert fmt_.parse_hex(array, missing_is_error=missing_is_error) is None
    assert fmt_.encode_hex(array, missing_is_error=missing_is_error) is None


def _reference(paths: dict[str, str], config: PreprocessConfig) -> tuple[dict[str, pa.Table], dict[str, Vocabulary]]:
    """Each split's rows as the unstaged path maps them: every id parsed, counted and looked up."""
    parsed = {}
    for split, path in paths.items():
        fmt = fmt_.sniff_format(path)
        with open(path, "rb") as f:
            parsed[split] = fmt_.parse_block(f.read(), fmt, multi_hot=config.multi_hot, separator=config.multi_hot_separator)
    train = parsed["train"]
    vocabs = {feature: Vocabulary.build(Counts.of(train.raw_ids(f)), config.min_frequency)
              for f, feature in enumerate(fmt_.SPARSE_FEATURES)}  # fmt: skip
    schema = parquet_schema(config.multi_hot, pa.int32())
    return {split: rows_to_table(rows, config, vocabs, schema, "int32") for split, rows in parsed.items()}, vocabs


def _published(out_dir: str, meta) -> dict[str, pa.Table]:
    return {split: pa.concat_tables([pq.read_table(os.path.join(out_dir, f.path)) for f in entries])
            for split, entries in meta.files.items()}  # fmt: skip


def _spelled_differently(line: str, rng: np.random.Generator) -> str:
    """``line`` with some ids written another way: upper case, leading zeros dropped, or missing."""
    fields = line.split("\t")
    for i in rng.choice(np.arange(14, 40), size=6, replace=False):
        value = fields[i]
        fields[i] = [value.upper(), value.lstrip("0") or "0", ""][int(rng.integers(0, 3))] if value else value
    return "\t".join(fields)


@pytest.mark.parametrize("multi_hot", [False, True])
def test_the_staged_vocabulary_path_writes_the_dataset_of_the_plain_path(tmp_path, multi_hot):
    generate_dataset(str(tmp_path / "text"), GeneratorConfig(rows=3000, seed=5, max_cardinality=400))
    rng = np.random.default_rng(0)
    paths = {}
    for split in ("train", "valid", "test"):
        with open(tmp_path / "text" / f"{split}.txt") as f:
            lines = f.read().splitlines()
        lines = [_spelled_differently(line, rng) if k % 3 == 0 else line for k, line in enumerate(lines)]
        if multi_hot:  # bags: this row's id and the previous row's, so bags repeat ids across rows
            lines = [
                "\t".join(a if i < 14 or not a or not b else f"{a},{b}" for i, (a, b) in enumerate(zip(line.split("\t"), prev.split("\t"))))
                for line, prev in zip(lines, lines[-1:] + lines[:-1])
            ]  # fmt: skip
        paths[split] = write_lines(str(tmp_path / f"{split}.txt"), lines)
    config = PreprocessConfig(workers=1, min_frequency=2, multi_hot=multi_hot, block_bytes=60_000)
    meta = preprocess(tmp_path / "out", [paths["train"]], [paths["valid"]], [paths["test"]],
                      min_frequency=2, multi_hot=multi_hot, block_bytes=60_000)  # fmt: skip
    expected, vocabs = _reference(paths, config)
    published = _published(str(tmp_path / "out"), meta)
    assert sorted(published) == ["test", "train", "valid"]
    for split, table in expected.items():
        assert published[split].equals(table), split
    for feature, vocab in vocabs.items():
        saved = Vocabulary.load(os.path.join(tmp_path / "out", meta.vocab_dir, f"{feature}.parquet"))
        assert saved.ids.tolist() == vocab.ids.tolist() and saved.index.tolist() == vocab.index.tolist(), feature
    assert meta.num_embeddings == {f: v.num_embeddings for f, v in vocabs.items()}
