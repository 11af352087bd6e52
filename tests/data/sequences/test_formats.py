"""MovieLens readers: every distributed format, side information, and bad rows named by file and line."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from torchrec_app.data.criteo_format import DataFormatError
from torchrec_app.data.sequences.formats import read_interactions, read_items, title_and_year

ROWS = [(1, 10, 4.0, 978300760), (1, 20, 3.0, 978300761), (2, 10, 5.0, 978300000)]


def write(path, text, encoding="utf-8"):
    path.write_text(text, encoding=encoding)
    return str(path)


@pytest.fixture
def files(tmp_path):
    """The same three ratings in each MovieLens layout, with their movies files."""
    (tmp_path / "100k").mkdir()
    (tmp_path / "1m").mkdir()
    (tmp_path / "csv").mkdir()
    return {
        "ml-100k": write(tmp_path / "100k" / "u.data", "".join(f"{u}\t{i}\t{int(r)}\t{t}\n" for u, i, r, t in ROWS)),
        "ml-1m": write(tmp_path / "1m" / "ratings.dat", "".join(f"{u}::{i}::{int(r)}::{t}\n" for u, i, r, t in ROWS)),
        "ml-csv": write(tmp_path / "csv" / "ratings.csv",
                        "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in ROWS)),
        "u.item": write(tmp_path / "100k" / "u.item",
                        "10|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
                        "20|Café Society|01-Jan-1937||http://y|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n", encoding="latin-1"),
        "movies.dat": write(tmp_path / "1m" / "movies.dat",
                            "10::Toy Story (1995)::Animation|Children's|Comedy\n20::Café: Society (1937) ::Drama\n", encoding="latin-1"),
        "movies.csv": write(tmp_path / "csv" / "movies.csv",
                            'movieId,title,genres\n10,Toy Story (1995),Animation|Children\'s|Comedy\n'
                            '20,"Society, The (2007-2013)",(no genres listed)\n30,Babylon 5,Sci-Fi\n'),
    }


@pytest.mark.parametrize("fmt", ["ml-100k", "ml-1m", "ml-csv"])
def test_each_format_reads_the_same_interactions(files, fmt):
    table = read_interactions(files[fmt]).table  # format detected from the file name
    assert table.column_names == ["user", "item", "timestamp", "rating"]
    assert list(zip(*(table.column(c).to_pylist() for c in ("user", "item", "rating", "timestamp")))) == ROWS


def test_generic_interactions_csv_and_parquet(tmp_path):
    csv = write(tmp_path / "clicks.csv", "timestamp,item,user\n5,a,u1\n6,b,u1\n")
    table = read_interactions(csv, "interactions").table
    assert table.column("user").to_pylist() == ["u1", "u1"] and table.column("item").to_pylist() == ["a", "b"]
    assert table.column("rating").null_count == 2
    parquet = tmp_path / "clicks.parquet"
    pq.write_table(pa.table({"user": [1, 2], "item": [3, 4], "timestamp": [7, 8], "rating": [1.0, 2.0]}), parquet)
    assert read_interactions(str(parquet), "interactions").table.column("rating").to_pylist() == [1.0, 2.0]
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"user": [1, 2], "item": [3, None], "timestamp": [7, 8]}), bad)
    with pytest.raises(DataFormatError, match=r"bad.parquet: row 1: field item"):
        read_interactions(str(bad), "interactions")
    with pytest.raises(DataFormatError, match=r"no column\(s\) \['timestamp'\]"):
        read_interactions(write(tmp_path / "x.csv", "user,item\n1,2\n"), "interactions")


@pytest.mark.parametrize("fmt, text, line, message", [
    ("ml-1m", "1::10::5::978300760\n1::10::5\n", 2, "3 '::'-separated fields, expected 4"),
    ("ml-1m", "1::10::5::978300760\n2::x::5::978300760\n", 2, "field item: 'x' is not an integer"),
    ("ml-1m", "1::10::5::978300760\n2:10:5:978300760\n", 2, "fields must be separated by '::'"),
    ("ml-100k", "1\t10\t5\t978300760\n\n1\t11\t5\t978300760\n", 2, "1 fields, expected 4"),
    ("ml-100k", "1\t10\t5\t-3\n", 1, "field timestamp: timestamp -3 must be >= 0"),
    ("ml-csv", "userId,movieId,rating,timestamp\n1,10,4.5,1\n1,11,abc,2\n", 3, "field rating: 'abc' is not a number"),
    ("ml-csv", "userId,movieId,rating,timestamp\n1,10,4.5,1\n1,11,-1,2\n", 3, "rating '-1' must be a number >= 0"),
])
def test_bad_lines_are_named_by_file_and_line(tmp_path, fmt, text, line, message):
    name = {"ml-1m": "ratings.dat", "ml-100k": "u.data", "ml-csv": "ratings.csv"}[fmt]
    path = write(tmp_path / name, text)
    with pytest.raises(DataFormatError) as err:
        read_interactions(path)
    assert str(err.value).startswith(f"{path}:{line}: ") and message in str(err.value)


def test_bad_lines_can_be_skipped_and_counted(tmp_path):
    path = write(tmp_path / "ratings.dat", "1::10::5::1\n1::x::5::2\n2::11::4::3\n\n3::12::4::4\n")
    result = read_interactions(path, on_bad_rows="skip")
    assert result.bad_rows == 2 and result.table.column("item").to_pylist() == [10, 11, 12]
    with pytest.raises(DataFormatError, match="2 bad lines, more than max_bad_rows=1"):
        read_interactions(path, on_bad_rows="skip", max_bad_rows=1)


def test_wrong_header_and_empty_files(tmp_path):
    with pytest.raises(DataFormatError, match=r"ratings.csv:1: header 'user,movie,rating,timestamp'; expected userId,movieId"):
        read_interactions(write(tmp_path / "ratings.csv", "user,movie,rating,timestamp\n1,2,3,4\n"))
    with pytest.raises(DataFormatError, match="the file is empty"):
        read_interactions(write(tmp_path / "u.data", ""))
    with pytest.raises(DataFormatError, match="no such file"):
        read_interactions(str(tmp_path / "missing" / "ratings.dat"))


def test_movies_files_give_title_year_and_genres(files):
    by_format = {fmt: read_items(files[name], fmt).to_pylist()
                 for fmt, name in (("ml-100k", "u.item"), ("ml-1m", "movies.dat"), ("ml-csv", "movies.csv"))}
    toy = {"item": 10, "title": "Toy Story", "year": 1995, "genres": ["Animation", "Children's", "Comedy"]}
    for rows in by_format.values():
        assert rows[0] == toy
    # ml-100k: no year in the title -> the release date; "unknown" flag -> no genres; latin-1 text
    assert by_format["ml-100k"][1] == {"item": 20, "title": "Café Society", "year": 1937, "genres": []}
    # trailing blank after the year, ':' inside a title
    assert by_format["ml-1m"][1] == {"item": 20, "title": "Café: Society", "year": 1937, "genres": ["Drama"]}
    # a year range and "(no genres listed)"; a title without a year
    assert by_format["ml-csv"][1] == {"item": 20, "title": "Society, The", "year": 2007, "genres": []}
    assert by_format["ml-csv"][2]["year"] == 0


def test_title_year_repair():
    assert title_and_year("Millions Game, The (Das Millionenspiel)") == ("Millions Game, The (Das Millionenspiel)", 0)
    assert title_and_year("Cosmos (1980- )") == ("Cosmos", 1980)


def test_bad_movies_line(tmp_path):
    path = write(tmp_path / "movies.dat", "10::Toy Story (1995)::Comedy\nnot a movie line\n")
    with pytest.raises(DataFormatError, match=r"movies.dat:2: expected 'item::title::genres'"):
        read_items(path, "ml-1m")
