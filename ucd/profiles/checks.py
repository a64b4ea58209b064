"""Output checks: an LLM answer is ok, truncated or failed, with the reason.

Small models at a warm temperature loop ("I like movies. I like movies. ..."), stop at once, or
run into max_tokens; none of that may pass as a good profile.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from ucd.profiles.config import ChecksConfig

OK, FAILED, TRUNCATED = "ok", "failed", "truncated"

_WORD = re.compile(r"\w+", re.UNICODE)
_ENUM = re.compile(r"^(?:[-*•]|\d+[.)])\s*")  # list markers and numbering


@dataclass(frozen=True)
class Verdict:
    status: str
    reason: str  # "" when ok


def distinct_ngram_share(text: str, n: int = 3) -> float:
    # Numbers become one token, so "1. X 2. X 3. X" counts as the loop it is.
    words = ["<n>" if w.isdigit() else w.lower() for w in _WORD.findall(text)]
    if len(words) < n + 5:
        return 1.0  # too short to judge repetition (the length check handles it)
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams)


def max_line_repeats(text: str) -> int:
    lines = [_ENUM.sub("", " ".join(ln.split()).lower()) for ln in text.splitlines()]
    lines = [ln for ln in lines if len(ln) > 3]
    return max(Counter(lines).values(), default=0)


def judge(text: str | None, finish: str | None, error: str | None, cfg: ChecksConfig) -> Verdict:
    """``finish`` is "length" when the answer hit max_tokens; ``error`` a backend failure."""
    if error:
        return Verdict(FAILED, f"error: {error[:200]}")
    body = (text or "").strip()
    if len(body) < cfg.min_chars:
        return Verdict(FAILED, "empty")
    if distinct_ngram_share(body) < cfg.min_distinct_ngrams:
        return Verdict(FAILED, "degenerate: repeated phrases")
    if max_line_repeats(body) >= cfg.max_line_repeats:
        return Verdict(FAILED, "degenerate: repeated lines")
    if finish == "length":
        return Verdict(TRUNCATED, "hit max_tokens")
    return Verdict(OK, "")


def check_table(batch, cfg: ChecksConfig):
    """Adds ``status``, ``reason`` and ``created_at`` to LLM result rows (a pyarrow table)."""
    import datetime as dt

    import pyarrow as pa

    verdicts = [
        judge(t, f, e, cfg)
        for t, f, e in zip(
            batch.column("text").to_pylist(),
            batch.column("finish").to_pylist(),
            batch.column("error").to_pylist(),
            strict=True,
        )
    ]
    now = dt.datetime.now(dt.UTC)
    batch = batch.append_column("status", pa.array([v.status for v in verdicts], pa.string()))
    batch = batch.append_column("reason", pa.array([v.reason for v in verdicts], pa.string()))
    return batch.append_column("created_at", pa.array([now] * batch.num_rows, pa.timestamp("us", tz="UTC")))
