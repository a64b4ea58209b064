"""The comparisons of a report beyond the main table: by profile coverage, seed by seed against
the baseline, and each ablation against the distilled variant whose one setting it changes."""

from __future__ import annotations

import numpy as np

from experiments.grid import BASELINE, distilled_name
from ucd.data.tensors import ProfileTable
from ucd.evaluate.metrics import paired_test
from ucd.evaluate.offline import EvalResult, per_user_mean


def rel(x: float, ref: float) -> float:
    return (x - ref) / ref if ref else float("nan")


def as_eval(name: str, rec: dict, users: np.ndarray) -> EvalResult:
    """A run record as the evaluation result it was written from."""
    metrics = {k.removeprefix("test_"): v for k, v in rec["test"].items()}
    return EvalResult(name, metrics, {"ndcg@10": np.asarray(rec["per_user_ndcg@10"])}, users, False)


def coverage_split(
    variants: dict[str, list[EvalResult]],
    sources: dict[str, str],
    data,
    ablations: dict[str, str] | None = None,
) -> dict:
    """Per profile source: its distilled student vs the baseline, and its profile-only
    reference, over the test users who have a profile and over those who do not.

    Where only some users have one (a share of Beauty, temporal test users with no history
    before the cut), the whole-population change mixes both groups and dilutes what the
    profiled users get. Sources that cover different users are also compared on the users
    every source profiled, so two LLMs (or an LLM and the template) meet on the same users.
    ``ablations`` (variant name -> its source) adds those variants, split by their source's
    users, under their own names.
    """
    if BASELINE not in variants:
        return {}
    base = per_user_mean(variants[BASELINE])
    users = data.test.user_ids
    covered = {
        src: ProfileTable.load(path, data.n_users, expected_fingerprint=data.fingerprint).has.numpy()[users]
        for src, path in sources.items()
        if distilled_name(src) in variants
    }
    common = np.logical_and.reduce(list(covered.values())) if len(covered) > 1 else None
    rows = [(src, src, distilled_name(src)) for src in covered]
    rows += [
        (name, src, name) for name, src in (ablations or {}).items() if src in covered and name in variants
    ]
    out: dict[str, dict] = {}
    for key, src, name in rows:
        has = covered[src]
        split = [("with a profile", has), ("without a profile", ~has)]
        if common is not None and common.any() and common.sum() < has.sum():
            split.append(("profiled by every source", common))
        out[key] = _coverage_groups(variants, base, name, src, split)
    return out


def _coverage_groups(variants, base: np.ndarray, name: str, src: str, split) -> dict:
    dist = per_user_mean(variants[name])
    ref = per_user_mean(variants[f"profile-only[{src}]"])
    groups = {}
    for group, mask in split:
        if not mask.any():
            continue
        test = paired_test(base[mask], dist[mask])
        b, d = float(base[mask].mean()), float(dist[mask].mean())
        groups[group] = {
            "variant": name,
            "source": src,
            "n": int(mask.sum()),
            BASELINE: b,
            name: d,
            "rel_change": (d - b) / b if b else float("nan"),
            "p_value": test["p_value"],
            "wilcoxon_p": test["wilcoxon_p"],
            f"profile-only[{src}]": float(ref[mask].mean()),
        }
    return groups


def paired_comparison(
    variants: dict[str, list[EvalResult]],
    run_seeds: dict[str, list[int]],
    against: dict[str, str],
    metric: str = "ndcg@10",
) -> dict:
    """Each variant of ``against`` (name -> reference variant) against its reference on the
    seeds both ran, paired over users, with the change seed by seed.

    The main table pools each variant's seeds; this says whether a change holds seed by seed
    (a gain carried by one seed shows), and compares an ablation with the distilled variant
    whose one setting it changes, which is what "is this setting better than the default"
    asks, on the same seeds (ablations may run fewer than the main comparison).
    """
    out: dict[str, dict] = {}
    for name, ref in against.items():
        if name not in variants or ref not in variants:
            continue
        by_seed = {
            n: dict(zip(run_seeds[n], (r.per_user[metric] for r in variants[n]), strict=True))
            for n in (name, ref)
        }
        seeds = [s for s in run_seeds[name] if s in by_seed[ref]]
        if seeds:
            out[name] = _paired_on_seeds(by_seed, name, ref, seeds, metric)
    return out


def _paired_on_seeds(by_seed: dict, name: str, ref: str, seeds: list[int], metric: str) -> dict:
    a = np.mean([by_seed[ref][s] for s in seeds], axis=0)
    b = np.mean([by_seed[name][s] for s in seeds], axis=0)
    test = paired_test(a, b)
    ref_means, means = ([float(by_seed[n][s].mean()) for s in seeds] for n in (ref, name))
    per_seed = {s: rel(m, r) for s, m, r in zip(seeds, means, ref_means, strict=True)}
    # Users are the unit of the test above; the seed is the unit here: with a few seeds that
    # disagree, a change can be significant over users and not over seeds.
    over_seeds = paired_test(ref_means, means)
    return {
        "against": ref,
        "metric": metric,
        "seeds": seeds,
        ref: float(a.mean()),
        name: float(b.mean()),
        "rel_change": rel(float(b.mean()), float(a.mean())),
        "per_seed_rel_change": per_seed,
        "p_value": test["p_value"],
        "wilcoxon_p": test["wilcoxon_p"],
        "seeds_t_p": over_seeds["p_value"],
    }


def ablation_parents(names: list[str]) -> dict[str, str]:
    """Each ablation among ``names`` -> the distilled variant whose one setting it changes
    (``ablation_name`` puts that variant's profile source in the ablation's name)."""
    return {
        n: distilled_name(src)
        for n in names
        if n.endswith("]") and " [" in n
        for src in [n[n.rindex(" [") + 2 : -1]]
        if distilled_name(src) in names
    }


def seed_comparisons(variants: dict[str, list[EvalResult]], runs: dict[str, list[dict]]) -> dict:
    """An experiment's per-seed table (every trained variant vs the baseline) and ablation table
    (each ablation vs its distilled variant), from its trained runs' records."""
    run_seeds = {n: [r["seed"] for r in rs] for n, rs in runs.items()}
    trained = [n for n in run_seeds if n != BASELINE]
    return {
        "vs_baseline_by_seed": paired_comparison(variants, run_seeds, dict.fromkeys(trained, BASELINE)),
        "vs_distilled": paired_comparison(variants, run_seeds, ablation_parents(list(run_seeds))),
    }
