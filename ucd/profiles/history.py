"""A user's training history as prompt lines, from a prepared dataset.

Only ``split == "train"`` rows are read: under ``loo`` they stop before the validation and test
targets, under ``temporal`` before the cut, so no prompt can see an evaluation item.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ucd.errors import DataError
from ucd.schema import read_meta, read_table


@dataclass
class Prepared:
    folder: Path
    dataset: str
    domain: str
    fingerprint: str
    protocol: str
    item_text: dict[int, str]
    train: pa.Table  # user_id, history, history_rating (nullable entries)
    eval_users: set[int]  # users that have a valid or test row


def _manifest(folder: Path) -> dict:
    m = folder / "manifest.json"
    if m.exists():
        return json.loads(m.read_text())
    # A folder without a manifest still carries the metadata in every table.
    return read_meta(folder / "sequences.parquet")


def _ratings_from_interactions(folder: Path, train: pa.Table) -> pa.Array:
    """Fallback when sequences lack ``history_rating``: look ratings up per (user, item)."""
    path = folder / "interactions.parquet"
    lookup: dict[tuple[int, int], float | None] = {}
    if path.exists():
        t = read_table(path, "interactions", columns=["user_id", "item_id", "rating"])
        for u, i, r in zip(*(t.column(c).to_pylist() for c in ("user_id", "item_id", "rating")), strict=True):
            lookup[(u, i)] = r
    out = []
    for u, hist in zip(train.column("user_id").to_pylist(), train.column("history").to_pylist(), strict=True):
        out.append([lookup.get((u, i)) for i in hist])
    return pa.array(out, type=pa.list_(pa.float32()))


def load_prepared(folder: str | Path) -> Prepared:
    folder = Path(folder)
    if not (folder / "sequences.parquet").exists():
        raise DataError(f"{folder}: not a prepared dataset (no sequences.parquet); run `ucd data prepare`")
    man = _manifest(folder)
    items = read_table(folder / "items.parquet", "items", columns=["item_id", "text"])
    item_text = dict(zip(items.column("item_id").to_pylist(), items.column("text").to_pylist(), strict=True))
    seqs = read_table(folder / "sequences.parquet", "sequences")
    is_train = pc.equal(seqs.column("split"), "train")
    train = seqs.filter(is_train)
    eval_users = set(seqs.filter(pc.invert(is_train)).column("user_id").to_pylist())
    if "history_rating" in train.column_names:
        ratings = train.column("history_rating").combine_chunks()
    else:
        ratings = _ratings_from_interactions(folder, train)
    train = pa.table(
        {
            "user_id": train.column("user_id").cast(pa.int32()),
            "history": train.column("history"),
            "history_rating": ratings.cast(pa.list_(pa.float32())),
        }
    ).sort_by("user_id")
    return Prepared(
        folder=folder,
        dataset=str(man.get("dataset", folder.name)),
        domain=str(man.get("domain", "generic")),
        fingerprint=str(man.get("fingerprint", "")),
        protocol=str(man.get("protocol", "")),
        item_text=item_text,
        train=train,
        eval_users=eval_users,
    )


def truncate_fields(text: str, field_chars: int, sep: str = " | ") -> str:
    """Cut each ``Label: value`` field to a budget, so one long description cannot eat the prompt."""
    out = []
    for f in text.split(sep):
        f = " ".join(f.split())
        out.append(f if len(f) <= field_chars else f[: field_chars - 1].rstrip() + "…")
    return sep.join(x for x in out if x)


def format_rating(r: float | None) -> str:
    if r is None or (isinstance(r, float) and math.isnan(r)):
        return ""
    return f"{int(r)}/5" if float(r).is_integer() else f"{r:.1f}/5"


def entry_lines(
    history: list[int], ratings: list[float | None] | None, item_text: dict[int, str], field_chars: int
) -> list[str]:
    """One line per interaction, chronological: ``- 4/5 | Title: ... | Genres: ...``."""
    ratings = ratings if ratings is not None else [None] * len(history)
    lines = []
    for item, r in zip(history, ratings, strict=True):
        text = truncate_fields(item_text.get(item, f"item {item}"), field_chars)
        signal = format_rating(r)
        lines.append(f"- {signal} | {text}" if signal else f"- {text}")
    return lines
