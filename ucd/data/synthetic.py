"""Seeded synthetic data: users with latent tastes over item genres, for hermetic and scale tests.

Each user has a few favourite genres with Dirichlet weights. A sequence walks through genres:
with probability ``stickiness`` the next item stays in the current genre, otherwise a genre is
drawn from the user's tastes; within a genre, popular items are more likely. So both the
user (tastes) and the order (genre runs) carry signal a sequential model can learn. All of it
is vectorised with numpy, so tens of millions of rows take seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class _Catalogue:
    """Items grouped by genre: ``order`` lists item indices genre by genre."""

    item_genre: np.ndarray
    order: np.ndarray
    size: np.ndarray  # items per genre, an empty genre borrowing genre 0's
    offset: np.ndarray  # where each genre starts in ``order``, likewise


def _catalogue(rng: np.random.Generator, n_items: int, n_genres: int) -> _Catalogue:
    item_genre = rng.integers(0, n_genres, size=n_items)
    order = np.argsort(item_genre, kind="stable")
    size = np.bincount(item_genre, minlength=n_genres)
    offset = np.concatenate([[0], np.cumsum(size)[:-1]])
    # An empty genre can never be drawn: give its draws to genre 0's items instead.
    size_safe = np.where(size > 0, size, size[size > 0][0])
    offset_safe = np.where(size > 0, offset, offset[size > 0][0])
    return _Catalogue(item_genre, order, size_safe, offset_safe)


def _sequence_lengths(rng: np.random.Generator, cfg: SyntheticConfig) -> np.ndarray:
    lengths = 5 + rng.geometric(1.0 / max(cfg.mean_length - 4.0, 1.0), size=cfg.n_users)
    if cfg.n_interactions is not None:
        lengths = np.maximum(5, np.floor(lengths * cfg.n_interactions / lengths.sum())).astype(np.int64)
    return lengths


def _genre_walk(
    rng: np.random.Generator, cfg: SyntheticConfig, user: np.ndarray, pos: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(genre of every interaction, each user's favourite genres, best first)."""
    n = len(user)
    fav_k = min(cfg.favourite_genres, cfg.n_genres)
    favs = np.argsort(rng.random((cfg.n_users, cfg.n_genres)), axis=1)[:, :fav_k]
    weights = rng.dirichlet(np.ones(fav_k), size=cfg.n_users)
    cum = np.cumsum(weights, axis=1)
    u = rng.random(n)
    pick = np.zeros(n, dtype=np.int64)
    for j in range(fav_k - 1):
        pick += u > cum[user, j]
    drawn = favs[user, pick]
    switch = (rng.random(n) >= cfg.stickiness) | (pos == 0)
    last_switch = np.maximum.accumulate(np.where(switch, np.arange(n), 0))
    return drawn[last_switch], favs


def _timestamps(rng: np.random.Generator, n_users: int, user: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Each user starts somewhere in one year; gaps between interactions are about a day."""
    t0 = 1_600_000_000
    start_t = rng.integers(t0, t0 + 365 * 86400, size=n_users)
    gaps = np.cumsum(rng.exponential(86400.0, size=len(user))).astype(np.int64)
    return start_t[user] + gaps - gaps[starts][user]


def _items_frame(item_genre: np.ndarray) -> pl.DataFrame:
    n_i = len(item_genre)
    titles = [f"{_ADJ[i % len(_ADJ)]} {_NOUN[(i // len(_ADJ)) % len(_NOUN)]} {i + 1}" for i in range(n_i)]
    genres = [[f"genre-{g}"] for g in item_genre.tolist()]
    return pl.DataFrame(
        {
            "item": np.arange(1, n_i + 1, dtype=np.int64),
            "title": titles,
            "text": [join_text([("Title", t), ("Genres", g)]) for t, g in zip(titles, genres, strict=True)],
            "genres": genres,
        },
        schema={"item": pl.Int64, "title": pl.Utf8, "text": pl.Utf8, "genres": pl.List(pl.Utf8)},
    )


def generate(cfg: SyntheticConfig) -> RawData:
    # The draws happen in a fixed order, so a seed always gives the same data.
    rng = np.random.default_rng(cfg.seed)
    cat = _catalogue(rng, cfg.n_items, cfg.n_genres)
    lengths = _sequence_lengths(rng, cfg)
    n = int(lengths.sum())
    user = np.repeat(np.arange(cfg.n_users, dtype=np.int64), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    pos = np.arange(n, dtype=np.int64) - np.repeat(starts, lengths)
    genre, favs = _genre_walk(rng, cfg, user, pos)
    # Within a genre, low ranks (the popular items) are the likelier ones.
    rank = np.floor(cat.size[genre] * rng.random(n) ** cfg.popularity_skew).astype(np.int64)
    item = cat.order[cat.offset[genre] + rank]
    ts = _timestamps(rng, cfg.n_users, user, starts)
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
    return RawData(inter, _items_frame(cat.item_genre), has_timestamps=True, inputs=[])
