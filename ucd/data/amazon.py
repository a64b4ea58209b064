"""Amazon reviews: the 2014 (McAuley), 2018 (Ni et al.) and 2023 (Hou et al.) releases.

Reviews are JSON lines in all three; the 2014 metadata lines are Python literals (single
quotes), not JSON. Item ids are ASINs, or ``parent_asin`` in 2023 (variants share one item).
"""

from __future__ import annotations

import ast
import html
import io
import json
import re
from pathlib import Path

import polars as pl

from ucd.data.raw import RawData, find_file, iter_records, join_text, open_text
from ucd.errors import DataError

_PRICE = re.compile(r"\d+(?:\.\d+)?")
_TAG = re.compile(r"<[^>]+>")

# Per release: review file names, and the review fields for (user, item, rating, time, scale).
_RELEASES = {
    "2014": {
        "reviews": ["reviews_{c}_5.json.gz", "reviews_{c}_5.json", "reviews_{c}.json.gz", "reviews_{c}.json"],
        "meta": ["meta_{c}.json.gz", "meta_{c}.json"],
        "fields": ("reviewerID", "asin", "overall", "unixReviewTime", 1),
    },
    "2018": {
        "reviews": ["{c}_5.json.gz", "{c}_5.json", "{c}.json.gz", "{c}.json"],
        "meta": ["meta_{c}.json.gz", "meta_{c}.json"],
        "fields": ("reviewerID", "asin", "overall", "unixReviewTime", 1),
    },
    "2023": {
        "reviews": ["{c}.jsonl.gz", "{c}.jsonl"],
        "meta": ["meta_{c}.jsonl.gz", "meta_{c}.jsonl"],
        # 2023 timestamps are milliseconds; stored as seconds like the other releases.
        "fields": ("user_id", "parent_asin", "rating", "timestamp", 1000),
    },
}  # fmt: skip


def _parse_line(line: str) -> dict:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return ast.literal_eval(line)


def _clean(text: object) -> str:
    if text is None:
        return ""
    if isinstance(text, list):
        text = " ".join(str(t) for t in text if t)
    return " ".join(html.unescape(_TAG.sub(" ", str(text))).split())


def _price(value: object) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        m = _PRICE.search(value.replace(",", ""))
        return float(m.group()) if m else None
    return None


def _categories(value: object) -> list[str]:
    """2014 nests lists of category paths; later releases give one flat list."""
    out: list[str] = []
    stack = [value]
    while stack:
        v = stack.pop(0)
        if isinstance(v, list):
            stack[:0] = v
        elif v:
            c = _clean(v)
            if c and c not in out:
                out.append(c)
    return out


def _read_reviews(path: Path, fields: tuple) -> pl.DataFrame:
    user_f, item_f, rating_f, time_f, scale = fields
    raw: bytes
    with open_text(path) as f:
        raw = f.read().encode("utf-8")
    try:
        df = pl.read_ndjson(io.BytesIO(raw), infer_schema_length=1000)
    except pl.exceptions.PolarsError:
        df = None
    if df is None or any(c not in df.columns for c in (user_f, item_f, time_f)):
        # Slow path: either malformed lines (named by number) or Python-literal lines.
        rows = {"user": [], "item": [], "timestamp": [], "rating": []}
        for lineno, rec in iter_records(path, _parse_line):
            missing = [k for k in (user_f, item_f, time_f) if k not in rec]
            if missing:
                raise DataError(f"{path}:{lineno}: record lacks field(s) {missing}")
            rows["user"].append(str(rec[user_f]))
            rows["item"].append(str(rec[item_f]))
            rows["timestamp"].append(int(rec[time_f]) // scale)
            r = rec.get(rating_f)
            rows["rating"].append(None if r is None else float(r))
        return pl.DataFrame(
            rows,
            schema={"user": pl.Utf8, "item": pl.Utf8, "timestamp": pl.Int64, "rating": pl.Float32},
        )
    nulls = df.select(pl.col(user_f).is_null() | pl.col(item_f).is_null() | pl.col(time_f).is_null())
    bad = nulls.to_series().arg_true()
    if len(bad):
        # Data lines are counted from 1 and blank lines are skipped by both readers.
        raise DataError(f"{path}: record {bad[0] + 1} lacks one of {user_f}, {item_f}, {time_f}")
    rating = pl.col(rating_f).cast(pl.Float32) if rating_f in df.columns else pl.lit(None, pl.Float32)
    return df.select(
        pl.col(user_f).cast(pl.Utf8).alias("user"),
        pl.col(item_f).cast(pl.Utf8).alias("item"),
        (pl.col(time_f).cast(pl.Int64) // scale).alias("timestamp"),
        rating.alias("rating"),
    )


def _read_meta(path: Path, item_key: str, release: str) -> pl.DataFrame:
    rows: dict[str, list] = {
        k: [] for k in ("item", "title", "text", "brand", "categories", "price", "description")
    }
    seen: set[str] = set()
    for lineno, rec in iter_records(path, _parse_line):
        if item_key not in rec:
            raise DataError(f"{path}:{lineno}: metadata record lacks '{item_key}'")
        item = str(rec[item_key])
        if item in seen:
            continue
        seen.add(item)
        title = _clean(rec.get("title"))
        brand = _clean(rec.get("brand") or rec.get("store"))
        cats = _categories(rec.get("categories") if release != "2018" else rec.get("category"))
        if release == "2023" and rec.get("main_category"):
            cats = [_clean(rec["main_category"]), *[c for c in cats if c != rec["main_category"]]]
        price = _price(rec.get("price"))
        desc = _clean(rec.get("description"))
        if not desc and rec.get("features"):
            desc = _clean(rec.get("features"))
        rows["item"].append(item)
        rows["title"].append(title)
        rows["brand"].append(brand or None)
        rows["categories"].append(cats)
        rows["price"].append(price)
        rows["description"].append(desc or None)
        rows["text"].append(
            join_text(
                [
                    ("Title", title),
                    ("Brand", brand),
                    ("Categories", cats),
                    ("Price", f"${price:.2f}" if price is not None else None),
                    ("Description", desc),
                ]
            )
        )
    return pl.DataFrame(
        rows,
        schema={
            "item": pl.Utf8,
            "title": pl.Utf8,
            "text": pl.Utf8,
            "brand": pl.Utf8,
            "categories": pl.List(pl.Utf8),
            "price": pl.Float32,
            "description": pl.Utf8,
        },
    )


def read_amazon(folder: Path, category: str, release: str) -> RawData:
    if release not in _RELEASES:
        raise DataError(f"unknown Amazon release '{release}' (known: {sorted(_RELEASES)})")
    spec = _RELEASES[release]
    reviews = find_file(folder, [n.format(c=category) for n in spec["reviews"]], f"Amazon {release} reviews")
    meta = find_file(folder, [n.format(c=category) for n in spec["meta"]], f"Amazon {release} metadata")
    inter = _read_reviews(reviews, spec["fields"])
    items = _read_meta(meta, "parent_asin" if release == "2023" else "asin", release)
    return RawData(inter, items, has_timestamps=True, inputs=[reviews, meta])
