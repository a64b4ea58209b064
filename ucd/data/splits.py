"""The two evaluation protocols (docs/design.md, "Evaluation"), as ``sequences`` rows.

- ``loo``: per user, the last item is the test target, the one before the validation target;
  the train row holds everything before the validation target.
- ``temporal``: a global cut at the ``quantile`` of all timestamps. Users active after the cut
  are test users: their target is their last item, their input history everything before it,
  and their train row only what happened up to the cut. Of the other users, ``valid_share``
  (seeded draw) are validation users: last item as target, the rest as history and as train
  row. So no training row ever holds an interaction after the cut, and no target is trained on.

Train rows are what profiles are written from (no leakage of evaluated items).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field

from ucd.config import Strict
from ucd.errors import DataError


class SplitConfig(Strict):
    protocol: Literal["loo", "temporal"] = "loo"
    quantile: float = Field(0.8, gt=0.0, lt=1.0)
    valid_share: float = Field(0.2, ge=0.0, lt=1.0)
    seed: int = 42


def _rows(seqs: pl.DataFrame, split: str, hist_len: pl.Expr, target_idx: pl.Expr | None) -> pl.DataFrame:
    target = (
        pl.col("items").list.get(target_idx).cast(pl.Int32)
        if target_idx is not None
        else pl.lit(None, pl.Int32)
    )
    return seqs.select(
        "user_id",
        pl.lit(split).alias("split"),
        pl.col("items").list.slice(0, hist_len).alias("history"),
        target.alias("target"),
        pl.col("ratings").list.slice(0, hist_len).alias("history_rating"),
    ).filter(pl.col("history").list.len() > 0)


def _user_sequences(inter: pl.DataFrame) -> pl.DataFrame:
    return (
        inter.group_by("user_id", maintain_order=True)
        .agg(
            pl.col("item_id").alias("items"),
            pl.col("rating").alias("ratings"),
            pl.col("timestamp").alias("times"),
        )
        .with_columns(pl.col("items").list.len().alias("n"))
    )


def split_loo(inter: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
    seqs = _user_sequences(inter)
    short = int((seqs["n"] < 3).sum())
    seqs = seqs.filter(pl.col("n") >= 3)
    n = pl.col("n")
    out = pl.concat(
        [
            _rows(seqs, "train", n - 2, None),
            _rows(seqs, "valid", n - 2, n - 2),
            _rows(seqs, "test", n - 1, n - 1),
        ]
    )
    return out, {"users_too_short": short}


def split_temporal(inter: pl.DataFrame, cfg: SplitConfig) -> tuple[pl.DataFrame, dict]:
    cut = int(inter["timestamp"].quantile(cfg.quantile, interpolation="lower"))
    seqs = _user_sequences(inter).with_columns(
        pl.col("times").list.eval((pl.element() <= cut).sum()).list.first().alias("n_before")
    )
    is_test = pl.col("n_before") < pl.col("n")
    test_users = seqs.filter(is_test)
    rest = seqs.filter(~is_test)
    candidates = rest.filter(pl.col("n") >= 2)["user_id"].to_numpy()
    rng = np.random.default_rng(cfg.seed)
    n_valid = int(round(cfg.valid_share * len(candidates)))
    valid_ids = np.sort(rng.permutation(candidates)[:n_valid])
    is_valid = pl.col("user_id").is_in(pl.Series(valid_ids, dtype=pl.Int32).implode())
    valid_users = rest.filter(is_valid)
    train_only = rest.filter(~is_valid)
    n = pl.col("n")
    out = pl.concat(
        [
            _rows(test_users, "train", pl.col("n_before"), None),
            _rows(valid_users, "train", n - 1, None),
            _rows(train_only, "train", n, None),
            _rows(valid_users, "valid", n - 1, n - 1),
            _rows(test_users, "test", n - 1, n - 1),
        ]
    )
    return out, {
        "cut_timestamp": cut,
        "quantile": cfg.quantile,
        "test_users": test_users.height,
        "valid_users": valid_users.height,
    }


_ORDER = {"train": 0, "valid": 1, "test": 2}


def make_splits(inter: pl.DataFrame, cfg: SplitConfig, has_timestamps: bool) -> tuple[pl.DataFrame, dict]:
    if cfg.protocol == "temporal":
        if not has_timestamps:
            raise DataError(
                "split.protocol=temporal needs real timestamps, but this dataset only has an order "
                "within each user; use split.protocol=loo"
            )
        out, info = split_temporal(inter, cfg)
    else:
        out, info = split_loo(inter)
    out = (
        out.with_columns(pl.col("split").replace_strict(_ORDER, return_dtype=pl.Int8).alias("_o"))
        .sort(["user_id", "_o"])
        .drop("_o")
    )
    counts = {s: int((out["split"] == s).sum()) for s in _ORDER}
    for s, c in counts.items():
        if c == 0:
            raise DataError(
                f"split '{cfg.protocol}' leaves no {s} users (quantile={cfg.quantile}, "
                f"valid_share={cfg.valid_share}); check the split settings and filtering"
            )
    return out, {"protocol": cfg.protocol, "rows": counts, **info}
