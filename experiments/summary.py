"""One table of every distillation result the experiments have committed, against the issue's bar.

Reads the reports ``experiments.run`` wrote (``<dir>/*.json`` with per-seed tables) and gives
each variant that was compared with its baseline seed by seed one row: the change in test
NDCG@10, the paired tests over users, how many seeds agree, and a verdict by one rule for all
(``verdict``). Nothing is typed by hand: docs/results.md opens with this table.

    python -m experiments.summary      # writes experiments/results/summary.{json,md}
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from experiments.report import pct, table, write_report

REPORTS = Path("experiments/results/reports")
OUT = Path("experiments/results/summary.json")
# The bar of issue 7: significant over users and the same sign on every seed.
ALPHA = 0.05

GAIN, HARM = "gain", "harm"
SEEDS_DISAGREE = "p < 0.05, seeds disagree"
NO_CHANGE = "no significant change"


def verdict(rel_change: float, p_users: float, per_seed: list[float]) -> str:
    """The issue's bar: p < ALPHA over users *and* every seed on the side of the mean change."""
    if not p_users < ALPHA:
        return NO_CHANGE
    same_side = all(r > 0 for r in per_seed) if rel_change > 0 else all(r < 0 for r in per_seed)
    if not same_side:
        return SEEDS_DISAGREE
    return GAIN if rel_change > 0 else HARM


def _source(variant: str) -> str | None:
    """The profile source a variant distilled from: ``distilled[qwen]`` and ``alpha=0.2 [qwen]``
    name it in brackets; a control such as ``baseline, same budget`` has none."""
    m = re.search(r"\[([^\]]+)\]$", variant)
    return m.group(1) if m else None


def rows_of(report: dict, name: str) -> list[dict]:
    rows = []
    for block in report.get("blocks", []):
        sources = block.get("profile_sources", {})
        for variant, c in block.get("vs_baseline_by_seed", {}).items():
            per_seed = [float(r) for r in c["per_seed_rel_change"].values()]
            src = _source(variant)
            info = sources.get(src, {}) if src else {}
            rows.append(
                {
                    "report": name,
                    "dataset": block["dataset"],
                    "protocol": block["protocol"],
                    "student": block["student"],
                    "variant": variant,
                    "profile_model": info.get("model"),
                    "profiles_embedded": info.get("embedded"),
                    "test_users": block["paired_tests"][variant]["n"],
                    "seeds": list(c["seeds"]),
                    "baseline_ndcg@10": c["baseline"],
                    "ndcg@10": c[variant],
                    "rel_change": c["rel_change"],
                    "p_users_t": c["p_value"],
                    "p_users_wilcoxon": c["wilcoxon_p"],
                    "seeds_above": sum(r > 0 for r in per_seed),
                    "p_seeds_t": c["seeds_t_p"] if len(per_seed) > 1 else None,
                    "verdict": verdict(c["rel_change"], c["p_value"], per_seed),
                }
            )
    return rows


def references_of(report: dict, name: str) -> list[dict]:
    """What each profile source carries on its own: the profile-only recommender on the test
    users it profiled, beside most-popular over all test users (the same metric code)."""
    refs = []
    for block in report.get("blocks", []):
        popular = [
            r["mean"] for r in block["rows"] if r["run"] == "most-popular" and r["metric"] == "ndcg@10"
        ]
        for src, groups in block.get("by_coverage", {}).items():
            g = groups.get("with a profile")
            if g is None or f"profile-only[{src}]" not in g:
                continue
            refs.append(
                {
                    "report": name,
                    "dataset": block["dataset"],
                    "protocol": block["protocol"],
                    "source": src,
                    "profile_model": block["profile_sources"][src]["model"],
                    "profiled_test_users": g["n"],
                    "test_users": block["paired_tests"]["most-popular"]["n"],
                    "profile_only_ndcg@10": g[f"profile-only[{src}]"],
                    "most_popular_ndcg@10": popular[0] if popular else None,
                }
            )
    return refs


# Two reports can hold the very same runs (e.g. the default distilled student of an ablation
# grid and of its follow-up), and a profile-only reference depends on the data and the
# profiles, not on the student: one row each, naming every report that holds it.
SAME_ROW = ("dataset", "protocol", "student", "variant", "seeds", "baseline_ndcg@10", "ndcg@10")
SAME_REFERENCE = ("dataset", "protocol", "source", "profiled_test_users", "profile_only_ndcg@10")


def _add(found: list[dict], item: dict, same: tuple[str, ...]) -> None:
    twin = next((r for r in found if all(r[k] == item[k] for k in same)), None)
    if twin is None:
        found.append({**item, "also_in": []})
    elif item["report"] not in (twin["report"], *twin["also_in"]):
        twin["also_in"].append(item["report"])


