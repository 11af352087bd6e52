"""Raw feed files: Parquet and JSON Lines read alike; bad rows named by file, line / row and field."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.data.feed.conftest import generate, preprocess, split_table
from torchrec_app.data.criteo_format import DataFormatError
from torchrec_app.data.feed.formats import read_feed_file
from torchrec_app.data.feed.schema import RAW_SCHEMA


def _lines(table: pa.Table) -> list[dict]:
    return table.to_pylist()


def _write_jsonl(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_jsonl_and_parquet_make_the_same_dataset(tmp_path):
    as_parquet = generate(tmp_path / "pq", 1500)
    as_jsonl = generate(tmp_path / "jsonl", 1500, "generate_feed.format=jsonl")
    assert read_feed_file(str(as_jsonl / "train.jsonl")).table.equals(read_feed_file(str(as_parquet / "train.parquet")).table)
    assert preprocess(as_parquet, tmp_path / "out_pq") == 0
    assert preprocess(as_jsonl, tmp_path / "out_jsonl", ext="jsonl") == 0
    for split in ("train", "valid", "test"):
        assert split_table(tmp_path / "out_jsonl", split).equals(split_table(tmp_path / "out_pq", split))


@pytest.mark.parametrize(
    "edit, line, field",
    [
        (lambda r: r | {"label_chat": 2}, 3, "'label_chat': expected a label 0 or 1"),
        (lambda r: r | {"hist_hide": [5, "x"]}, 3, "'hist_hide': expected a list of integer ids"),
        (lambda r: {k: v for k, v in r.items() if k != "item"}, 3, "'item' is missing"),
        (lambda r: r | {"price": -1.0}, 3, "'price': expected a price >= 0"),
        (lambda r: r | {"hist_click": [1, -4]}, 3, "'hist_click': expected a list of ids >= 0"),
        (lambda r: '{"user": 1, ', 3, "not valid JSON"),
    ],
)
def test_a_bad_jsonl_line_is_named(feed_raw, tmp_path, edit, line, field):
    rows = _lines(pq.read_table(feed_raw / "valid.parquet").slice(0, 4))
    rows[line - 2] = edit(rows[line - 2])
    rows.insert(0, "")  # a blank first line still counts
    path = _write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataFormatError) as err:
        read_feed_file(path)
    assert f"{path}:{line}:" in str(err.value) and field in str(err.value)


def test_bad_rows_can_be_skipped_up_to_a_limit(feed_raw, tmp_path):
    rows = _lines(pq.read_table(feed_raw / "valid.parquet").slice(0, 6))
    rows[1]["label_click"] = 7  # a value check (pyarrow parses it)
    rows[4] = "not json"  # a parse failure (line scan)
    path = _write_jsonl(tmp_path / "two_bad.jsonl", rows)
    read = read_feed_file(path, on_bad_rows="skip", max_bad_rows=2)
    assert read.bad_rows == 2 and read.table.num_rows == 4
    with pytest.raises(DataFormatError, match="more than feed_preprocess.max_bad_rows=1"):
        read_feed_file(path, on_bad_rows="skip", max_bad_rows=1)


def test_parquet_errors_name_the_row_or_the_column(feed_raw, tmp_path):
    table = pq.read_table(feed_raw / "valid.parquet").slice(0, 5)
    hours = table.column("hour").to_pylist()
    hours[3] = 30.0
    pq.write_table(table.set_column(table.schema.get_field_index("hour"), "hour", pa.array(hours)), tmp_path / "bad.parquet")
    with pytest.raises(DataFormatError, match=r"bad.parquet: row 4: field 'hour': expected an hour of day in \[0, 24\]"):
        read_feed_file(str(tmp_path / "bad.parquet"))
    pq.write_table(table.drop_columns(["hist_report"]), tmp_path / "missing.parquet")
    with pytest.raises(DataFormatError, match=r"missing column\(s\) \['hist_report'\]"):
        read_feed_file(str(tmp_path / "missing.parquet"))
    narrow = table.cast(pa.schema([f.with_type(pa.int32()) if f.type == pa.int64() else f for f in RAW_SCHEMA]))
    pq.write_table(narrow, tmp_path / "narrow.parquet")  # narrower integer types are accepted
    assert read_feed_file(str(tmp_path / "narrow.parquet")).table.equals(table)


def test_null_or_missing_lists_are_empty(feed_raw, tmp_path):
    rows = _lines(pq.read_table(feed_raw / "valid.parquet").slice(0, 3))
    rows[0]["hist_chat"] = None
    del rows[1]["hist_report"]
    table = read_feed_file(_write_jsonl(tmp_path / "nulls.jsonl", rows)).table
    assert table.column("hist_chat").to_pylist()[0] == [] and table.column("hist_report").to_pylist()[1] == []
    assert table.column("hist_chat").null_count == 0 and table.column("hist_report").null_count == 0
