"""Readers, filtering and splits on the real MovieLens 100K and Amazon Beauty files."""

from __future__ import annotations

import json

import polars as pl
import pytest

from ucd import schema
from ucd.data.prepare import prepare_named
from ucd.data.registry import read_raw, resolve_dataset


def _seqs(folder):
    return pl.from_arrow(schema.read_table(folder / "sequences.parquet", "sequences"))


def _inter(folder):
    return pl.from_arrow(schema.read_table(folder / "interactions.parquet", "interactions"))


def test_ml100k_raw_counts_and_titles(data_dir):
    raw = read_raw(resolve_dataset("ml-100k"), data_dir)
    assert raw.interactions.height == 100_000
    assert raw.interactions["user"].n_unique() == 943
    assert raw.interactions["item"].n_unique() == 1682
    assert raw.items.height == 1682
    items = raw.items.filter(pl.col("item") == 543).row(0, named=True)
    assert items["title"] == "Misérables, Les (1995)"  # Latin-1 decoded, not mojibake
    assert items["year"] == 1995 and items["genres"] == ["Drama", "Musical"]
    toy = raw.items.filter(pl.col("item") == 1).row(0, named=True)
    assert toy["text"] == "Title: Toy Story (1995) | Year: 1995 | Genres: Animation, Children's, Comedy"
    hist = raw.interactions["rating"].value_counts().sort("rating")["count"].to_list()
    assert hist == [6110, 11370, 27145, 34174, 21201]


def test_beauty_raw_counts(data_dir):
    raw = read_raw(resolve_dataset("beauty"), data_dir)
    assert raw.interactions.height == 198_502
    assert raw.interactions["user"].n_unique() == 22_363
    assert raw.interactions["item"].n_unique() == 12_101
    assert not raw.has_timestamps
    row = raw.items.filter(pl.col("item") == "B004756YJA").row(0, named=True)
    assert row["title"] == "OPI Nail Lacquer, Simmer and Shimmer, 0.5-Fluid Ounce"


def test_loo_split_on_ml100k(ml100k_loo):
    inter = _inter(ml100k_loo)
    full = inter.group_by("user_id", maintain_order=True).agg("item_id", "timestamp")
    seqs = _seqs(ml100k_loo)
    assert seqs["user_id"].n_unique() == inter["user_id"].n_unique()
    by = {(r["user_id"], r["split"]): r for r in seqs.iter_rows(named=True)}
    for user, items, times in full.iter_rows():
        assert times == sorted(times)
        train, valid, test = by[(user, "train")], by[(user, "valid")], by[(user, "test")]
        assert test["target"] == items[-1] and test["history"] == items[:-1]
        assert valid["target"] == items[-2] and valid["history"] == items[:-2]
        assert train["target"] is None and train["history"] == items[:-2]
        assert test["target"] not in train["history"] and valid["target"] not in train["history"]


def test_temporal_split_on_ml100k(data_dir, tmp_path):
    out = prepare_named(
        "ml-100k", tmp_path / "t", protocol="temporal", data_dir=data_dir, log=lambda *_: None
    )
    summary = json.loads((out / "summary.json").read_text())
    cut = summary["split"]["cut_timestamp"]
    inter = _inter(out)
    times = dict(inter.group_by("user_id", maintain_order=True).agg("timestamp").iter_rows())
    items = dict(inter.group_by("user_id", maintain_order=True).agg("item_id").iter_rows())
    seqs = _seqs(out)
    train = seqs.filter(pl.col("split") == "train")
    assert train.height > 0
    for user, hist in train.select("user_id", "history").iter_rows():
        assert items[user][: len(hist)] == hist
        assert max(times[user][: len(hist)]) <= cut, f"user {user}: a training interaction after the cut"
    test = seqs.filter(pl.col("split") == "test")
    assert test.height == summary["split"]["test_users"] > 0
    for user, hist, target in test.select("user_id", "history", "target").iter_rows():
        assert max(times[user]) > cut  # test users are the ones active after the cut
        assert target == items[user][-1] and hist == items[user][:-1]
    valid_users = set(seqs.filter(pl.col("split") == "valid")["user_id"])
    assert valid_users and not valid_users & set(test["user_id"])
    assert all(max(times[u]) <= cut for u in valid_users)


@pytest.mark.parametrize("min_user,min_item", [(10, 10), (20, 30)])
def test_kcore_holds_on_real_data(data_dir, tmp_path, min_user, min_item):
    out = prepare_named(
        "ml-100k",
        tmp_path / "k",
        data_dir=data_dir,
        overrides=[
            f"preprocess.min_user_interactions={min_user}",
            f"preprocess.min_item_interactions={min_item}",
        ],
        log=lambda *_: None,
    )
    inter = _inter(out)
    assert inter.group_by("user_id").len()["len"].min() >= min_user
    assert inter.group_by("item_id").len()["len"].min() >= min_item
    # ids are dense 1..N, 0 stays padding
    assert sorted(inter["item_id"].unique()) == list(range(1, inter["item_id"].n_unique() + 1))
    assert inter.height < 100_000


def test_prepare_is_deterministic(data_dir, tmp_path):
    a = prepare_named("beauty", tmp_path / "a", data_dir=data_dir, log=lambda *_: None)
    b = prepare_named("beauty", tmp_path / "b", data_dir=data_dir, log=lambda *_: None)
    for name in ("items", "users", "interactions", "sequences"):
        assert (a / f"{name}.parquet").read_bytes() == (b / f"{name}.parquet").read_bytes(), name
    meta = schema.read_meta(a / "sequences.parquet")
    assert meta["dataset"] == "beauty" and len(meta["fingerprint"]) == 16 and meta["domain"] == "products"


def test_beauty_prepared_summary(data_dir, tmp_path):
    out = prepare_named("beauty", tmp_path / "b", data_dir=data_dir, log=lambda *_: None)
    s = json.loads((out / "summary.json").read_text())
    # Already 5-core: the default filter keeps everything.
    assert (s["users"], s["items"], s["interactions"]) == (22_363, 12_101, 198_502)
    assert s["density"] == pytest.approx(198_502 / (22_363 * 12_101))
    assert s["sequence_length"]["min"] == 5 and s["sequence_length"]["max"] == 204
    assert s["split"]["rows"] == {"train": 22_363, "valid": 22_363, "test": 22_363}
    items = pl.from_arrow(schema.read_table(out / "items.parquet", "items"))
    assert items["item_id"].to_list() == list(range(1, 12_102))


def test_temporal_rejected_without_timestamps(data_dir, tmp_path):
    from ucd.errors import DataError

    with pytest.raises(DataError, match="needs real timestamps"):
        prepare_named("beauty", tmp_path / "x", protocol="temporal", data_dir=data_dir, log=lambda *_: None)
    assert not (tmp_path / "x").exists()
