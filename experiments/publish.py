"""Publish the committed results: the summary, the README's headline block and docs/results.md,
each generated from the committed reports and grid files alone (tests regenerate them and compare
byte for byte, so no number in them is typed by hand).

    python -m experiments.publish                    # summary, headline.md, docs/results.md
    python -m experiments.publish --readme README.md # ... and the README's headline block
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from experiments.grid import TEMPLATE, load_grid
from experiments.report import pct, table, write_report
from experiments.summary import GAIN, HARM, summarize, summary_markdown
from ucd import schema
from ucd.evaluate.offline import format_comparison

RESULTS = Path("experiments/results")
GRIDS = Path("experiments/grids")
PAGE = Path("docs/results.md")
HEADLINE_START, HEADLINE_END = "<!-- results:headline -->", "<!-- /results:headline -->"
DISTILLED_CONTROLS = ("baseline, same budget",)  # compared with the baseline, but not distilled

EARLIER = (
    "Two earlier reports are kept as they were written, under `experiments/results/earlier/`; "
    "neither can be regenerated: `quality` (the first ML-100K grid, 3 seeds, distilled from the "
    "quickstart's SmolLM2 profiles, whose profiles and distilled runs were not kept) and "
    "`ml100k-qwen` (a `ucd evaluate --compare` table of models trained on Qwen profiles of 336 "
    "users, later made again for all 943 users: ml100k-qwen-5seeds). "
    "`experiments/results/evidence/` holds a run record that no grid plans any more: the BERT4Rec "
    "run on ML-100K that stopped on its early plateau before `min_epochs` existed."
)


def headline_rows(summary: dict) -> list[dict]:
    """Per dataset / protocol / student: the distilled arm with the largest NDCG@10 change
    against the baseline of its own seeds (first in the summary's order on a tie)."""
    best: dict[tuple, dict] = {}
    for r in summary["rows"]:
        if r["variant"] in DISTILLED_CONTROLS:
            continue
        key = (r["dataset"], r["protocol"], r["student"])
        if key not in best or r["rel_change"] > best[key]["rel_change"]:
            best[key] = r
    return [best[k] for k in sorted(best)]


def headline_markdown(summary: dict, page: str = "docs/results.md") -> str:
    rows = []
    for r in headline_rows(summary):
        arms = sum(
            1
            for x in summary["rows"]
            if (x["dataset"], x["protocol"], x["student"]) == (r["dataset"], r["protocol"], r["student"])
            and x["variant"] not in DISTILLED_CONTROLS
        )
        v = r["verdict"]
        rows.append(
            [
                f"{r['dataset']} / {r['protocol']}",
                r["student"],
                f"{r['baseline_ndcg@10']:.4f}",
                f"{r['variant']} (best of {arms})",
                f"{r['ndcg@10']:.4f}",
                pct(r["rel_change"]),
                f"{r['seeds_above']} of {len(r['seeds'])}",
                f"**{v}**" if v in (GAIN, HARM) else v,
                r["report"],
            ]
        )
    head = ["dataset / split", "student", "baseline NDCG@10", "best distilled arm", "NDCG@10", "change"]
    caption = (
        "Best distilled arm: the largest test NDCG@10 change against the baseline run on the same "
        "seeds, picked among all the arms tried on that student (a pick among many overstates what "
        f"a fresh run would give). Verdict: p < {summary['alpha']} over test users and every seed on "
        f"the same side of its baseline. Every comparison, with its command: [{page}]({page})."
    )
    return table([*head, "seeds above baseline", "verdict", "report"], rows, caption) + "\n"


def fill_readme(readme: str, block: str) -> str:
    """``readme`` with the text between the headline markers replaced by ``block``."""
    if HEADLINE_START not in readme or HEADLINE_END not in readme:
        raise SystemExit(f"README has no {HEADLINE_START} ... {HEADLINE_END} block to fill")
    head, rest = readme.split(HEADLINE_START, 1)
    return f"{head}{HEADLINE_START}\n{block.strip()}\n{HEADLINE_END}{rest.split(HEADLINE_END, 1)[1]}"


def _commands(lines: str | list[str]) -> str:
    return "```bash\n" + "\n".join([lines] if isinstance(lines, str) else lines) + "\n```"


def _sources_markdown(grid: dict) -> str:
    out = []
    for name, spec in grid.get("profiles", {}).items():
        if spec.get(TEMPLATE):
            out.append(
                f"- `{name}`: template (non-LLM) profiles of every training user, written by the runner."
            )
        elif "share_of" in spec:
            out.append(
                f"- `{name}`: the seeded {spec['user_share']:.0%} prefix of `{spec['share_of']}`, "
                "written by the runner into the grid's work folder."
            )
        else:
            made = f", made by\n\n{_commands(spec['command'])}\n" if spec.get("command") else ""
            out.append(f"- `{name}`: `{spec['path']}`{made}")
    return "\n".join(out)


def _experiment_markdown(grid_path: Path, exp: dict, reports: Path) -> str:
    name = exp["report"]
    md = [f"#### {name}\n", " ".join(exp.get("about", "").split()) + "\n"]
    if exp.get("profiles"):
        md.append("Profile sources: " + ", ".join(f"`{s}`" for s in exp["profiles"]) + ".\n")
    md.append(_commands(f"python -m experiments.run {grid_path.as_posix()} --report {name}") + "\n")
    path = reports / f"{name}.json"
    if not path.exists():
        return "\n".join([*md, "_Not run yet: no report._\n"])
    report = json.loads(path.read_text())
    md.append(
        f"_Report of {report['date']}: [{name}.md](../{reports.as_posix()}/{name}.md) (per seed, "
        "ablations, coverage, training curves)._\n"
    )
    for b in report["blocks"]:
        md.append(f"**{b['dataset']} / {b['protocol']} / {b['student']}** (`{b['config']}`)\n")
        md.append(format_comparison(b) + "\n")
    return "\n".join(md)


def experiments_markdown(grids: Path, reports: Path) -> str:
    md = []
    for grid_path in sorted(grids.glob("*.yaml")):
        grid = load_grid(grid_path)
        md.append(f"### {grid['dataset']} / {grid['protocol']} (`{grid_path.as_posix()}`)\n")
        md.append("Profile sources:\n\n" + _sources_markdown(grid) + "\n")
        md += [_experiment_markdown(grid_path, exp, reports) for exp in grid["experiments"]]
    return "\n".join(md)


def _size(files: list[Path]) -> str:
    return f"{sum(f.stat().st_size for f in files) / 1e6:.1f} MB"


# Folder under experiments/results -> why it is committed.
WHY = {
    "runs": "one record per finished training run (test metrics, per-user NDCG@10, curves, config): "
    "a report is regenerated and an experiment extended without training again (each run is "
    "minutes to an hour on CPU)",
    "reports": "each experiment's report: JSON, the Markdown rendered from it, a bar chart",
    "profiles": "LLM profile folders (answers, vectors, the job's shards and summary) the runs "
    "distilled from: asking the LLM again takes hours, and a larger share resumes from them; the "
    "smaller Beauty Qwen shares are not stored, they are the seeded prefix of the 15% folder",
    "other": "the summary, the headline block, the baseline check, the earlier reports and evidence",
}


def committed_markdown(results: Path) -> str:
    files = sorted(
        f
        for f in results.rglob("*")
        if f.is_file() and f.name != "progress.json" and not f.name.endswith(".tmp")
    )
    groups: dict[str, list[Path]] = {k: [] for k in WHY}
    for f in files:
        top = f.relative_to(results).parts[0]
        groups[top if top in groups and top != "other" else "other"].append(f)
    rows = [
        [f"`{k}/`" if k != "other" else "other", str(len(v)), _size(v), WHY[k]] for k, v in groups.items()
    ]
    rows.append(["all", str(len(files)), _size(files), ""])
    return table(
        ["under experiments/results", "files", "size", "why it is committed"],
        rows,
        "No file of 4 KB or more is stored twice (a test checks every committed file).",
    )


def baseline_markdown(path: Path) -> str:
    d = json.loads(path.read_text())
    rows = [
        [
            seen,
            f"{d['most_popular'][seen]['ndcg@10']:.4f}",
            f"{d['mean'][seen]['ndcg@10']:.4f}",
            f"{d['mean'][seen]['recall@10']:.4f}",
            pct(d["relative_gap"][seen]),
        ]
        for seen in ("kept", "removed")
    ]
    caption = (
        f"SASRec on {d['dataset']} (`{d['config']}`, {' '.join(d['overrides'])}) against the published "
        f"NDCG@10 {d['target_ndcg@10']} / Recall@10 {d['target_recall@10']} on the same data, full "
        f"ranking, {d['test_users']:,} test users; {d['targets_in_history']} test targets are in their "
        "user's history. `python -m experiments.baseline_quality` made it."
    )
    head = ["seen items", "most-popular NDCG@10", "SASRec NDCG@10", "Recall@10", "NDCG@10 vs published"]
    return table(head, rows, caption)


def results_page(results: Path = RESULTS, grids: Path = GRIDS) -> str:
    summary = json.loads((results / "summary.json").read_text())
    parts = [
        "# Results\n",
        "_Generated by `python -m experiments.publish` from the committed reports "
        "(`experiments/results/`) and grid files (`experiments/grids/`); do not edit by hand._\n",
        "## All comparisons\n",
        summary_markdown(summary),
        "## Experiments\n",
        "Each experiment is one report. Its command reuses the committed run records and trains only "
        "what is missing (`--no-train` reports from the records alone).\n",
        experiments_markdown(grids, results / "reports"),
        "## Baseline check\n",
        baseline_markdown(results / "baseline_quality.json") + "\n",
        "## Earlier reports\n",
        EARLIER + "\n",
        "## What is committed\n",
        committed_markdown(results) + "\n",
    ]
    return "\n".join(parts)


def publish(
    results: Path = RESULTS, grids: Path = GRIDS, page: Path = PAGE, readme: Path | None = None
) -> None:
    summary = summarize(results / "reports")
    write_report(results / "summary.json", summary, summary_markdown)
    headline = headline_markdown(summary)
    schema.atomic_write_text(results / "headline.md", headline)
    page.parent.mkdir(parents=True, exist_ok=True)
    schema.atomic_write_text(page, results_page(results, grids))
    if readme is not None:
        readme.write_text(fill_readme(readme.read_text(), headline))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--readme", type=Path, help="fill this README's headline block too")
    args = ap.parse_args(argv)
    publish(readme=args.readme)
    print(f"wrote {RESULTS}/summary.{{json,md}}, {RESULTS}/headline.md, {PAGE}")


if __name__ == "__main__":
    main()
