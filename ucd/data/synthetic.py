"""Seeded synthetic data: users with latent tastes over item genres, for hermetic and scale tests.

Each user has a few favourite genres with Dirichlet weights. A sequence walks through genres:
with probability ``stickiness`` the next item stays in the current genre, otherwise a genre is
drawn from the user's tastes; within a genre, popular items are more likely. So both the
user (tastes) and the order (genre runs) carry signal a sequential model can learn. All of it
is vectorised with numpy, so tens of millions of rows take seconds.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from ucd.config import Strict
from ucd.data.raw import RawData, join_text

_ADJ = ["Amber", "Bold", "Calm", "Daring", "Electric", "Faded", "Gentle", "Hidden", "Iron",
        "Jade", "Kind", "Lucid", "Midnight", "Noble", "Open", "Pale", "Quiet", "Rapid"]  # fmt: skip
_NOUN = ["Anchor", "Bridge", "Canyon", "Dream", "Echo", "Forest", "Garden", "Harbor", "Island",
         "Journey", "Kingdom", "Lantern", "Meadow", "Night", "Orbit", "Path", "River", "Storm"]  # fmt: skip


class SyntheticConfig(Strict):
    n_users: int = 1000
    n_items: int = 500
    n_genres: int = 10
    mean_length: float = 20.0  # minimum length is 5, so k-core filtering keeps most users
    n_interactions: int | None = None  # if set, lengths are rescaled to about this total
    favourite_genres: int = 3
    stickiness: float = 0.7
    popularity_skew: float = 2.0  # rank = size * u**skew: higher is more skewed
    seed: int = 0


def generate(cfg: SyntheticConfig) -> RawData:
    rng = np.random.default_rng(cfg.seed)
    n_u, n_i, n_g = cfg.n_users, cfg.n_items, cfg.n_genres
    fav_k = min(cfg.favourite_genres, n_g)

    item_genre = rng.integers(0, n_g, size=n_i)
    order = np.argsort(item_genre, kind="stable")
    size = np.bincount(item_genre, minlength=n_g)
    offset = np.concatenate([[0], np.cumsum(size)[:-1]])
    # An empty genre can never be drawn: give its draws to genre 0's items instead.
    size_safe = np.where(size > 0, size, size[size > 0][0])
    offset_safe = np.where(size > 0, offset, offset[size > 0][0])

    lengths = 5 + rng.geometric(1.0 / max(cfg.mean_length - 4.0, 1.0), size=n_u)
    if cfg.n_interactions is not None:
        lengths = np.maximum(5, np.floor(lengths * cfg.n_interactions / lengths.sum())).astype(np.int64)
    n = int(lengths.sum())
    user = np.repeat(np.arange(n_u, dtype=np.int64), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    pos = np.arange(n, dtype=np.int64) - np.repeat(starts, lengths)

    favs = np.argsort(rng.random((n_u, n_g)), axis=1)[:, :fav_k]
    weights = rng.dirichlet(np.ones(fav_k), size=n_u)
    cum = np.cumsum(weights, axis=1)
    u = rng.random(n)
    pick = np.zeros(n, dtype=np.int64)
    for j in range(fav_k - 1):
        pick += u > cum[user, j]
    drawn = favs[user, pick]
    switch = (rng.random(n) >= cfg.stickiness) | (pos == 0)
    last_switch = np.maximum.accumulate(np.where(switch, np.arange(n), 0))
    genre = drawn[last_switch]

    rank = np.floor(size_safe[genre] * rng.random(n) ** cfg.popularity_skew).astype(np.int64)
    item = order[offset_safe[genre] + rank]

    t0 = 1_600_000_000
    start_t = rng.integers(t0, t0 + 365 * 86400, size=n_u)
    gaps = np.cumsum(rng.exponential(86400.0, size=n)).astype(np.int64)
    ts = start_t[user] + gaps - gaps[starts][user]
    top = genre == favs[user, 0]
    rating = np.clip(np.rint(3.0 + 1.5 * top + rng.normal(0.0, 1.0, size=n)), 1, 5)

    inter = pl.DataFrame(
        {
            "user": user + 1,
            "item": item.astype(np.int64) + 1,
            "timestamp": ts,
            "rating": rating.astype(np.float32),
        }
    )
    titles = [f"{_ADJ[i % len(_ADJ)]} {_NOUN[(i // len(_ADJ)) % len(_NOUN)]} {i + 1}" for i in range(n_i)]
    genres = [[f"genre-{g}"] for g in item_genre.tolist()]
    items = pl.DataFrame(
        {
            "item": np.arange(1, n_i + 1, dtype=np.int64),
            "title": titles,
            "text": [join_text([("Title", t), ("Genres", g)]) for t, g in zip(titles, genres, strict=True)],
            "genres": genres,
        },
        schema={"item": pl.Int64, "title": pl.Utf8, "text": pl.Utf8, "genres": pl.List(pl.Utf8)},
    )
    return RawData(inter, items, has_timestamps=True, inputs=[])
