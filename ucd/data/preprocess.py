"""Raw frames -> canonical ``users``/``items``/``interactions``: dedup, rating threshold,
iterative k-core, chronological order with a stable tie-break, ids remapped to 1..N.

Everything is columnar (polars), so 20M interactions fit in a few GB.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import polars as pl

from ucd.config import Strict
from ucd.data.raw import RawData
from ucd.errors import DataError


class PreprocessConfig(Strict):
    # exact: drop repeated (user, item, timestamp) rows; first/last: keep one interaction per
    # (user, item), the earliest or the latest; none: keep everything (re-consumption).
    dedup: Literal["none", "exact", "first", "last"] = "exact"
    rating_threshold: float | None = None  # keep interactions with rating >= this
    min_user_interactions: int = 5
    min_item_interactions: int = 5
    max_kcore_rounds: int = 100
    drop_items_without_text: bool = False


@dataclass
class Canonical:
    interactions: pl.DataFrame  # user_id, item_id, timestamp, rating; sorted chronologically
    items: pl.DataFrame  # item_id, source_id, title, text, optional fields
    users: pl.DataFrame  # user_id, source_id
    report: dict = field(default_factory=dict)


def kcore(df: pl.DataFrame, min_user: int, min_item: int, max_rounds: int) -> tuple[pl.DataFrame, int]:
    """Drop users and items below their minimum until both hold at once (or rounds run out)."""
    for rounds in range(1, max_rounds + 1):
        n = df.height
        if min_item > 1:
            df = df.filter(pl.len().over("item") >= min_item)
        if min_user > 1:
            df = df.filter(pl.len().over("user") >= min_user)
        if df.height == n:
            return df, rounds
    raise DataError(f"k-core filtering did not converge in {max_rounds} rounds; raise max_kcore_rounds")


def _id_map(keys: pl.Series, name: str) -> pl.DataFrame:
    """Sorted distinct source keys -> ids 1..N (0 stays free for padding)."""
    uniq = keys.unique().sort()
    return pl.DataFrame({name: uniq, f"{name}_id": pl.int_range(1, len(uniq) + 1, eager=True).cast(pl.Int32)})


def _raw_counts(inter: pl.DataFrame) -> dict:
    if inter.height == 0:
        raise DataError("no interactions in the input")
    return {
        "raw_interactions": inter.height,
        "raw_users": inter["user"].n_unique(),
        "raw_items": inter["item"].n_unique(),
    }


def _filter_rows(
    inter: pl.DataFrame, items_meta: pl.DataFrame, cfg: PreprocessConfig, report: dict
) -> pl.DataFrame:
    """Rating threshold, dedup and items without text; counts go to ``report``."""
    if cfg.rating_threshold is not None:
        if inter["rating"].null_count() == inter.height:
            raise DataError("rating_threshold is set but the dataset has no ratings")
        inter = inter.filter(pl.col("rating") >= cfg.rating_threshold)
        report["after_rating_threshold"] = inter.height

    if cfg.dedup == "exact":
        inter = inter.unique(subset=["user", "item", "timestamp"], keep="first", maintain_order=True)
    elif cfg.dedup in ("first", "last"):
        inter = inter.unique(subset=["user", "item"], keep=cfg.dedup, maintain_order=True)
    report["after_dedup"] = inter.height

    if cfg.drop_items_without_text:
        with_text = items_meta.filter(pl.col("text").str.len_chars() > 0)["item"]
        inter = inter.filter(pl.col("item").is_in(with_text.implode()))
    return inter


def _kcore_nonempty(inter: pl.DataFrame, cfg: PreprocessConfig, report: dict) -> pl.DataFrame:
    """The k-core; an error naming the thresholds when nothing is left."""
    inter, rounds = kcore(inter, cfg.min_user_interactions, cfg.min_item_interactions, cfg.max_kcore_rounds)
    report["kcore_rounds"] = rounds
    report["after_kcore"] = inter.height
    if inter.height == 0:
        raise DataError(
            f"no interactions left after filtering (min_user_interactions={cfg.min_user_interactions}, "
            f"min_item_interactions={cfg.min_item_interactions}, rating_threshold={cfg.rating_threshold})"
        )
    return inter


def _item_table(items: pl.DataFrame, meta: pl.DataFrame, report: dict) -> pl.DataFrame:
    """Kept items with their metadata: item_id, source_id, title, text, then any extra fields."""
    if meta.height and meta["item"].dtype != items["item"].dtype:
        meta = meta.with_columns(pl.col("item").cast(items["item"].dtype, strict=False))
    items_full = items.join(meta, on="item", how="left", maintain_order="left")
    missing = items_full["text"].null_count() if "text" in items_full.columns else items_full.height
    report["items_without_metadata"] = int(missing)
    items_full = items_full.with_columns(
        pl.col("item").cast(pl.Utf8).alias("source_id"),
        pl.col("title").fill_null("") if "title" in items_full.columns else pl.lit("").alias("title"),
        pl.col("text").fill_null("") if "text" in items_full.columns else pl.lit("").alias("text"),
    ).drop("item")
    extras = [c for c in items_full.columns if c not in ("item_id", "source_id", "title", "text")]
    return items_full.select("item_id", "source_id", "title", "text", *extras).sort("item_id")


def preprocess(raw: RawData, cfg: PreprocessConfig) -> Canonical:
    inter = raw.interactions
    report = _raw_counts(inter)
    # File order is the tie-break for equal timestamps, so remember it before any reordering.
    inter = inter.with_row_index("_row").sort(["user", "timestamp", "_row"])
    inter = _filter_rows(inter, raw.items, cfg, report)
    inter = _kcore_nonempty(inter, cfg, report)

    users = _id_map(inter["user"], "user")
    items = _id_map(inter["item"], "item")
    inter = (
        inter.join(users, on="user", how="left", maintain_order="left")
        .join(items, on="item", how="left", maintain_order="left")
        .sort(["user_id", "timestamp", "_row"])
        .select("user_id", "item_id", "timestamp", "rating")
    )
    items_full = _item_table(items, raw.items, report)
    users = users.select("user_id", pl.col("user").cast(pl.Utf8).alias("source_id"))
    return Canonical(inter, items_full, users, report)
