"""What preprocess accepts from a Criteo text file, row by row: values, headers, gzip, scoring data."""

import gzip
import os
import zlib

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.data.conftest import TINY_TSV, make_line, preprocess, read_all, reference_rows, write_lines
from torchrec_app.cli import main as cli_main
from torchrec_app.config.data import PreprocessConfig
from torchrec_app.data.criteo_format import COLUMNS, DataFormatError
from torchrec_app.data.metadata import load_metadata
from torchrec_app.data.preprocess import preprocess_dataset
from torchrec_app.data.splits import explicit_sources


def _numbered_line(i: int, dense_value: str | None = None, column: int = 5) -> str:
    """A good row whose I1 is ``i`` (to see which rows were kept); optionally one dense field replaced."""
    dense = [str(i)] + ["1"] * 12
    if dense_value is not None:
        dense[column] = dense_value
    return make_line(dense=dense)


def _kept(out) -> list[int]:
    return [round(float(np.expm1(r[1][0]))) for r in read_all(str(out), "train", batch_size=64)]


REJECTED = ["99999999999999999999", "9" * 400, "inf", "-inf", "nan", "NaN", "1e3", "1.5", "0x10", " 5", "+5", "5-", "--5", "١"]
ACCEPTED = {"3.0": 3.0, "-2": 0.0, "007": 7.0, "1382.00": 1382.0, "": 0.0, "0" * 400 + "5": 5.0, "9223372036854775807": 2.0**63}


@pytest.mark.parametrize("value", REJECTED)
def test_a_dense_field_accepts_only_integers_and_names_the_row(tmp_path, value):
    path = write_lines(tmp_path / "x.txt", [_numbered_line(i) for i in range(3)] + [_numbered_line(3, value)])
    with pytest.raises(DataFormatError) as err:
        preprocess(tmp_path / "out", [str(path)])
    assert f"{path}:4: field I6: expected an integer" in str(err.value)


@pytest.mark.parametrize("value, expected", ACCEPTED.items())
def test_integers_as_spreadsheets_write_them_are_accepted(tmp_path, value, expected):
    path = write_lines(tmp_path / "x.txt", [_numbered_line(0), _numbered_line(1, value)])
    preprocess(tmp_path / "out", [str(path)])
    dense = read_all(str(tmp_path / "out"), "train")[1][1]
    assert dense[5] == np.float32(np.log1p(max(expected, 0.0)))


@pytest.mark.parametrize("bad", REJECTED + ["abc"])
def test_skipping_a_bad_row_does_not_depend_on_its_neighbours(tmp_path, bad):
    """The same bad row is dropped whatever else its block holds: all-int rows, a float-written
    row (`3.0`, another parse path), another kind of bad row, or a bad row in another column."""
    neighbours = {
        "ints": [],
        "float_written": [(7, _numbered_line(7, "3.0"))],
        "other_bad": [(7, _numbered_line(7, "abc", column=2))],
        "bad_label": [(7, make_line(label="2", dense=["7"] + ["1"] * 12))],
    }
    for name, extra in neighbours.items():
        lines = [_numbered_line(i) for i in range(12)]
        lines[4] = _numbered_line(4, bad)
        dropped = {4}
        for i, line in extra:
            lines[i] = line
            dropped |= {i} if "abc" in line or line.startswith("2") else set()
        path = write_lines(tmp_path / f"{name}.txt", lines)
        meta = preprocess(tmp_path / name, [str(path)], on_bad_rows="skip", id_strategy="hash", hash_size=97)
        assert _kept(tmp_path / name) == [i for i in range(12) if i not in dropped], name
        assert meta.bad_rows_skipped == len(dropped)
        table = pq.read_table(tmp_path / name / meta.files["train"][0].path)
        assert all(np.isfinite(table.column(f"I{j}").to_numpy()).all() for j in range(1, 14))


def test_empty_lines_and_stray_carriage_returns_are_bad_rows_in_any_block(tmp_path):
    lines = [_numbered_line(i) for i in range(6)]
    path = tmp_path / "x.txt"
    path.write_bytes(("\n".join(lines[:2]) + "\n\n" + lines[2] + "\r" + lines[3] + "\n" + "\n".join(lines[4:]) + "\n").encode())
    with pytest.raises(DataFormatError, match=f"{path}:3: expected 40 fields"):
        preprocess(tmp_path / "out", [str(path)], id_strategy="hash", hash_size=97)
    meta = preprocess(tmp_path / "skip", [str(path)], on_bad_rows="skip", id_strategy="hash", hash_size=97)
    assert meta.bad_rows_skipped == 2 and _kept(tmp_path / "skip") == [0, 1, 4, 5]


