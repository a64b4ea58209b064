"""Bring-your-own-data reader: any CSV/TSV/JSONL/Parquet with a column mapping from config."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import polars as pl

from ucd.config import Strict
from ucd.data.raw import RawData, join_text, require_file
from ucd.errors import DataError

Format = Literal["auto", "csv", "tsv", "jsonl", "parquet"]


class TabularConfig(Strict):
    """Column mapping. Paths are relative to the dataset folder unless absolute."""

    interactions: str
    format: Format = "auto"
    user: str = "user_id"
    item: str = "item_id"
    # None: rows are in chronological order already and file order is used.
    timestamp: str | None = "timestamp"
    # False when the timestamp column is only an order within each user (no global clock),
    # which rules out the temporal split.
    has_timestamps: bool = True
    rating: str | None = None
    items: str | None = None
    items_format: Format = "auto"
    item_key: str | None = None  # the item id column in the items file; default: `item`
    title: str | None = "title"
    text_fields: list[str] = []  # extra item columns serialised into the prompt text


def _format(path: Path, fmt: Format) -> str:
    if fmt != "auto":
        return fmt
    name = path.name.lower().removesuffix(".gz")
    for ext, f in ((".tsv", "tsv"), (".csv", "csv"), (".jsonl", "jsonl"), (".json", "jsonl"),
                   (".ndjson", "jsonl"), (".parquet", "parquet"), (".pq", "parquet")):  # fmt: skip
        if name.endswith(ext):
            return f
    raise DataError(f"{path}: cannot tell the format from the name; set format: csv|tsv|jsonl|parquet")


def _read_any(path: Path, fmt: Format) -> tuple[pl.DataFrame, str]:
    require_file(path, "tabular data")
    kind = _format(path, fmt)
    try:
        if kind == "parquet":
            return pl.read_parquet(path), kind
        if kind == "jsonl":
            return pl.read_ndjson(path, infer_schema_length=None), kind
        return (
            pl.read_csv(
                path,
                separator="\t" if kind == "tsv" else ",",
                infer_schema=False,
                quote_char=None if kind == "tsv" else '"',
            ),
            kind,
        )
    except pl.exceptions.PolarsError as e:
        raise DataError(f"{path}: cannot read as {kind}: {str(e).splitlines()[0]}") from e


def _where(path: Path, kind: str, row: int) -> str:
    # Header is line 1 for delimited files; JSON lines and Parquet rows count from 1.
    if kind in ("csv", "tsv"):
        return f"{path}:{row + 2}"
    return f"{path}: row {row + 1}"


def _cast(df: pl.DataFrame, col: str, dtype: pl.DataType, path: Path, kind: str) -> pl.Series:
    src = df[col]
    if src.dtype == dtype:
        out = src
    elif dtype == pl.Int64 and src.dtype == pl.Utf8:
        out = src.str.strip_chars().cast(pl.Int64, strict=False)
        # A column of dates: accept ISO strings as Unix seconds rather than failing.
        if out.null_count() > src.null_count() and out.null_count() == len(out):
            dt = src.str.to_datetime(strict=False)
            out = (dt.dt.epoch("s")).cast(pl.Int64)
    elif src.dtype == pl.Utf8:
        out = src.str.strip_chars().cast(dtype, strict=False)
    else:
        out = src.cast(dtype, strict=False)
    bad = (out.is_null() & src.is_not_null()).arg_true()
    if len(bad):
        i = int(bad[0])
        raise DataError(f"{_where(path, kind, i)}: column '{col}' = {src[i]!r} is not a valid {dtype}")
    return out


def _need(df: pl.DataFrame, cols: list[str], path: Path) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {df.columns}")


def read_tabular(folder: Path, cfg: TabularConfig) -> RawData:
    ipath = Path(cfg.interactions)
    ipath = ipath if ipath.is_absolute() else folder / ipath
    df, kind = _read_any(ipath, cfg.format)
    cols = [cfg.user, cfg.item] + [c for c in (cfg.timestamp, cfg.rating) if c]
    _need(df, cols, ipath)
    for c in (cfg.user, cfg.item):
        nulls = df[c].is_null().arg_true()
        if len(nulls):
            raise DataError(f"{_where(ipath, kind, int(nulls[0]))}: column '{c}' is empty")
    user = df[cfg.user].cast(pl.Utf8).alias("user")
    item = df[cfg.item].cast(pl.Utf8).alias("item")
    if cfg.timestamp:
        ts = _cast(df, cfg.timestamp, pl.Int64, ipath, kind).alias("timestamp")
        nulls = ts.is_null().arg_true()
        if len(nulls):
            raise DataError(f"{_where(ipath, kind, int(nulls[0]))}: column '{cfg.timestamp}' is empty")
    else:
        ts = pl.Series("timestamp", range(df.height), dtype=pl.Int64)
    rating = (
        _cast(df, cfg.rating, pl.Float32, ipath, kind).alias("rating")
        if cfg.rating
        else pl.Series("rating", [None] * df.height, dtype=pl.Float32)
    )
    inter = pl.DataFrame([user, item, ts, rating])
    inputs = [ipath]

    if cfg.items:
        mpath = Path(cfg.items)
        mpath = mpath if mpath.is_absolute() else folder / mpath
        meta, _ = _read_any(mpath, cfg.items_format)
        key = cfg.item_key or cfg.item
        _need(meta, [key] + ([cfg.title] if cfg.title else []) + cfg.text_fields, mpath)
        meta = meta.unique(subset=[key], keep="first", maintain_order=True)
        titles = (
            meta[cfg.title].cast(pl.Utf8).fill_null("") if cfg.title else pl.Series([""] * meta.height)
        ).to_list()
        extra = {c: meta[c].cast(pl.Utf8).to_list() for c in cfg.text_fields}
        texts = [
            join_text(
                [("Title", t)] + [(c.replace("_", " ").capitalize(), extra[c][i]) for c in cfg.text_fields]
            )
            for i, t in enumerate(titles)
        ]
        items = pl.DataFrame(
            {"item": meta[key].cast(pl.Utf8), "title": titles, "text": texts},
            schema={"item": pl.Utf8, "title": pl.Utf8, "text": pl.Utf8},
        )
        inputs.append(mpath)
    else:
        items = pl.DataFrame(schema={"item": pl.Utf8, "title": pl.Utf8, "text": pl.Utf8})
    return RawData(
        inter, items, has_timestamps=cfg.has_timestamps and cfg.timestamp is not None, inputs=inputs
    )
