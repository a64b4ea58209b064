"""Each reader on a small hand-written fixture in its real public format, and bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from ucd.cli import main as cli
from ucd.data.amazon import read_amazon
from ucd.data.movielens import read_ml100k, read_ml_csv, read_ml_dat
from ucd.data.prepare import PrepareConfig, prepare
from ucd.data.registry import DatasetConfig
from ucd.data.synthetic import SyntheticConfig, generate
from ucd.data.tabular import TabularConfig, read_tabular
from ucd.errors import ConfigError, DataError


def _w(path: Path, text: str, encoding="utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding=encoding) as f:
            f.write(text)
    else:
        path.write_bytes(text.encode(encoding))
    return path


def test_ml1m_dat(tmp_path):
    _w(tmp_path / "ratings.dat", "1::10::5::978300760\n1::20::3::978302109\n2::10::4::978301968\n")
    _w(
        tmp_path / "movies.dat",
        "10::Café au lait (1993)::Comedy|Drama\n20::Star Wars: Episode IV (1977)::Action|Sci-Fi\n",
        "latin-1",
    )
    raw = read_ml_dat(tmp_path)
    assert raw.interactions.rows() == [
        (1, 10, 978300760, 5.0),
        (1, 20, 978302109, 3.0),
        (2, 10, 978301968, 4.0),
    ]
    cafe = raw.items.row(0, named=True)
    assert (
        cafe["title"] == "Café au lait (1993)"
        and cafe["year"] == 1993
        and cafe["genres"] == ["Comedy", "Drama"]
    )
    assert raw.items.row(1, named=True)["title"] == "Star Wars: Episode IV (1977)"


def test_ml20m_csv_with_quoted_titles(tmp_path):
    _w(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,4.0,1112484676\n")
    _w(
        tmp_path / "movies.csv",
        'movieId,title,genres\n2,Jumanji (1995),Adventure|Children|Fantasy\n29,"City of Lost Children, The (Cité des enfants perdus, La) (1995)",Adventure|Drama\n',
    )
    raw = read_ml_csv(tmp_path)
    assert raw.interactions["rating"].to_list() == [3.5, 4.0]
    assert (
        raw.items.row(1, named=True)["title"]
        == "City of Lost Children, The (Cité des enfants perdus, La) (1995)"
    )
    assert raw.items.row(1, named=True)["genres"] == ["Adventure", "Drama"]


def test_amazon_2014_python_literal_meta(tmp_path):
    reviews = [
        {"reviewerID": "U1", "asin": "A1", "overall": 5.0, "unixReviewTime": 1400000000, "reviewText": "ok"},
        {"reviewerID": "U1", "asin": "A2", "overall": 3.0, "unixReviewTime": 1400000100},
    ]
    _w(tmp_path / "reviews_Beauty_5.json.gz", "\n".join(json.dumps(r) for r in reviews) + "\n")
    meta = (
        "{'asin': 'A1', 'title': 'Rose &amp; Oud Cream', 'price': 12.5, 'brand': \"L'Oreal\", "
        "'categories': [['Beauty', 'Skin Care'], ['Beauty', 'Face']], 'description': '<b>Rich</b> cream'}\n"
        "{'asin': 'A2', 'categories': [['Beauty']]}\n"
    )
    _w(tmp_path / "meta_Beauty.json.gz", meta)
    raw = read_amazon(tmp_path, "Beauty", "2014")
    assert raw.interactions.rows() == [("U1", "A1", 1400000000, 5.0), ("U1", "A2", 1400000100, 3.0)]
    a1 = raw.items.row(0, named=True)
    assert a1["title"] == "Rose & Oud Cream" and a1["brand"] == "L'Oreal"
    assert a1["categories"] == ["Beauty", "Skin Care", "Face"] and a1["price"] == 12.5
    assert a1["text"] == (
        "Title: Rose & Oud Cream | Brand: L'Oreal | Categories: Beauty, Skin Care, Face | "
        "Price: $12.50 | Description: Rich cream"
    )
    assert raw.items.row(1, named=True)["title"] == ""


def test_amazon_2018_jsonl(tmp_path):
    _w(
        tmp_path / "Luxury_Beauty_5.json",
        json.dumps({"overall": 4.0, "reviewerID": "U9", "asin": "B1", "unixReviewTime": 1500000000}) + "\n",
    )
    _w(
        tmp_path / "meta_Luxury_Beauty.json",
        json.dumps(
            {
                "asin": "B1",
                "title": "Serum",
                "brand": "X",
                "category": ["Luxury Beauty", "Serums"],
                "price": "$1,299.00",
                "description": ["Light", "serum"],
            }
        )
        + "\n",
    )
    raw = read_amazon(tmp_path, "Luxury_Beauty", "2018")
    item = raw.items.row(0, named=True)
    assert item["price"] == 1299.0 and item["categories"] == ["Luxury Beauty", "Serums"]
    assert item["description"] == "Light serum"
    assert raw.interactions.rows() == [("U9", "B1", 1500000000, 4.0)]


def test_amazon_2023_parent_asin_ms(tmp_path):
    rows = [
        {"rating": 5.0, "asin": "V1", "parent_asin": "P1", "user_id": "U1", "timestamp": 1588687728923},
        {"rating": 2.0, "asin": "V2", "parent_asin": "P1", "user_id": "U2", "timestamp": 1588687729000},
    ]
    _w(tmp_path / "All_Beauty.jsonl", "\n".join(json.dumps(r) for r in rows))
    _w(
        tmp_path / "meta_All_Beauty.jsonl",
        json.dumps(
            {
                "parent_asin": "P1",
                "title": "Lipstick",
                "main_category": "All Beauty",
                "categories": [],
                "features": ["matte"],
                "description": [],
                "price": None,
                "store": "Brand Y",
            }
        ),
    )
    raw = read_amazon(tmp_path, "All_Beauty", "2023")
    assert raw.interactions["item"].to_list() == ["P1", "P1"]  # variants collapse onto the parent
    assert raw.interactions["timestamp"].to_list() == [1588687728, 1588687729]
    item = raw.items.row(0, named=True)
    assert (
        item["brand"] == "Brand Y" and item["categories"] == ["All Beauty"] and item["description"] == "matte"
    )


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_tabular_mapping(tmp_path, fmt):
    df = pl.DataFrame({"u": ["a", "a", "b"], "i": ["x", "y", "x"], "t": [3, 1, 2], "r": [1.0, 2.0, None]})
    items = pl.DataFrame({"iid": ["x", "y"], "name": ["Ex", "Why"], "brand": ["B1", None]})
    path = tmp_path / f"inter.{fmt}"
    if fmt == "csv":
        df.write_csv(path)
    elif fmt == "jsonl":
        df.write_ndjson(path)
    else:
        df.write_parquet(path)
    items.write_csv(tmp_path / "items.csv")
    cfg = TabularConfig(
        interactions=path.name,
        user="u",
        item="i",
        timestamp="t",
        rating="r",
        items="items.csv",
        item_key="iid",
        title="name",
        text_fields=["brand"],
    )
    raw = read_tabular(tmp_path, cfg)
    assert raw.interactions.rows() == [("a", "x", 3, 1.0), ("a", "y", 1, 2.0), ("b", "x", 2, None)]
    assert raw.items["text"].to_list() == ["Title: Ex | Brand: B1", "Title: Why"]


def test_tabular_missing_column_and_bad_value(tmp_path):
    _w(tmp_path / "i.csv", "user_id,item_id,timestamp\nu1,i1,5\nu1,i2,6\nu2,i1,seven\n")
    with pytest.raises(DataError, match=r"i\.csv:4: column 'timestamp' = 'seven'"):
        read_tabular(tmp_path, TabularConfig(interactions="i.csv"))
    with pytest.raises(DataError, match=r"missing column\(s\) \['when'\]"):
        read_tabular(tmp_path, TabularConfig(interactions="i.csv", timestamp="when"))


def test_synthetic_is_seeded_and_follows_tastes():
    cfg = SyntheticConfig(n_users=300, n_items=200, n_genres=8, seed=3)
    a, b = generate(cfg), generate(cfg)
    assert a.interactions.equals(b.interactions) and a.items.equals(b.items)
    assert not generate(cfg.model_copy(update={"seed": 4})).interactions.equals(a.interactions)
    genre = dict(zip(a.items["item"].to_list(), [g[0] for g in a.items["genres"].to_list()], strict=True))
    inter = a.interactions.with_columns(pl.col("item").replace_strict(genre).alias("g"))
    # Tastes: each user's 3 favourite genres carry nearly all of their interactions (8 genres).
    top3 = (
        inter.group_by("user", "g")
        .len()
        .sort("len", descending=True)
        .group_by("user")
        .agg((pl.col("len").head(3).sum() / pl.col("len").sum()).alias("share"))
    )
    assert top3["share"].min() == 1.0
    # Order: consecutive items share a genre far more often than chance (stickiness 0.7).
    same = inter.with_columns((pl.col("g") == pl.col("g").shift(1).over("user")).alias("s"))["s"].mean()
    assert same > 0.7
    assert (a.interactions.group_by("user").agg(pl.col("timestamp").diff().min())["timestamp"] >= 0).all()


def test_synthetic_target_size():
    raw = generate(SyntheticConfig(n_users=2000, n_items=500, n_interactions=100_000))
    assert 95_000 <= raw.interactions.height <= 110_000


# ---------------------------------------------------------------- bad input


def test_missing_file_names_it(tmp_path):
    _w(tmp_path / "u.data", "1\t1\t5\t1\n")
    with pytest.raises(DataError, match=r"u\.item: file not found"):
        read_ml100k(tmp_path)


def test_malformed_line_reports_file_and_line(tmp_path):
    _w(tmp_path / "u.data", "1\t1\t5\t881250949\n1\t2\t3\t881250950\n1\tx\t3\t881250951\n")
    _w(tmp_path / "u.item", "1|Toy Story (1995)|01-Jan-1995||url|" + "|".join(["0"] * 19) + "\n")
    with pytest.raises(DataError, match=r"u\.data:3: field 'item' = 'x'"):
        read_ml100k(tmp_path)
    _w(tmp_path / "u.data", "1\t1\t5\t881250949\n1\t2\t3\n")
    with pytest.raises(DataError, match=r"u\.data:2: expected 4 fields, found 3"):
        read_ml100k(tmp_path)


def test_malformed_json_line(tmp_path):
    _w(
        tmp_path / "reviews_X_5.json",
        '{"reviewerID": "U", "asin": "A", "overall": 5, "unixReviewTime": 1}\n{"reviewerID": "U", "asin": \n',
    )
    _w(tmp_path / "meta_X.json", "{'asin': 'A'}\n")
    with pytest.raises(DataError, match=r"reviews_X_5\.json:2: cannot parse record"):
        read_amazon(tmp_path, "X", "2014")


def test_delimited_gzip_multichar_separator_and_empty_field(tmp_path):
    from ucd.data.raw import read_delimited

    names, dtypes = ["a", "b", "c"], {"a": pl.Int64, "b": pl.Float32}
    path = _w(tmp_path / "x.dat.gz", "1:: 2.5 :: Thé\n3::4::Café\n", "latin-1")
    df = read_delimited(path, names, dtypes, sep="::", encoding="latin-1")
    assert df.rows() == [(1, 2.5, " Thé"), (3, 4.0, "Café")]  # typed fields stripped, text kept
    _w(tmp_path / "y.dat", "1\t2\tx\n3\t\ty\n")
    with pytest.raises(DataError, match=r"y\.dat:2: field 'b' = '' is not a valid Float32"):
        read_delimited(tmp_path / "y.dat", names, dtypes, sep="\t")


def test_preprocess_errors_and_item_table():
    from ucd.data.preprocess import PreprocessConfig, preprocess
    from ucd.data.raw import RawData

    inter = pl.DataFrame(
        {"user": [7, 7, 7, 9], "item": [5, 6, 5, 5], "timestamp": [1, 2, 1, 3], "rating": [None] * 4},
        schema={"user": pl.Int64, "item": pl.Int64, "timestamp": pl.Int64, "rating": pl.Float32},
    )
    items = pl.DataFrame({"item": ["5"], "title": ["Five"], "text": ["Title: Five"], "year": [2001]})
    loose = PreprocessConfig(min_user_interactions=1, min_item_interactions=1)
    with pytest.raises(DataError, match="no interactions in the input"):
        preprocess(RawData(inter.head(0), items), loose)
    with pytest.raises(DataError, match="rating_threshold is set but the dataset has no ratings"):
        preprocess(RawData(inter, items), loose.model_copy(update={"rating_threshold": 3.0}))
    with pytest.raises(DataError, match=r"no interactions left after filtering \(min_user_interactions=5,"):
        preprocess(RawData(inter, items), PreprocessConfig())
    out = preprocess(RawData(inter, items), loose)
    assert out.interactions.select("user_id", "item_id", "timestamp").rows() == [
        (1, 1, 1),
        (1, 2, 2),
        (2, 1, 3),
    ]
    # String metadata keys join onto integer items; an item without metadata gets empty text.
    assert out.items.rows() == [(1, "5", "Five", "Title: Five", 2001), (2, "6", "", "", None)]
    assert out.users.rows() == [(1, "7"), (2, "9")]
    assert out.report == {
        "raw_interactions": 4,
        "raw_users": 2,
        "raw_items": 2,
        "after_dedup": 3,
        "kcore_rounds": 1,
        "after_kcore": 3,
        "items_without_metadata": 1,
    }


def test_unknown_dataset_and_config_key(tmp_path, capsys):
    assert cli(["data", "prepare", "ml-1b", "--out", str(tmp_path / "o")]) == 2
    assert "unknown dataset 'ml-1b'" in capsys.readouterr().err
    assert (
        cli(["data", "prepare", "synthetic", "--out", str(tmp_path / "o"), "--set", "preprocess.min_users=3"])
        == 2
    )
    assert "preprocess.min_users" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError):
        from ucd.data.registry import resolve_dataset

        resolve_dataset("amazon2099/Beauty")


def _tiny_cfg(tmp_path, **split) -> PrepareConfig:
    return PrepareConfig(
        dataset=DatasetConfig(
            name="tiny", format="tabular", path=str(tmp_path), tabular=TabularConfig(interactions="i.csv")
        ),
        preprocess={"min_user_interactions": 1, "min_item_interactions": 1},
        split=split,
    )


def test_split_leaving_no_users_fails_without_output(tmp_path):
    _w(tmp_path / "i.csv", "user_id,item_id,timestamp\nu1,a,1\nu1,b,2\nu2,a,3\nu2,b,4\n")
    out = tmp_path / "out"
    with pytest.raises(DataError, match="leaves no train users"):
        prepare(_tiny_cfg(tmp_path), out, log=lambda *_: None)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_failed_rerun_keeps_previous_output(tmp_path, monkeypatch):
    _w(
        tmp_path / "i.csv",
        "user_id,item_id,timestamp\n"
        + "".join(f"u{u},i{(u + k) % 5},{k}\n" for u in range(6) for k in range(4)),
    )
    out = tmp_path / "out"
    prepare(_tiny_cfg(tmp_path), out, log=lambda *_: None)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    from ucd import schema

    real = schema.write_table

    def explode(table, path, name, *a, **k):
        if name == "sequences":
            raise OSError("disk full")
        return real(table, path, name, *a, **k)

    monkeypatch.setattr(schema, "write_table", explode)
    with pytest.raises(OSError):
        prepare(_tiny_cfg(tmp_path), out, force=True, log=lambda *_: None)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.csv", "out"]


def test_rerun_skips_when_up_to_date(tmp_path):
    _w(
        tmp_path / "i.csv",
        "user_id,item_id,timestamp\n"
        + "".join(f"u{u},i{(u + k) % 5},{k}\n" for u in range(6) for k in range(4)),
    )
    logs: list[str] = []
    prepare(_tiny_cfg(tmp_path), tmp_path / "o", log=logs.append)
    mtime = (tmp_path / "o" / "sequences.parquet").stat().st_mtime_ns
    prepare(_tiny_cfg(tmp_path), tmp_path / "o", log=logs.append)
    assert "up to date" in logs[-1]
    assert (tmp_path / "o" / "sequences.parquet").stat().st_mtime_ns == mtime
    # A changed input is not up to date.
    with open(tmp_path / "i.csv", "a") as f:
        f.write("u9,i1,9\n")
    prepare(_tiny_cfg(tmp_path), tmp_path / "o", log=logs.append)
    assert "up to date" not in logs[-1]


def test_cli_prepare_console_script(data_dir, tmp_path):
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "ucd"
    res = subprocess.run(
        [str(exe), "data", "prepare", "ml-100k", "--out", str(tmp_path / "m"), "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "users        943" in res.stdout and (tmp_path / "m" / "manifest.json").exists()
    bad = subprocess.run(
        [str(exe), "data", "prepare", "ml-100k", "--out", str(tmp_path / "n"), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "not found" in bad.stderr and "ml-100k.zip" in bad.stderr