def test_error_messages_quote_at_most_80_characters_of_a_value(tmp_path):
    huge = "7" * 10_000_000
    for n, line in enumerate([_numbered_line(0, huge + "x"), make_line(sparse=["1234abcd"] * 25 + ["f" * 10_000_000])]):
        path = write_lines(tmp_path / f"x{n}.txt", [_numbered_line(1), line])
        with pytest.raises(DataFormatError) as err:
            preprocess(tmp_path / f"out{n}", [str(path)])
        message = str(err.value)
        assert f"{path}:2: field" in message and ("(10000001 bytes)" in message or "(10000000 bytes)" in message)
        assert len(message) < 400


def _gzip_lines(path, n: int) -> bytes:
    text = "".join(_numbered_line(i) + "\n" for i in range(n)).encode()
    path.write_bytes(gzip.compress(text))
    return text


def test_corrupt_gzip_in_the_first_64_kib_names_the_file(tmp_path):
    path = tmp_path / "day_0.gz"
    _gzip_lines(path, 50)
    data = bytearray(path.read_bytes())
    data[30:60] = b"\xff" * 30  # inside the first deflate block
    path.write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match=f"^{path}: the compressed stream is corrupt or truncated after 0 bytes of text"):
        preprocess(tmp_path / "out", [str(path)])


