"""MovieLens in its three public layouts: 100K (``u.data``/``u.item``), 1M/10M (``::``-separated
``.dat``) and 20M/25M/32M (``ratings.csv``/``movies.csv``)."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from ucd.data.raw import RawData, find_file, join_text, read_delimited, require_file
from ucd.errors import DataError

_YEAR = re.compile(r"\((\d{4})\)\s*$")

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip


def _movie_items(ids: list, titles: list[str], genres: list[list[str]], years: list) -> pl.DataFrame:
    texts = [
        join_text([("Title", t), ("Year", y), ("Genres", g)])
        for t, g, y in zip(titles, genres, years, strict=True)
    ]
    return pl.DataFrame(
        {"item": ids, "title": titles, "text": texts, "year": years, "genres": genres},
        schema={
            "item": pl.Int64,
            "title": pl.Utf8,
            "text": pl.Utf8,
            "year": pl.Int32,
            "genres": pl.List(pl.Utf8),
        },
    )


def _year_from_title(title: str) -> int | None:
    m = _YEAR.search(title)
    return int(m.group(1)) if m else None


def _ratings(path: Path, sep: str, header: bool) -> pl.DataFrame:
    names = ["user", "item", "rating", "timestamp"]
    df = read_delimited(
        path,
        names,
        {"user": pl.Int64, "item": pl.Int64, "rating": pl.Float32, "timestamp": pl.Int64},
        sep=sep,
        header=header,
    )
    return df.select("user", "item", "timestamp", "rating")


def read_ml100k(folder: Path) -> RawData:
    data = require_file(folder / "u.data", "MovieLens 100K ratings")
    item_path = require_file(folder / "u.item", "MovieLens 100K movies")
    inter = _ratings(data, "\t", header=False)
    names = ["item", "title", "release", "video_release", "url", *[f"g{i}" for i in range(19)]]
    dtypes = {"item": pl.Int64, **{f"g{i}": pl.Int64 for i in range(19)}}
    raw = read_delimited(item_path, names, dtypes, sep="|", encoding="latin-1")
    flags = raw.select([f"g{i}" for i in range(19)]).to_numpy()
    genres = [[ML100K_GENRES[j] for j in range(19) if row[j]] for row in flags]
    titles = raw["title"].to_list()
    years = []
    for t, rel in zip(titles, raw["release"].to_list(), strict=True):
        y = _year_from_title(t)
        if y is None and rel:
            y = int(rel[-4:]) if rel[-4:].isdigit() else None
        years.append(y)
    items = _movie_items(raw["item"].to_list(), titles, genres, years)
    return RawData(inter, items, has_timestamps=True, inputs=[data, item_path])


def _split_genres(col: list[str | None]) -> list[list[str]]:
    return [[g for g in (s or "").split("|") if g and g != "(no genres listed)"] for s in col]


def read_ml_dat(folder: Path) -> RawData:
    """ML-1M / ML-10M: ``ratings.dat`` and ``movies.dat`` with ``::`` separators."""
    ratings = require_file(folder / "ratings.dat", "MovieLens ratings.dat")
    movies = require_file(folder / "movies.dat", "MovieLens movies.dat")
    inter = _ratings(ratings, "::", header=False)
    # ML-1M's movies.dat is Latin-1; ML-10M's is UTF-8-compatible for these bytes.
    raw = read_delimited(
        movies, ["item", "title", "genres"], {"item": pl.Int64}, sep="::", encoding="latin-1"
    )
    titles = raw["title"].to_list()
    items = _movie_items(
        raw["item"].to_list(),
        titles,
        _split_genres(raw["genres"].to_list()),
        [_year_from_title(t) for t in titles],
    )
    return RawData(inter, items, has_timestamps=True, inputs=[ratings, movies])


def read_ml_csv(folder: Path) -> RawData:
    """ML-20M / 25M / 32M: ``ratings.csv`` (userId,movieId,rating,timestamp), ``movies.csv``."""
    ratings = find_file(folder, ["ratings.csv"], "MovieLens ratings.csv")
    movies = find_file(folder, ["movies.csv"], "MovieLens movies.csv")
    inter = read_delimited(
        ratings,
        ["userId", "movieId", "rating", "timestamp"],
        {"userId": pl.Int64, "movieId": pl.Int64, "rating": pl.Float32, "timestamp": pl.Int64},
        sep=",",
        header=True,
    ).select(
        pl.col("userId").alias("user"),
        pl.col("movieId").alias("item"),
        "timestamp",
        "rating",
    )
    # movies.csv quotes titles that contain commas, so it goes through the CSV parser proper.
    try:
        raw = pl.read_csv(movies, schema_overrides={"movieId": pl.Int64}, infer_schema=False)
        raw = raw.with_columns(pl.col("movieId").cast(pl.Int64))
    except pl.exceptions.PolarsError as e:
        raise DataError(f"{movies}: cannot parse movies.csv: {e}") from e
    for col in ("movieId", "title", "genres"):
        if col not in raw.columns:
            raise DataError(f"{movies}: missing column '{col}'; header has {raw.columns}")
    titles = [t or "" for t in raw["title"].to_list()]
    items = _movie_items(
        raw["movieId"].to_list(),
        titles,
        _split_genres(raw["genres"].to_list()),
        [_year_from_title(t) for t in titles],
    )
    return RawData(inter, items, has_timestamps=True, inputs=[ratings, movies])