def summarize(folder: Path) -> dict:
    rows: list[dict] = []
    refs: list[dict] = []
    skipped = []
    for path in sorted(folder.glob("*.json")):
        report = json.loads(path.read_text())
        found = rows_of(report, path.stem)
        if not found:
            skipped.append(path.stem)
        for row in found:
            _add(rows, row, SAME_ROW)
        for ref in references_of(report, path.stem):
            _add(refs, ref, SAME_REFERENCE)
    rows.sort(key=lambda r: (r["dataset"], r["protocol"], r["student"], r["report"]))
    counts = {v: sum(r["verdict"] == v for r in rows) for v in (GAIN, HARM, SEEDS_DISAGREE, NO_CHANGE)}
    refs.sort(key=lambda r: (r["dataset"], r["protocol"], r["report"]))
    return {
        "alpha": ALPHA,
        "counts": counts,
        "rows": rows,
        "references": refs,
        "without_seed_tables": skipped,
    }


def _p(x: float | None) -> str:
    return "-" if x is None else f"{x:.2g}"


def _profiles(r: dict) -> str:
    if r["profile_model"] is None:
        return "-"
    return f"{r['profile_model']}, {r['profiles_embedded']:,}"


def summary_markdown(summary: dict) -> str:
    c = summary["counts"]
    head = (
        f"{len(summary['rows'])} comparisons with the baseline of the same seeds: "
        f"**{c[GAIN]} gain**, **{c[HARM]} harm**, {c[SEEDS_DISAGREE]} significant over users "
        f"but not on every seed, {c[NO_CHANGE]} without a significant change."
    )
    cols = [
        "dataset / protocol / student",
        "variant",
        "profiles (model, users embedded)",
        "seeds",
        "NDCG@10 baseline → variant",
        "change",
        "p over users (t / Wilcoxon)",
        "seeds above",
        "p over seeds",
        "verdict",
        "report",
    ]
    rows = []
    for r in summary["rows"]:
        n = len(r["seeds"])
        v = r["verdict"]
        rows.append(
            [
                f"{r['dataset']} / {r['protocol']} / {r['student']}",
                r["variant"],
                _profiles(r),
                str(n),
                f"{r['baseline_ndcg@10']:.4f} → {r['ndcg@10']:.4f}",
                pct(r["rel_change"]),
                f"{_p(r['p_users_t'])} / {_p(r['p_users_wilcoxon'])}",
                f"{r['seeds_above']} of {n}",
                _p(r["p_seeds_t"]),
                f"**{v}**" if v in (GAIN, HARM) else v,
                ", ".join([r["report"], *r["also_in"]]),
            ]
        )
    caption = (
        f"Verdict: **gain** / **harm** when the paired t-test over test users gives p < {ALPHA} "
        "and every seed's mean NDCG@10 is on the same side of its own seed's baseline; "
        "full ranking, seen items kept. Report: the experiment of that name "
        "(`experiments/results/reports/<report>.md`; its command is in docs/results.md)."
    )
    if summary["without_seed_tables"]:
        caption += (
            " Not listed, having no variant compared seed by seed with a baseline: "
            + ", ".join(f"`{n}`" for n in summary["without_seed_tables"])
            + "."
        )
    parts = [head, table(cols, rows, caption)]
    if summary["references"]:
        parts.append(references_markdown(summary["references"]))
    return "\n\n".join(parts) + "\n"


def references_markdown(refs: list[dict]) -> str:
    cols = [
        "dataset / protocol",
        "profile source",
        "model",
        "profiled test users",
        "profile-only NDCG@10 on them",
        "most-popular NDCG@10 (all test users)",
        "report",
    ]
    rows = []
    for r in refs:
        pop = r["most_popular_ndcg@10"]
        rows.append(
            [
                f"{r['dataset']} / {r['protocol']}",
                r["source"],
                r["profile_model"],
                f"{r['profiled_test_users']:,} of {r['test_users']:,}",
                f"{r['profile_only_ndcg@10']:.4f}",
                "-" if pop is None else f"{pop:.4f}",
                ", ".join([r["report"], *r["also_in"]]),
            ]
        )
    return table(
        cols,
        rows,
        "What a profile carries on its own: the profile-only recommender ranks items by the cosine "
        "between the user's profile embedding and the item-text embeddings (same embedder, same "
        "metric code), scored on the test users the source profiled.",
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reports", type=Path, default=REPORTS, help="folder of the quality reports' JSON")
    ap.add_argument("--out", type=Path, default=OUT, help="summary JSON; the Markdown goes beside it")
    args = ap.parse_args(argv)
    summary = summarize(args.reports)
    if not summary["rows"]:
        raise SystemExit(f"{args.reports}: no report with per-seed tables (*.json from experiments.run)")
    write_report(args.out, summary, summary_markdown)
    print(summary_markdown(summary))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
