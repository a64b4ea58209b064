"""Offline evaluation: one model, reference recommenders, and comparisons across runs/seeds.

Every report states whether seen (history) items were removed from the ranking.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ucd.data.tensors import SequenceData, SplitRows, seen_items
from ucd.evaluate.metrics import RankingEvaluator, compare_runs, paired_test
from ucd.train.epoch import evaluate
from ucd.train.model_dir import load_student, resolve_model_dir


@dataclass
class EvalResult:
    name: str
    metrics: dict[str, float]
    per_user: dict[str, np.ndarray]
    user_ids: np.ndarray
    exclude_seen: bool


def _rows(data: SequenceData, split: str) -> SplitRows:
    if split not in ("valid", "test"):
        raise ValueError(f"split must be valid or test, got {split!r}")
    return data.valid if split == "valid" else data.test


def _result(name: str, ev: RankingEvaluator, rows: SplitRows, exclude_seen: bool) -> EvalResult:
    per_user = {k: v.numpy() for k, v in ev.per_user().items()}
    return EvalResult(name, ev.compute(), per_user, rows.user_ids, exclude_seen)


def evaluate_model(
    model: str | Path,
    data: SequenceData,
    split: str = "test",
    exclude_seen: bool = False,
    batch_size: int = 512,
    name: str | None = None,
) -> EvalResult:
    loaded = load_student(resolve_model_dir(str(model)))
    if loaded.config.n_items != data.n_items:
        raise ValueError(
            f"model {model} scores {loaded.config.n_items} items but the dataset has {data.n_items}: "
            "was it trained on another preparation of the data?"
        )
    rows = _rows(data, split)
    ev = evaluate(loaded.model, rows, data.n_items, loaded.config.max_len, exclude_seen, batch_size)
    return _result(name or str(model), ev, rows, exclude_seen)


def evaluate_most_popular(data: SequenceData, split: str = "test", exclude_seen: bool = False) -> EvalResult:
    """Items ranked by their count in the training rows, the same for every user."""
    rows = _rows(data, split)
    pop = torch.from_numpy(data.popularity().astype(np.float64))
    ev = RankingEvaluator(data.n_items)
    for start in range(0, len(rows), 1024):
        hist = rows.histories[start : start + 1024]
        scores = pop.expand(len(hist), -1).clone()
        scores[:, 0] = float("-inf")
        seen = seen_items(hist, exclude_seen)
        ev.update(scores, torch.from_numpy(rows.targets[start : start + 1024]), seen)
    return _result("most-popular", ev, rows, exclude_seen)


@functools.lru_cache(maxsize=4)
def _item_vectors(prepared: str, fingerprint: str, embedder: str) -> np.ndarray:
    # A report scores one profile-only reference per profile source on the same items: the
    # item texts (tens of thousands on Beauty) are embedded once per process, not per source.
    # The fingerprint is in the key so a re-prepared folder at the same path is embedded again.
    from ucd.embed.embedder import Embedder
    from ucd.evaluate.references import item_text_embeddings

    vecs = item_text_embeddings(prepared, Embedder(embedder))
    vecs.flags.writeable = False
    return vecs


def evaluate_profile_only_reference(
    prepared: str | Path,
    data: SequenceData,
    profiles: str | Path,
    split: str = "test",
    exclude_seen: bool = False,
    name: str = "profile-only",
) -> EvalResult:
    """Items ranked by cosine between each user's profile vector and the items' text vectors,
    the latter embedded by the embedder the profile table records (``embed_model``)."""
    from ucd import schema
    from ucd.data.tensors import ProfileTable
    from ucd.errors import DataError
    from ucd.evaluate.references import evaluate_profile_only

    path = schema.profile_embeddings_file(profiles)
    meta = schema.read_meta(path)
    embedder = meta.get("embed_model")
    if not embedder:
        raise DataError(f"{path}: the metadata does not say which embedder made the vectors (embed_model)")
    if (meta.get("reduction") or {}).get("method", "none") != "none":
        raise DataError(f"{path}: vectors were reduced ({meta['reduction']}); item texts cannot be compared")
    table = ProfileTable.load(path, data.n_users, expected_fingerprint=data.fingerprint)
    items = _item_vectors(str(Path(prepared).resolve()), data.fingerprint, embedder).copy()
    rows = _rows(data, split)
    ev = evaluate_profile_only(rows, table.vectors, table.has, items, exclude_seen)
    return _result(name, ev, rows, exclude_seen)


def per_user_mean(results: list[EvalResult], metric: str = "ndcg@10") -> np.ndarray:
    """Each user's ``metric`` averaged over the runs (seeds) of one variant."""
    users = results[0].user_ids
    for r in results[1:]:
        if not np.array_equal(r.user_ids, users):
            raise ValueError("runs were evaluated on different users; cannot pair them")
    return np.mean([r.per_user[metric] for r in results], axis=0)


def compare(variants: dict[str, list[EvalResult]], metric: str = "ndcg@10") -> dict:
    """Mean ± std over seeds per variant, change vs the first variant, paired test over users.

    For the paired test each user's metric is averaged over the variant's seeds first, so the
    test compares the variants, not individual seeds.
    """
    names = list(variants)
    base_name = names[0]
    rows = compare_runs({n: [r.metrics for r in variants[n]] for n in names})
    base = per_user_mean(variants[base_name], metric)
    tests = {}
    for n in names[1:]:
        other = per_user_mean(variants[n], metric)
        tests[n] = paired_test(base, other)
    seen = {r.exclude_seen for rs in variants.values() for r in rs}
    return {
        "baseline": base_name,
        "metric_for_test": metric,
        "rows": rows,
        "paired_tests": tests,
        "exclude_seen": sorted(seen),
    }


def format_comparison(
    report: dict, metrics: tuple[str, ...] = ("ndcg@10", "recall@10", "mrr@10", "coverage@10")
) -> str:
    by = {}
    for r in report["rows"]:
        by.setdefault(r["run"], {})[r["metric"]] = r
    header = (
        "| variant | n | "
        + " | ".join(metrics)
        + f" | p ({report['metric_for_test']}, paired t / Wilcoxon) |"
    )
    lines = [header, "|" + "---|" * (len(metrics) + 3)]
    for name, ms in by.items():
        n = next(iter(ms.values()))["n"]
        cells = [ms[m]["text"] if m in ms else "" for m in metrics]
        t = report["paired_tests"].get(name)
        p = "" if t is None else f"{t['p_value']:.3g} / {t['wilcoxon_p']:.3g}"
        lines.append(f"| {name} | {n} | " + " | ".join(cells) + f" | {p} |")
    seen = report["exclude_seen"]
    note = "seen items removed from the ranking" if seen == [True] else "seen items kept in the ranking"
    if len(seen) > 1:
        note = "MIXED: some runs removed seen items, some did not"
    lines.append(
        f"\nFull ranking over the catalogue; {note}; mean ± std over seeds; change vs {report['baseline']}."
    )
    return "\n".join(lines)
