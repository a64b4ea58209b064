"""Computed facts about a history (shares of genres/categories/brands, decades, ratings).

The structured profile asks for "approximate shares"; counting is what small models cannot do
and large ones do sloppily, so the prompt states the counts and the model words them. Fields
are read generically from the item text's ``Label: value`` parts, so any domain works.
"""

from __future__ import annotations

import math
from collections import Counter

# Labels whose values are comma-separated lists (one item counts once per value).
_LIST_LABELS = ("genres", "categories", "category", "tags")
_SINGLE_LABELS = ("brand",)


def _fields(text: str) -> dict[str, str]:
    out = {}
    for part in text.split(" | "):
        if ": " in part:
            label, value = part.split(": ", 1)
            out[label.strip().lower()] = value.strip()
    return out


def _shares(counter: Counter, n: int, top: int) -> str:
    return ", ".join(f"{k} {round(100 * c / n)}%" for k, c in counter.most_common(top))


def _valid(r) -> bool:
    return r is not None and not (isinstance(r, float) and math.isnan(r))


def history_facts(
    history: list[int], ratings: list[float | None] | None, item_text: dict[int, str], top: int = 5
) -> str:
    n = len(history)
    if n == 0:
        return ""
    fields = [_fields(item_text.get(i, "")) for i in history]
    lines = [f"- items: {n}"]
    rs = [float(r) for r in (ratings or []) if _valid(r)]
    if rs:
        mean = sum(rs) / len(rs)
        high = sum(r >= 4 for r in rs) / len(rs)
        low = sum(r <= 2 for r in rs) / len(rs)
        lines.append(
            f"- average rating {mean:.1f}/5; {round(100 * high)}% rated 4-5, {round(100 * low)}% rated 1-2"
        )
    for label in _LIST_LABELS + _SINGLE_LABELS:
        c: Counter = Counter()
        for f in fields:
            if label in f:
                vals = [v.strip() for v in f[label].split(",")] if label in _LIST_LABELS else [f[label]]
                c.update(list(dict.fromkeys(v for v in vals if v)))  # once per item, first-seen order
        if c:
            lines.append(f"- {label}: {_shares(c, n, top)}")
    years = [int(f["year"]) for f in fields if f.get("year", "").isdigit()]
    if years:
        dec = Counter(f"{y // 10 * 10}s" for y in years)
        lines.append(f"- decades: {_shares(dec, len(years), 3)}")
    if n >= 8:
        # The newest quarter against the rest: the raw material of "Engagement Trends".
        k = max(2, n // 4)
        for label in _LIST_LABELS + _SINGLE_LABELS:
            recent = Counter(v.strip() for f in fields[-k:] if label in f for v in f[label].split(","))
            if recent:
                lines.append(f"- newest {k} items, {label}: {_shares(recent, k, 3)}")
                break
    return "\n".join(lines)
