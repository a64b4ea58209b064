"""Full-ranking metrics on torch tensors.

Scores are ``[B, N + 1]``: column 0 is padding and is never ranked. Ranks are 0-based
(0 = top) and count ties AGAINST the target::

    rank = #{items with score > target's} + #{other items with score == target's}

so a model that gives every item the same score ranks every target last and earns nothing,
instead of collecting hits from an arbitrary tie order.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from scipy import stats
from torch import Tensor

DEFAULT_KS = (5, 10, 20)
COVERAGE_K = 10


def rank_of_target(scores: Tensor, targets: Tensor) -> Tensor:
    """0-based rank of ``targets[b]`` among items 1..N of ``scores[b]``, ties against it."""
    if scores.dim() != 2 or targets.shape != scores.shape[:1]:
        raise ValueError(
            f"scores must be [B, N+1] and targets [B]; got {tuple(scores.shape)} and {tuple(targets.shape)}"
        )
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN; ranking them would be meaningless")
    n = scores.shape[1] - 1
    targets = targets.long()
    if ((targets < 1) | (targets > n)).any():
        raise ValueError(f"targets must lie in 1..{n}")
    items = scores[:, 1:]
    t = scores.gather(1, targets[:, None])
    higher = (items > t).sum(1)
    tied_others = (items == t).sum(1) - 1
    return higher + tied_others


def metrics_from_ranks(ranks: Tensor, ks: Iterable[int] = DEFAULT_KS) -> dict[str, Tensor]:
    """Per-user ``ndcg@K``, ``recall@K`` (= hit rate, one target) and ``mrr@K``."""
    r = ranks.to(torch.float64)
    out: dict[str, Tensor] = {}
    for k in ks:
        hit = r < k
        out[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(r + 2.0), 0.0)
        out[f"recall@{k}"] = hit.to(torch.float64)
        out[f"mrr@{k}"] = torch.where(hit, 1.0 / (r + 1.0), 0.0)
    return out


SeenItems = Tensor | Sequence[Sequence[int] | Tensor]


def _pad_seen(seen: SeenItems, batch: int, device) -> Tensor:
    if isinstance(seen, Tensor):
        padded = seen.to(device=device, dtype=torch.long)
        if padded.dim() != 2:
            raise ValueError("seen must be a padded [B, S] tensor or a list of id lists")
    else:
        rows = [torch.as_tensor(list(r) if not isinstance(r, Tensor) else r) for r in seen]
        width = max((len(r) for r in rows), default=0)
        padded = torch.zeros(len(rows), max(width, 1), dtype=torch.long)
        for i, r in enumerate(rows):
            padded[i, : len(r)] = r.long()
        padded = padded.to(device)
    if padded.shape[0] != batch:
        raise ValueError(f"seen has {padded.shape[0]} rows for a batch of {batch}")
    return padded


def exclude_seen(scores: Tensor, targets: Tensor, seen: SeenItems) -> Tensor:
    """Copy of ``scores`` with seen items at -inf; the target keeps its score regardless."""
    out = scores.clone()
    idx = _pad_seen(seen, scores.shape[0], scores.device)
    rows = torch.arange(scores.shape[0], device=scores.device)
    target_scores = out[rows, targets.long()]
    # Index 0 (the padding filler) lands on the padding column, which is never ranked.
    out.scatter_(1, idx, float("-inf"))
    out[rows, targets.long()] = target_scores
    return out


def top_k_items(scores: Tensor, k: int) -> Tensor:
    """Item ids of the ``min(k, N)`` best-scored items per row (padding column excluded)."""
    items = scores[:, 1:]
    return items.topk(min(k, items.shape[1]), dim=1).indices + 1


class RankingEvaluator:
    """Accumulates per-user ranking metrics and catalogue coverage@10 over batches."""

    def __init__(self, n_items: int, ks: Iterable[int] = DEFAULT_KS) -> None:
        self.n_items = n_items
        self.ks = tuple(ks)
        self._ranks: list[Tensor] = []
        self._covered = torch.zeros(n_items + 1, dtype=torch.bool)

    def update(self, scores: Tensor, targets: Tensor, seen: SeenItems | None = None) -> None:
        if scores.shape[1] != self.n_items + 1:
            raise ValueError(f"scores have {scores.shape[1]} columns, expected {self.n_items + 1}")
        scores = scores.detach()
        if seen is not None:
            scores = exclude_seen(scores, targets, seen)
        self._ranks.append(rank_of_target(scores, targets).cpu())
        top = top_k_items(scores, COVERAGE_K).cpu()
        self._covered[top.reshape(-1)] = True

    def per_user(self) -> dict[str, Tensor]:
        """Per-user metric tensors (in update order) and ``rank``, for paired tests."""
        ranks = torch.cat(self._ranks) if self._ranks else torch.zeros(0, dtype=torch.long)
        return {"rank": ranks, **metrics_from_ranks(ranks, self.ks)}

    def compute(self) -> dict[str, float]:
        """Means over users plus ``coverage@10`` and ``n_users``."""
        per_user = self.per_user()
        n = int(per_user.pop("rank").numel())
        out = {name: float(v.mean()) if n else float("nan") for name, v in per_user.items()}
        out[f"coverage@{COVERAGE_K}"] = float(self._covered[1:].sum()) / self.n_items
        out["n_users"] = n
        return out


def paired_test(a_per_user: Tensor | Sequence[float], b_per_user: Tensor | Sequence[float]):
    """Paired t-test and Wilcoxon signed-rank test of b against a over the same users.

    Returns ``{"t", "p_value", "wilcoxon_p", "mean_diff", "n"}`` (diff = b - a). Identical
    inputs (or fewer than two users) give t = 0 and p = 1 rather than scipy's NaN.
    """
    a = np.asarray(a_per_user, dtype=np.float64)
    b = np.asarray(b_per_user, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired test needs two equal-length vectors, got {a.shape}, {b.shape}")
    diff = b - a
    out = {"mean_diff": float(diff.mean()) if diff.size else float("nan"), "n": int(diff.size)}
    if diff.size < 2 or not np.any(diff != 0):
        out.update(t=0.0, p_value=1.0, wilcoxon_p=1.0)
        return out
    with warnings.catch_warnings():
        # Near-constant differences trip scipy's precision warning; the result is still used.
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_rel(b, a)
        wil = stats.wilcoxon(diff, zero_method="wilcox")
    out.update(t=float(res.statistic), p_value=float(res.pvalue), wilcoxon_p=float(wil.pvalue))
    return out


def compare_runs(runs: Mapping[str, Sequence[Mapping[str, float]]]) -> list[dict]:
    """One row per (run, metric): mean ± std over seeds and change vs the first run.

    ``runs`` maps a run name to its per-seed metric dicts; the first entry is the baseline.
    ``rel_change`` is ``(mean - baseline_mean) / baseline_mean`` (NaN when the baseline is 0).
    """
    if not runs:
        return []
    names = list(runs)
    base = _summaries(runs[names[0]])
    rows = []
    for name in names:
        for metric, (mean, std, n) in _summaries(runs[name]).items():
            b = base.get(metric, (math.nan, math.nan, 0))[0]
            rel = (mean - b) / b if b and not math.isnan(b) else math.nan
            rel_text = "" if math.isnan(rel) or name == names[0] else f" ({rel:+.1%})"
            rows.append(
                {
                    "run": name,
                    "metric": metric,
                    "mean": mean,
                    "std": std,
                    "n": n,
                    "rel_change": rel,
                    "text": f"{mean:.4f} ± {std:.4f}{rel_text}",
                }
            )
    return rows


def _summaries(seeds: Sequence[Mapping[str, float]]) -> dict[str, tuple[float, float, int]]:
    metrics: dict[str, list[float]] = {}
    for seed in seeds:
        for k, v in seed.items():
            if isinstance(v, int | float) and not isinstance(v, bool) and k != "n_users":
                metrics.setdefault(k, []).append(float(v))
    out = {}
    for k, vals in metrics.items():
        arr = np.asarray(vals)
        std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
        out[k] = (float(arr.mean()), std, int(arr.size))
    return out