def test_truncated_gzip_reports_the_text_position_reached(tmp_path):
    path = tmp_path / "day_1.gz"
    text = _gzip_lines(path, 6000)  # ~1 MB of text: one 16 MiB read
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    reachable = zlib.decompressobj(wbits=31).decompress(data[: len(data) // 2])
    assert 0 < len(reachable) < len(text)
    line = reachable.count(b"\n") + 1
    with pytest.raises(DataFormatError, match=f"^{path}: the compressed stream is corrupt or truncated after "
                                              f"{len(reachable):,} bytes of text \\(in line {line:,};"):  # fmt: skip
        preprocess(tmp_path / "out", [str(path)])


# ----------------------------------------------------------------------------- headers


def _csv(path, header: list[str], rows: list[list[str]], *, bom: bool = False, crlf: bool = False) -> str:
    end = "\r\n" if crlf else "\n"
    text = ",".join(header) + end + "".join(",".join(r) + end for r in rows)
    with open(path, "wb") as f:
        f.write((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return str(path)


def _tiny_rows() -> list[list[str]]:
    return [line.split("\t") for line in open(TINY_TSV).read().splitlines()]


def test_kaggle_csv_with_id_and_label_header_gives_the_tsv_dataset(tmp_path):
    preprocess(tmp_path / "tsv", [TINY_TSV])
    header = ["Id", "Label", *COLUMNS[1:]]
    path = _csv(tmp_path / "train.csv", header, [[str(10_000_000 + i), *r] for i, r in enumerate(_tiny_rows())], bom=True, crlf=True)
    meta = preprocess(tmp_path / "csv", [path])
    assert meta.split_rows == {"train": 24}
    assert read_all(str(tmp_path / "csv"), "train") == read_all(str(tmp_path / "tsv"), "train")


def test_reordered_header_columns_map_by_name(tmp_path):
    preprocess(tmp_path / "tsv", [TINY_TSV])
    names = ["I2", "I1", "label", *COLUMNS[3:39], "C26"]
    names[names.index("C1")], names[names.index("C2")] = "C2", "C1"
    order = [COLUMNS.index(n) for n in names]
    rows = [[r[k] for k in order] for r in _tiny_rows()]
    path = _csv(tmp_path / "shuffled.csv", [n.lower() for n in names], rows)
    preprocess(tmp_path / "csv", [path])
    assert read_all(str(tmp_path / "csv"), "train") == read_all(str(tmp_path / "tsv"), "train")


@pytest.mark.parametrize(
    "header, message",
    [
        (["label", *COLUMNS[1:39], "C27"], "missing C26; expected"),
        (["label", "click", *COLUMNS[1:]], "unknown 'click'"),
        (["label", *COLUMNS[1:], "I3"], "duplicate I3"),
        (["Label", "I2", "I1"], "missing I3, I4"),
    ],
)
def test_a_header_that_does_not_name_the_columns_is_an_error_listing_them(tmp_path, header, message):
    path = _csv(tmp_path / "x.csv", header, [["1"] * len(header)])
    with pytest.raises(DataFormatError) as err:
        preprocess(tmp_path / "out", [path])
    assert str(err.value).startswith(f"{path}:1: the header does not name the Criteo columns") and message in str(err.value)
    assert not (tmp_path / "out").exists()


def test_real_world_rows_keep_working(tmp_path):
    """Float-written ints, negative I2, a mostly empty I12, CRLF line ends, in a header CSV."""
    rng = np.random.default_rng(0)
    rows, expected = [], []
    for i in range(400):
        i12 = "" if rng.random() < 0.77 else f"{rng.integers(0, 50)}.0"
        dense = [f"{i}.0", str(int(rng.integers(-3, 5))), *[f"{rng.integers(0, 99)}.0" for _ in range(9)], i12, "1"]
        rows.append([str(i % 2), *dense, *[f"{rng.integers(0, 2**32):08x}" for _ in range(26)]])
        expected.append([np.float32(np.log1p(max(float(v), 0.0))) if v else np.float32(0) for v in dense])
    path = _csv(tmp_path / "export.csv", COLUMNS, rows, crlf=True)
    preprocess(tmp_path / "out", [path], id_strategy="hash", hash_size=2**40)
    got = read_all(str(tmp_path / "out"), "train", batch_size=128)
    assert [r[1] for r in got] == [list(map(float, e)) for e in expected]
    assert [r[2][25][0] for r in got] == [int(r[-1], 16) for r in rows]


# ----------------------------------------------------------------------------- scoring data


def test_unlabeled_kaggle_test_txt_becomes_a_score_split(tmp_path, capsys):
    train = write_lines(tmp_path / "train.txt", [_numbered_line(i) for i in range(30)])
    unlabeled = [line.split("\t", 1)[1] for line in open(TINY_TSV).read().splitlines()]  # 39 fields
    test = write_lines(tmp_path / "test.txt", unlabeled)
    args = ["preprocess", "--train", str(train), "--score", str(test), "--out", str(tmp_path / "out"), "--workers", "1",
            "preprocess.id_strategy=hash", "preprocess.hash_size=1000000007"]  # fmt: skip
    assert cli_main(args) == 0
    meta = load_metadata(str(tmp_path / "out"))
    assert meta.split_rows == {"train": 30, "score": 24}
    table = pq.read_table(tmp_path / "out" / meta.files["score"][0].path)
    assert "label" not in table.column_names and table.column("id").to_pylist() == list(range(24))
    expected = reference_rows(TINY_TSV)
    assert table.column("C2").to_pylist() == [(e[2][1] or 0) % 1000000007 for e in expected]
    assert table.column("I3").to_numpy().tolist() == [e[1][2] for e in expected]

    assert cli_main(["preprocess", "--train", str(test), "--out", str(tmp_path / "o2")]) == 1
    err = capsys.readouterr().err
    assert f"{test}: the rows have no label" in err and "pass them with --score FILES" in err


def test_kaggle_test_csv_keeps_its_ids_for_scoring(tmp_path):
    rows = [r[1:] for r in _tiny_rows()]
    path = _csv(tmp_path / "test.csv", ["Id", *COLUMNS[1:]], [[str(60_000_000 + i), *r] for i, r in enumerate(rows)])
    train = write_lines(tmp_path / "train.txt", [_numbered_line(i) for i in range(5)])
    sources = explicit_sources({"train": [str(train)], "score": [path]})
    meta = preprocess_dataset(str(tmp_path / "out"), sources, PreprocessConfig(workers=1), log=lambda *a: None)
    table = pq.read_table(os.path.join(tmp_path / "out", meta.files["score"][0].path))
    assert table.column("id").to_pylist() == [60_000_000 + i for i in range(24)]
    assert table.column("C1").to_pylist()[:2] == [0, 0]  # unseen in train -> reserved index 0
